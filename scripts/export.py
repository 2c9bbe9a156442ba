"""Export: python scripts/export.py run=<run dir> format=saved_model|tflite|onnx [model_file=last.keras] [out=DIR]

Each export is reloaded and compared with the Keras model on a few validation images; the
max abs difference is printed with its tolerance, and a mismatch exits with status 1.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fracture.cli import fail
from fracture.env import setup_env

setup_env(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    import numpy as np

    from fracture.inference import load_samples_batch
    from fracture.evaluation.runner import split_samples
    from fracture.runs import RunError, load_run
    from fracture.export import ExportError, export_run

    try:
        run = load_run(cfg.run, model_file=cfg.model_file)
    except (RunError, FileNotFoundError, ValueError) as exc:
        fail(exc)
    size = run.data.image_size
    try:
        samples = split_samples(run, run.data.val_split, cfg.paths.cache_dir)[0][: cfg.check_images]
        images = load_samples_batch(samples, run.classes.num_classes, run.data)[0]
        source = f"{len(images)} {run.data.val_split} images"
    except Exception as exc:  # noqa: BLE001 - the check still runs, on noise, and says so
        images = np.random.default_rng(0).uniform(0, 255, (cfg.check_images, size, size, 3)).astype("float32")
        source = f"{len(images)} random images (validation data unavailable: {exc})"
    out = Path(cfg.out) if cfg.out else run.layout.export_dir(run.model_file)
    try:
        checks = export_run(run.model, out, cfg.format, images)
    except (ExportError, ValueError) as exc:
        fail(exc)
    print(f"{run.model_file} checked on {source}; input: float32 (N, {size}, {size}, 3) raw 0-255 RGB, resize={run.data.resize}")
    for c in checks:
        status = "ok" if c.ok else "MISMATCH"
        print(f"{c.name:12s} {status:8s} max abs diff {c.max_abs_diff:.2e} (tolerance {c.tolerance:.0e}, {c.runtime}); "
              f"batch-1 latency {c.latency_ms:.1f} ms -> {c.path}")
    if not all(c.ok for c in checks):
        sys.exit(1)


if __name__ == "__main__":
    main()
