"""`trainer.strategy`: the tf.distribute strategy to build and train the model under.

Batch size and learning rate under distribution: `data.batch_size` is the *global* batch,
split evenly across replicas (each of R replicas sees batch_size / R). Gradients are
averaged over the global batch, so with the same global batch the LR needs no change.
When you raise the global batch with the number of replicas, set
`model.optimizer.scale_lr=linear`: LR is multiplied by batch_size / reference_batch_size
(the linear scaling rule of Goyal et al. 2017; warm-up helps it, and is on by default).
"""

from __future__ import annotations

import json
import os

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")


def tf_config_workers(environ: dict | None = None) -> int:
    """Number of workers in the `TF_CONFIG` cluster spec (0 when unset)."""
    raw = (environ if environ is not None else os.environ).get("TF_CONFIG")
    if not raw:
        return 0
    cluster = json.loads(raw).get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def choose_strategy(requested: str, num_gpus: int, has_tpu: bool, workers: int) -> str:
    """Which strategy `auto` means here (pure, so it is testable)."""
    if requested not in STRATEGIES:
        raise ValueError(f"trainer.strategy={requested!r}; expected one of {', '.join(STRATEGIES)}.")
    if requested != "auto":
        return requested
    if has_tpu:
        return "tpu"
    if workers > 1:
        return "multi_worker"
    if num_gpus > 1:
        return "mirrored"
    return "default"


def make_strategy(requested: str):
    """Build the tf.distribute strategy. Call before building any model or optimizer."""
    import tensorflow as tf

    name = choose_strategy(
        requested,
        len(tf.config.list_physical_devices("GPU")),
        bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR")),
        tf_config_workers(),
    )
    if name == "default":
        return tf.distribute.get_strategy()
    if name in ("mirrored", "multi_worker"):
        from fracture.training.cluster import install_keras_fixes

        install_keras_fixes()  # Keras 3 fit under these strategies; see fracture.training.cluster
    if name == "mirrored":
        # Without GPUs, mirror over the logical CPUs (set_logical_device_configuration):
        # how the strategy is exercised on machines with no accelerator.
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
