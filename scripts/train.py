"""Train a two-head model: python scripts/train.py [experiment=demo] [key=value ...]

Writes the run folder (fracture.runs; <paths.log_dir>/<task_name>/<time>/) and prints it
with the TensorBoard command. Rerunning an interrupted command resumes it; Ctrl-C or
SIGTERM stops it as `interrupted` (exit 130 / 143), ready to resume.

Multi-worker: run the same command on every machine, each with its TF_CONFIG (README,
"Past one machine"); only the chief writes the run folder.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fracture.cli import fail
from fracture.env import setup_env

setup_env(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from fracture.data.layout import DatasetError
    from fracture.models.backbones import WeightsUnavailableError
    from fracture.runs import FINISHED, RunError
    from fracture.training.trainer import RunInterrupted, train

    try:
        result = train(cfg)
    except RunInterrupted as exc:
        sys.exit(exc.exit_code)
    except (DatasetError, WeightsUnavailableError, RunError, ValueError, FileNotFoundError) as exc:
        fail(exc)
    print(f"status: {result.status}; epochs run: {result.epochs_run}")
    for key, value in result.metrics.items():
        if isinstance(value, float):
            print(f"  {key}: {value:.4f}")
    print(f"run folder: {result.run_dir}")
    print(f"TensorBoard: tensorboard --logdir {result.run_dir / 'tensorboard'}")
    if result.status != FINISHED:
        sys.exit(1)


if __name__ == "__main__":
    main()
