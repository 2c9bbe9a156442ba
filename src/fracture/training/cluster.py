"""Multi-worker training (`trainer.strategy=multi_worker`): who writes where, how the data
is split, and three fixes that make Keras 3 `fit` work under MultiWorkerMirroredStrategy.

Every worker runs the same code, callbacks and saves included: a callback that only the
chief ran could start a collective op the others never join, and the run would hang. Only
the destinations differ (`worker_dirs`): the chief writes the run folder and its resume
state; worker i writes its copy of the run folder into a temporary folder of its own (the
Keras multi-worker guide's rule), removed when the process exits, and its resume state into
`<state_dir>.worker<i>/`, a fixed path so that a restarted worker finds its backup.

Data sharding (`trainer.data_sharding`), see README "Past one machine":

* `data` (default): every worker builds the same pipeline (same file list, same seeded
  shuffle and augmentation) and keeps its 1/N slice of every global batch
  (`AutoShardPolicy.DATA`). Steps see exactly the images a single process would see, so an
  N-worker run reproduces a 1-worker run with the same global batch. Cost: each worker
  decodes every image (once; the pipeline caches) and augments whole global batches.
* `file`: worker i reads only every N-th image file (the list cut to a multiple of N first,
  so the shards are equal and every worker runs the same number of steps) and batches
  `batch_size / N`. Input work scales down with N; batches differ from a 1-worker run.

`AutoShardPolicy.FILE` itself does not apply: our datasets start from
`from_tensor_slices(paths)`, not a file reader, and FILE fails with "Found an unshardable
source dataset". `OFF` would feed every worker the same data.

Keras 3.15 with the TensorFlow backend cannot `fit` under MultiWorkerMirroredStrategy
(keras-team/keras#20585): `install_keras_fixes` patches the two failing functions and the
gradient clipping order; see each function below.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SHARDING = ("data", "file")


@dataclass(frozen=True)
class Task:
    """This process's place in the `TF_CONFIG` cluster (a single process: index 0 of 1)."""

    type: str = "worker"
    index: int = 0
    num_workers: int = 1
    has_chief: bool = False  # the cluster names a `chief` task (else worker 0 is the chief)

    @property
    def is_chief(self) -> bool:
        """The chief writes the run folder: task type `chief`, else worker 0."""
        return self.type == "chief" or (self.type == "worker" and self.index == 0 and not self.has_chief)

    @property
    def name(self) -> str:
        return f"{self.type}{self.index}"


