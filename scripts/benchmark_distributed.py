"""Multi-worker training throughput on this machine:
python scripts/benchmark_distributed.py [workers=[1,2]] [data=...] [model=...] [max_batches=20]

Trains the same model with the same global batch (data.batch_size) on 1, 2, ... local
worker processes (MultiWorkerMirroredStrategy over 127.0.0.1) and prints global images/s
for each. Local workers share this machine's cores: the figures show the overhead of the
collective ops and of DATA sharding, not the speed-up of N machines.
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from fracture.env import setup_env

setup_env(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark_distributed")
def main(cfg: DictConfig) -> None:
    from fracture.data.config import data_config_from_hydra
    from fracture.data.index import build_index
    from fracture.data.layout import DatasetError
    from fracture.training.distributed_benchmark import WorkerSpec, run_local_cluster

    try:
        data_cfg = data_config_from_hydra(cfg.data)  # generates the synthetic data once, here
        index = build_index(data_cfg, splits=[data_cfg.train_split], cache_dir=cfg.paths.cache_dir)
    except (DatasetError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.pop("synthetic", None)
    images = len(index.split(data_cfg.train_split).samples)
    cores = os.cpu_count() or 1
    print(
        f"{cfg.model.backbone} at {data_cfg.image_size}px, global batch {data_cfg.batch_size}, {images} train images, "
        f"up to {cfg.max_batches} batches x {cfg.epochs} epochs (first not timed), data_sharding={cfg.data_sharding}, "
        f"sync_batchnorm={cfg.sync_batchnorm}, CPU cores={cores}"
    )
    for n in cfg.workers:
        threads = max(cores // n, 1) if cfg.threads == "auto" else int(cfg.threads)
        spec = WorkerSpec(
            data=data, model=OmegaConf.to_container(cfg.model, resolve=True), cache_dir=str(cfg.paths.cache_dir),
            epochs=cfg.epochs, max_batches=cfg.max_batches, data_sharding=cfg.data_sharding,
            sync_batchnorm=cfg.sync_batchnorm, threads=threads, seed=cfg.seed,
        )
        result = run_local_cluster(spec, n, timeout=cfg.timeout_s)
        epochs = ", ".join(f"{s:.2f}" for s in result.epoch_seconds)
        print(
            f"{n} worker(s), {result.replicas} replica(s), {threads} thread(s) each: "
            f"{result.images_per_second:.1f} img/s  ({result.steps_per_epoch} steps/epoch; epochs {epochs} s; "
            f"wall {result.wall_seconds:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
