"""Training throughput at 1, 2, ... local workers (scripts/benchmark_distributed.py; never
in tests' assertions).

`run_local_cluster` starts N processes of this module on 127.0.0.1 with a TF_CONFIG each
(N = 1: no TF_CONFIG, the default strategy), waits for them with a timeout, and kills
stragglers: a worker that dies leaves the others blocked in a collective op. Each worker
trains the configured model on the training pipeline (seeded shuffle, augmentation) for
`epochs` epochs of at most `max_batches` global batches; the chief reports the median
time of the epochs after the first (which pays for graph tracing and the image cache).

    python -m fracture.training.distributed_benchmark SPEC.json   # one worker (TF_CONFIG from env)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fracture.training.cluster import local_tf_configs, run_processes


@dataclass
class WorkerSpec:
    """What each worker trains (JSON-serialisable; written to a file for the subprocesses)."""

    data: dict  # resolved `data` config (synthetic section dropped: generated beforehand)
    model: dict  # resolved `model` config
    cache_dir: str
    epochs: int = 3
    max_batches: int = 20
    data_sharding: str = "data"
    sync_batchnorm: bool = True
    threads: int = 0  # TF intra-op threads per worker; 0 = TF's default
    seed: int = 42


@dataclass
class Throughput:
    workers: int
    replicas: int
    global_batch: int
    steps_per_epoch: int
    epoch_seconds: list
    wall_seconds: float

    @property
    def images_per_second(self) -> float:
        """Global images per second over the median timed epoch (the first not counted)."""
        import numpy as np

        timed = self.epoch_seconds[1:] or self.epoch_seconds
        return self.steps_per_epoch * self.global_batch / float(np.median(timed))


def run_local_cluster(spec: WorkerSpec, workers: int, timeout: float = 600) -> Throughput:
    """Train `spec` on `workers` local processes; the chief's measurement."""
    with tempfile.TemporaryDirectory(prefix="fracture-bench-") as tmp:
        spec_file = Path(tmp) / "spec.json"
        spec_file.write_text(json.dumps(asdict(spec)))
        base = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        envs = [base] if workers == 1 else [{**base, "TF_CONFIG": c} for c in local_tf_configs(workers)]
        if workers == 1:
            envs[0].pop("TF_CONFIG", None)
        command = [sys.executable, "-m", "fracture.training.distributed_benchmark", str(spec_file)]
        started = time.monotonic()
        results = run_processes([command] * workers, envs, timeout)
        wall = time.monotonic() - started
    for i, (code, out) in enumerate(results):
        if code != 0:
            raise RuntimeError(f"worker {i} of {workers} exited with {code}:\n{out[-3000:]}")
    line = next(l for l in results[0][1].splitlines() if l.startswith("RESULT "))
    return Throughput(workers=workers, wall_seconds=round(wall, 1), **json.loads(line[len("RESULT "):]))


def _worker(spec: WorkerSpec) -> dict:
    """One worker's training run; returns the measurement."""
    import tensorflow as tf

    from fracture.training.distribute import make_strategy

    if spec.threads:
        tf.config.threading.set_intra_op_parallelism_threads(spec.threads)
    strategy = make_strategy("multi_worker" if os.environ.get("TF_CONFIG") else "default")
    import keras

    from fracture.config import typed
    from fracture.data.config import DataConfig
    from fracture.data.index import build_index
    from fracture.data.pipeline import make_dataset
    from fracture.models.classifier import ModelConfig, build_model
    from fracture.models.losses import (
        ClassWeightConfig,
        LossConfig,
        build_losses,
        class_counts,
        compute_class_weights,
    )
    from fracture.training import cluster
    from fracture.training.benchmark import EpochTimer
    from fracture.training.optim import OptimizerConfig, build_optimizer
    from fracture.training.trainer import MODEL_SECTIONS

    keras.utils.set_random_seed(spec.seed)
    data_cfg = DataConfig.from_mapping(spec.data)
    index = build_index(data_cfg, splits=[data_cfg.train_split], cache_dir=spec.cache_dir)
    samples = index.split(data_cfg.train_split).samples
    num_classes = index.classes.num_classes
    weights = compute_class_weights(
        class_counts([s.class_id for s in samples], num_classes), index.classes.class_names,
        typed(ClassWeightConfig, spec.model.get("class_weights"), "model.class_weights"),
    )
    batch = data_cfg.batch_size
    steps = min(spec.max_batches, len(samples) // batch)
    model_cfg = typed(ModelConfig, spec.model, "model", ignore=MODEL_SECTIONS)
    opt_cfg = typed(OptimizerConfig, spec.model.get("optimizer"), "model.optimizer")
    losses, loss_weights = build_losses(typed(LossConfig, spec.model.get("loss"), "model.loss"))
    with strategy.scope():
        fm = build_model(model_cfg, num_classes, data_cfg.image_size)
        if spec.sync_batchnorm:
            cluster.sync_batchnorm(fm.model, strategy)
        optimizer = build_optimizer(opt_cfg, opt_cfg.learning_rate, steps, spec.epochs, batch)
        fm.model.compile(optimizer=optimizer, loss=losses, loss_weights=loss_weights)
    train_ds = cluster.distribute_train_data(
        strategy,
        lambda shard, b: make_dataset(samples, num_classes, data_cfg, True, weights, batch_size=b, shard=shard).take(steps),
        spec.data_sharding,
        batch,
    )
    timer = EpochTimer()
    fm.model.fit(train_ds, epochs=spec.epochs, callbacks=[timer], shuffle=False, verbose=0)
    return {
        "replicas": strategy.num_replicas_in_sync,
        "global_batch": batch,
        "steps_per_epoch": steps,
        "epoch_seconds": [round(s, 3) for s in timer.seconds],
    }


if __name__ == "__main__":
    spec = WorkerSpec(**json.loads(Path(sys.argv[1]).read_text()))
    print("RESULT " + json.dumps(_worker(spec)), flush=True)