def task_from_env(strategy_name: str = "multi_worker", sharding: str = "data", environ: dict | None = None) -> Task:
    """This process's task from `TF_CONFIG`, when `trainer.strategy` makes it a multi-worker run
    (`multi_worker`, or `auto` with a cluster of 2+). Otherwise the single-process task.
    `sharding` (`trainer.data_sharding`) is only checked here, so a typo fails at once."""
    check_sharding(sharding)
    raw = (environ if environ is not None else os.environ).get("TF_CONFIG")
    if not raw or strategy_name not in ("multi_worker", "auto"):
        return Task()
    spec = json.loads(raw)
    cluster, task = spec.get("cluster", {}), spec.get("task", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    if strategy_name == "auto" and workers < 2:
        return Task()
    return Task(task.get("type", "worker"), int(task.get("index", 0)), workers, "chief" in cluster)


def is_chief(strategy=None) -> bool:
    """Whether this process writes the run folder. With a MultiWorkerMirroredStrategy its
    cluster resolver decides; otherwise `TF_CONFIG` (no TF_CONFIG: True)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None and getattr(resolver, "task_type", None) is not None:
        cluster = resolver.cluster_spec().as_dict()
        return resolver.task_type == "chief" or (
            resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster
        )
    return task_from_env().is_chief


def worker_dirs(run_dir: Path, state_dir: Path, task: Task) -> tuple[Path, Path]:
    """Where this process writes. The chief (or a single process) keeps `run_dir` and
    `state_dir`. Worker i writes its copy of the run folder into a temporary folder, removed
    when the process exits, and its resume state (fracture.training.resume: state.json, weights) into
    `<state_dir>.worker<i>`, a fixed path so that a restarted worker resumes from it; the
    trainer removes that with the state when the run completes."""
    if task.is_chief:
        return Path(run_dir), Path(state_dir)
    import atexit
    import shutil
    import tempfile

    temporary = Path(tempfile.mkdtemp(prefix=f"fracture-{task.name}-run-"))
    atexit.register(shutil.rmtree, temporary, True)
    return temporary, Path(state_dir).with_name(f"{Path(state_dir).name}.{task.name}")


def worker_data_config(data_cfg, task: Task):
    """The data config a worker uses: a file cache (`data.cache=<path prefix>`) gets a
    per-worker suffix, since tf.data refuses two writers of one cache file."""
    import dataclasses

    if task.is_chief or not data_cfg.cache or data_cfg.cache == "memory":
        return data_cfg
    return dataclasses.replace(data_cfg, cache=f"{data_cfg.cache}.{task.name}")


def check_sharding(policy: str) -> str:
    if policy not in SHARDING:
        raise ValueError(f"trainer.data_sharding={policy!r}; expected one of {', '.join(SHARDING)}.")
    return policy


def distribute_train_data(strategy, build: Callable, policy: str, global_batch: int):
    """The training data for `fit` under `strategy`.

    Args:
        strategy: the tf.distribute strategy.
        build: `build(shard, batch_size) -> tf.data.Dataset`; `shard` is None (all files) or
            `(num_shards, index)`, for `make_dataset(..., shard=, batch_size=)`.
        policy: `trainer.data_sharding`.
        global_batch: `data.batch_size`.
    """
    check_sharding(policy)
    workers = getattr(strategy.extended, "_num_workers", 1)
    if policy == "data" or workers < 2:  # make_dataset marks its datasets for DATA sharding
        return build(None, global_batch)

    def per_worker(context):
        import tensorflow as tf

        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        ds = build((context.num_input_pipelines, context.input_pipeline_id), context.get_per_replica_batch_size(global_batch))
        return ds.with_options(options)

    return strategy.distribute_datasets_from_function(per_worker)


def sync_batchnorm(model, strategy) -> int:
    """Under 2+ replicas, make trainable BatchNormalization layers use global-batch statistics.

    Keras 3 BatchNormalization defaults to per-replica statistics, and its moving mean and
    variance are not aggregated across replicas: each worker keeps its own, so the chief's
    saved model would carry statistics of 1/N of the data, and the weights would differ
    from a 1-worker run. `synchronized=True` all-reduces the batch moments (three small
    all-reduces per layer per step). Returns how many layers were switched.
    """
    import keras

    if strategy.num_replicas_in_sync < 2:
        return 0
    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            count += 1
    return count


# --- Local clusters (tests, scripts/benchmark_distributed.py) -------------------------------


def free_ports(n: int) -> list[int]:
    """n free TCP ports on the loopback interface (held open together, so distinct)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def local_tf_configs(n: int) -> list[str]:
    """One TF_CONFIG per worker of an n-worker loopback cluster (worker 0 is the chief)."""
    workers = [f"127.0.0.1:{p}" for p in free_ports(n)]
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}) for i in range(n)]


def run_processes(
    commands: list[list[str]], envs: list[dict], timeout: float, cwd: str | None = None, grace: float = 15.0
) -> list[tuple[int, str]]:
    """Run the commands together; `(returncode, output)` each, output = stdout and stderr.

    A cluster with a dead member hangs in its next collective op, so: past `timeout`
    seconds everything still running is killed (returncode -9), and once one process has
    failed the others get `grace` seconds to finish before they are killed. Output goes to
    files, not pipes: a full pipe would block a worker and, through it, the whole cluster.
    """
    import contextlib
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fracture-cluster-") as folder, contextlib.ExitStack() as files:
        logs = [files.enter_context(open(Path(folder) / f"{i}.log", "w+")) for i in range(len(commands))]
        procs = [
            subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
            for cmd, env, log in zip(commands, envs, logs)
        ]
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                codes = [p.poll() for p in procs]
                if None not in codes:
                    break
                if any(code not in (None, 0) for code in codes):
                    deadline = min(deadline, time.monotonic() + grace)
                time.sleep(0.2)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
        results = []
        for p, log in zip(procs, logs):
            log.seek(0)
            results.append((p.returncode, log.read()))
        return results


# --- Keras 3 fixes -------------------------------------------------------------------------

_INSTALLED = False


