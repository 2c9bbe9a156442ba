"""Frozen-backbone feature cache speed-up:
python scripts/benchmark_feature_cache.py [model=efficientnet_b0] [data=...] [images=512] [epochs=4]

Prints seconds per epoch end to end (backbone recomputed) and on cached features, and the
speed-up of later epochs (target >= 20x).
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fracture.cli import fail
from fracture.env import setup_env

setup_env(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark_feature_cache")
def main(cfg: DictConfig) -> None:
    import numpy as np

    from fracture.config import typed
    from fracture.data.config import data_config_from_hydra
    from fracture.data.index import build_index
    from fracture.data.layout import DatasetError
    from fracture.data.pipeline import make_dataset
    from fracture.models.classifier import ModelConfig, build_model, build_model_losses
    from fracture.models.losses import LossConfig
    from fracture.training.benchmark import benchmark_feature_cache
    from fracture.training.trainer import MODEL_SECTIONS

    try:
        data_cfg = data_config_from_hydra(cfg.data)
        index = build_index(data_cfg, splits=[cfg.split], cache_dir=cfg.paths.cache_dir)
    except (DatasetError, ValueError) as exc:
        fail(exc)
    samples = index.split(cfg.split).samples[: cfg.images]
    ds = make_dataset(samples, index.classes.num_classes, data_cfg, training=False, cache="memory")
    model_cfg = typed(ModelConfig, cfg.model, "model", ignore=MODEL_SECTIONS)
    fm = build_model(model_cfg, index.classes.num_classes, data_cfg.image_size)
    print(
        f"{model_cfg.backbone} at {data_cfg.image_size}px, {len(samples)} images, batch {data_cfg.batch_size}, "
        f"{cfg.epochs} epochs each, CPU cores={os.cpu_count()}"
    )
    losses = build_model_losses(model_cfg, typed(LossConfig, cfg.model.get("loss"), "model.loss"), data_cfg.image_size)
    result = benchmark_feature_cache(fm, ds, data_cfg.batch_size, cfg.epochs, cfg.seed, losses)
    fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    print(f"end to end, backbone recomputed: epochs {fmt(result.recompute_epoch_s)} s")
    print(f"feature extraction (once):       {result.feature_extraction_s:.2f} s")
    print(f"heads on cached features:        epochs {fmt(result.cached_epoch_s)} s")
    print(
        f"speed-up of later epochs: {result.speedup:.1f}x "
        f"({np.median(result.recompute_epoch_s[1:]):.2f} s -> {np.median(result.cached_epoch_s[1:]):.3f} s per epoch)"
    )


if __name__ == "__main__":
    main()
