"""Evaluate a run: python scripts/evaluate.py run=<run dir> [split=valid|test] [model_file=last.keras] [out=DIR] [data.root=DIR]

Writes metrics.json, report.md, predictions.csv and figures to <run>/eval/<split>/
(<run>/eval/<split>.last/ for model_file=last.keras).
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from fracture.cli import fail
from fracture.env import setup_env

setup_env(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from fracture.config import typed
    from fracture.data.layout import DatasetError
    from fracture.evaluation.report import headline_rows
    from fracture.evaluation.runner import EvalConfig, evaluate_run, output_dir
    from fracture.runs import RunError

    try:
        result = evaluate_run(
            cfg.run, cfg.split, cfg.out, typed(EvalConfig, cfg.eval, "eval"),
            OmegaConf.to_container(cfg.data, resolve=True), cfg.paths.cache_dir, cfg.model_file,
        )
    except (DatasetError, RunError, FileNotFoundError, ValueError) as exc:
        fail(exc)
    print(f"{result['split']}: {result['images']} images")
    for name, value, ci in headline_rows(result):
        print(f"  {name}: {value} {('(95% CI ' + ci + ')') if ci else ''}")
    print(f"report: {output_dir(cfg.run, cfg.split, cfg.out, cfg.model_file) / 'report.md'}")


if __name__ == "__main__":
    main()
