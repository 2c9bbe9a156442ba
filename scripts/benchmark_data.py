"""Pipeline throughput: python scripts/benchmark_data.py [data=...] [data.image_size=224] [epochs=3]

Prints images/s of the first epoch (decode + resize + cache fill) and of cached epochs.
"""

import os
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fracture.cli import fail
from fracture.env import setup_env

setup_env(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark_data")
def main(cfg: DictConfig) -> None:
    from fracture.data.benchmark import epoch_throughput
    from fracture.data.config import data_config_from_hydra
    from fracture.data.index import build_index
    from fracture.data.layout import DatasetError
    from fracture.data.pipeline import make_dataset

    try:
        data_cfg = data_config_from_hydra(cfg.data)
        start = time.perf_counter()
        index = build_index(data_cfg, splits=[cfg.split], cache_dir=cfg.paths.cache_dir)
        index_seconds = time.perf_counter() - start
    except (DatasetError, ValueError) as exc:
        fail(exc)
    samples = index.split(cfg.split).samples
    training = cfg.split == "train"
    dataset = make_dataset(samples, index.classes.num_classes, data_cfg, training=training, augment=training and cfg.augment)
    print(
        f"{len(samples)} {cfg.split} images, {data_cfg.image_size}px {data_cfg.resize}, batch {data_cfg.batch_size}, "
        f"cache={data_cfg.cache}, augment={training and cfg.augment}, CPU cores={os.cpu_count()}"
    )
    print(f"indexing (probe cache {'warm' if index_seconds < 5 else 'cold'}): {index_seconds:.1f} s")
    for row in epoch_throughput(dataset, cfg.epochs):
        label = "first epoch (decode+resize+cache)" if row["epoch"] == 1 else "cached epoch"
        print(f"epoch {row['epoch']}: {row['images_per_s']:8.1f} img/s  ({row['seconds']:.1f} s)  {label}")


if __name__ == "__main__":
    main()
