"""Run in a fresh process by test_precision_strategy.py: distribution setup must happen
before TensorFlow initialises its devices, which pytest's process has long done.

    python distributed_child.py mirrored        # 2 logical CPUs, a real fit
    python distributed_child.py multi_worker    # TF_CONFIG from the environment
"""

import json
import sys

import numpy as np
import tensorflow as tf

mode = sys.argv[1]
if mode == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from fracture.models.classifier import ModelConfig, build_model  # noqa: E402
from fracture.models.losses import LossConfig, build_losses  # noqa: E402
from fracture.models.metrics import build_metrics  # noqa: E402
from fracture.training.distribute import make_strategy  # noqa: E402
from fracture.training.optim import OptimizerConfig, build_optimizer  # noqa: E402

strategy = make_strategy(mode)
with strategy.scope():
    fm = build_model(ModelConfig(backbone="small_cnn", weights=None), 3, 32)
    losses, loss_weights = build_losses(LossConfig())
    metrics, weighted = build_metrics(3)
    fm.model.compile(
        optimizer=build_optimizer(OptimizerConfig(), 1e-3, 2, 1, 8),
        loss=losses, loss_weights=loss_weights, metrics=metrics, weighted_metrics=weighted,
    )
result = {"strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync}
if mode == "mirrored":
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    y = {"class": np.eye(3, dtype="float32")[rng.integers(0, 3, 16)], "box": np.tile([[0.1, 0.1, 0.6, 0.6]], (16, 1)).astype("float32")}
    w = {"class": np.ones(16, "float32"), "box": np.ones(16, "float32")}
    ds = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(8)
    history = fm.model.fit(ds, epochs=2, verbose=0)
    result["losses"] = history.history["loss"]
print("RESULT " + json.dumps(result))
