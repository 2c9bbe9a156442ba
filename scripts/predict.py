"""Predict: python scripts/predict.py run=<run dir> input=<image|folder> [out=DIR]

One image: predictions.json; a folder: predictions.csv (with a progress bar). Overlay PNGs
show the box, class and probability. Files that cannot be decoded are skipped and listed.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fracture.env import setup_env

setup_env(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from fracture.runs import RunError, load_run
    from fracture.inference import list_inputs, predict_files, write_predictions

    try:
        run = load_run(cfg.run)
        files, folder = list_inputs(cfg.input)
    except (RunError, FileNotFoundError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    out = Path(cfg.out) if cfg.out else Path(cfg.run) / "predictions" / Path(cfg.input).stem
    result = predict_files(run, files, out / "overlays" if cfg.overlays else None, cfg.batch_size)
    path = write_predictions(result, out, folder)
    for r in result.predictions[:20]:
        print(f"{Path(r['image']).name}: {r['predicted_class']} ({r['probability']:.2f}) box {r['box']}")
    if len(result.predictions) > 20:
        print(f"... {len(result.predictions) - 20} more")
    print(f"{len(result.predictions)} predicted, {len(result.skipped)} skipped -> {path}")
    for s in result.skipped:
        print(f"skipped {s['image']}: {s['reason']}")
    if not result.predictions:
        sys.exit(1)


if __name__ == "__main__":
    main()
