"""Predict: python scripts/predict.py run=<run dir> input=<image|folder> [model_file=last.keras] [out=DIR]

One image: predictions.json; a folder: predictions.csv (with a progress bar). Overlay PNGs
show the box, class and probability. Files that cannot be decoded are skipped and listed.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fracture.cli import fail
from fracture.env import setup_env

setup_env(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from fracture.inference import list_inputs, output_name, predict_files, screening_for, write_predictions
    from fracture.runs import RunError, load_run

    try:
        run = load_run(cfg.run, model_file=cfg.model_file, test_time_flip=cfg.test_time_flip)
        files, folder = list_inputs(cfg.input)
    except (RunError, FileNotFoundError, ValueError) as exc:
        fail(exc)
    out = Path(cfg.out) if cfg.out else run.layout.predictions_dir(output_name(cfg.input), run.model_file)
    screening = screening_for(run, cfg.threshold, cfg.box_confidence)
    print(f"screening threshold: {screening.threshold if screening.threshold is not None else 'none'} ({screening.source})")
    result = predict_files(run, files, out / "overlays" if cfg.overlays else None, cfg.batch_size, screening)
    path = write_predictions(result, out, folder)
    for r in result.predictions[:20]:
        boxes = "; ".join(f"{b['class']} {b['score']:.2f} {b['box']}" for b in r["boxes"][:3]) or "none"
        print(f"{Path(r['image']).name}: {r['predicted_class']} ({r['probability']:.2f}) boxes: {boxes}"
              + (f" (+{len(r['boxes']) - 3} more)" if len(r["boxes"]) > 3 else ""))
    if len(result.predictions) > 20:
        print(f"... {len(result.predictions) - 20} more")
    print(f"{len(result.predictions)} predicted, {len(result.skipped)} skipped -> {path}")
    for s in result.skipped:
        print(f"skipped {s['image']}: {s['reason']}")
    if not result.predictions:
        sys.exit(1)


if __name__ == "__main__":
    main()