def install_keras_fixes() -> None:
    """Patch Keras 3 (TensorFlow backend) for tf.distribute; idempotent. Installed by
    `make_strategy` for the mirrored and multi_worker strategies.

    1. `fit` under MultiWorkerMirroredStrategy fails before the first step: the symbolic
       build "reduces" the first input batch across workers (`strategy.reduce("MEAN", batch)`
       raises "Attempt to convert a value (PerReplica...)"). It also draws that batch, which
       advances the seeded shuffle: under any strategy, epoch 1 saw the 2nd shuffle order.
       Fix: build from the dataset's element_spec (shapes and dtypes only; no batch drawn).
    2. The per-step logs are then reduced with `strategy.reduce("MEAN", scalar, axis=0)`:
       "Invalid reduction dimension 0 for input with 0 dimensions". Fix: `axis=None`, and
       all the scalar logs of a step in one all-reduce rather than one each.
    3. Gradient clipping (`clipnorm`, `global_clipnorm`, `clipvalue`) runs in each replica
       *before* the all-reduce, on that replica's 1/N share of the gradient: N replicas clip
       at an effective N-fold threshold, and weights drift from a 1-replica run. Fix: with
       2+ replicas and clipping on, all-reduce first, clip the full gradient, and divide by N
       (the optimizer's own all-reduce then sums N equal shares back). One extra all-reduce
       of the gradients per step, only when clipping is configured.
    4. Synchronized BatchNormalization computes the variance as E[x^2] - E[x]^2 (digits lost
       to cancellation when the mean is large against the spread; one replica's
       tf.nn.moments takes two passes), in three all-reduces per layer per step, each a
       rendezvous of all workers. Fix: the two passes of tf.nn.moments (the global mean,
       then the squared deviations from it) in two all-reduces. (On the demo it changed
       nothing measurable; it removes a difference from the 1-replica arithmetic.)
    """
    global _INSTALLED
    if _INSTALLED:
        return
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import nn as tf_nn
    from keras.src.backend.tensorflow import trainer as tf_trainer
    from keras.src.optimizers import base_optimizer

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None and data_batch is None:
            spec = iterator.data_adapter.get_tf_dataset().element_spec
            # a distributed dataset's spec is per replica: any replica's gives the shapes
            data_batch = tree.map_structure(lambda s: s._value_specs[0] if hasattr(s, "_value_specs") else s, spec)
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            flat = tree.flatten(values)
            if flat and all(isinstance(v, tf.Tensor) and v.shape.rank == 0 for v in flat):
                # the step's logs are scalars: one all-reduce for all of them, not one each
                means = tf.unstack(strategy.reduce("MEAN", tf.stack([tf.cast(v, tf.float32) for v in flat]), axis=None))
                return tree.pack_sequence_as(values, [tf.cast(m, v.dtype) for m, v in zip(means, flat)])
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    original_clip = base_optimizer.BaseOptimizer._clip_gradients

    def _clip_gradients(self, grads):
        clipping = self.clipnorm or self.global_clipnorm or self.clipvalue
        context = tf.distribute.get_replica_context() if clipping else None
        if context is None or context.num_replicas_in_sync < 2 or tf.distribute.in_cross_replica_context():
            return original_clip(self, grads)
        present = [i for i, g in enumerate(grads) if g is not None]
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
        full = list(grads)
        for i, g in zip(present, summed):
            full[i] = g
        clipped = original_clip(self, full)
        share = 1.0 / context.num_replicas_in_sync
        return [g if g is None else g * tf.cast(share, g.dtype) for g in clipped]

    def _compute_moments_sync(x, axes, keepdims):
        context = tf.distribute.get_replica_context()
        if not context:
            return tf_nn._compute_moments(x, axes, keepdims)
        # two passes, as tf.nn.moments does on one replica: the global mean, then the mean
        # squared deviation from it (E[x^2] - E[x]^2 loses digits when the mean is large)
        local = tf.stack([tf.reduce_sum(x, axis=axes, keepdims=True), tf.reduce_sum(tf.ones_like(x), axis=axes, keepdims=True)])
        y_sum, count = tf.unstack(context.all_reduce(tf.distribute.ReduceOp.SUM, local))
        mean = tf.math.divide_no_nan(y_sum, count)
        deviations = tf.reduce_sum(tf.math.squared_difference(x, tf.stop_gradient(mean)), axis=axes, keepdims=True)
        variance = tf.math.divide_no_nan(context.all_reduce(tf.distribute.ReduceOp.SUM, deviations), count)
        if not keepdims:
            mean, variance = tf.squeeze(mean, axes), tf.squeeze(variance, axes)
        return mean, variance

    for owner, name in (
        (tf_trainer.TensorFlowTrainer, "_maybe_symbolic_build"),
        (base_optimizer.BaseOptimizer, "_clip_gradients"),
        (tf_trainer, "reduce_per_replica"),
        (tf_nn, "_compute_moments_sync"),
    ):
        if not hasattr(owner, name):
            raise RuntimeError(f"Keras changed: {getattr(owner, '__name__', owner)}.{name} is gone; revisit fracture.training.cluster.")
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    base_optimizer.BaseOptimizer._clip_gradients = _clip_gradients
    tf_nn._compute_moments_sync = _compute_moments_sync
    _INSTALLED = True
