"""Train a two-head fracture model: python scripts/train.py [experiment=demo] [key=value ...]

Writes the run folder (Hydra's run dir; see fracture.training.trainer) and prints it with
the TensorBoard command. Rerunning an interrupted command resumes it.

Multi-worker: run the same command on every machine, each with its TF_CONFIG (README,
"Past one machine"); only the chief writes the run folder.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fracture.env import setup_env

setup_env(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from fracture.data.layout import DatasetError
    from fracture.models.backbones import WeightsUnavailableError
    from fracture.training.trainer import train

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    print(f"run folder: {run_dir}")
    print(f"TensorBoard: tensorboard --logdir {run_dir / 'tensorboard'}")
    try:
        result = train(cfg, run_dir)
    except (DatasetError, WeightsUnavailableError, ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
    print(f"status: {result.status}; epochs run: {result.epochs_run}")
    for key, value in result.metrics.items():
        if isinstance(value, float):
            print(f"  {key}: {value:.4f}")
    print(f"run folder: {result.run_dir}")
    print(f"TensorBoard: tensorboard --logdir {result.run_dir / 'tensorboard'}")
    if result.status != "completed":
        sys.exit(1)


if __name__ == "__main__":
    from fracture.training.cluster import hydra_worker_overrides

    sys.argv += hydra_worker_overrides()  # a multi-worker run: only the chief makes a run folder
    main()
