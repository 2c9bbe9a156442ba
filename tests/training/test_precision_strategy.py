"""Precision policy selection (device query faked), a mixed_float16 step on CPU, and the
distribution strategies: mirrored for real on 2 logical CPUs, multi_worker built from a
2-worker TF_CONFIG on loopback. Distribution runs in child processes (see distributed_child.py)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from fracture.training import precision
from fracture.training.distribute import choose_strategy, tf_config_workers
from fracture.training.precision import Accelerators, resolve_precision

CHILD = Path(__file__).with_name("distributed_child.py")


@pytest.mark.parametrize(
    "accelerators, expected",
    [
        (Accelerators(), "float32"),  # CPU: mixed precision gives no speed-up
        (Accelerators(((8, 0),)), "mixed_float16"),  # A100
        (Accelerators(((7, 0), (9, 0))), "mixed_float16"),
        (Accelerators(((6, 1),)), "float32"),  # Pascal: no tensor cores
        (Accelerators(((8, 6), (6, 1))), "float32"),  # mixed fleet: the slowest decides
        (Accelerators(tpu=True), "mixed_bfloat16"),
    ],
)
def test_auto_precision_follows_the_hardware(accelerators, expected):
    assert resolve_precision("auto", accelerators) == expected


def test_explicit_precision_wins_and_typos_are_errors():
    assert resolve_precision("mixed_bfloat16", Accelerators()) == "mixed_bfloat16"
    with pytest.raises(ValueError, match="trainer.precision"):
        resolve_precision("fp16", Accelerators())


def test_apply_precision_uses_the_device_query(monkeypatch):
    monkeypatch.setattr(precision, "detect_accelerators", lambda: Accelerators(((8, 0),)))
    try:
        assert precision.apply_precision("auto") == "mixed_float16"
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_mixed_float16_train_step_on_cpu_has_finite_loss():
    from fracture.models.classifier import ModelConfig, build_model
    from fracture.models.losses import LossConfig, build_losses

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        fm = build_model(ModelConfig(backbone="small_cnn", weights=None), 3, 32)
        losses, weights = build_losses(LossConfig())
        fm.model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=losses, loss_weights=weights)
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        y = {"class": np.eye(3, dtype="float32")[[0, 1, 2, 0]], "box": np.tile([[0.1, 0.2, 0.5, 0.7]], (4, 1)).astype("float32")}
        losses_seen = [fm.model.train_on_batch(x, y, return_dict=True)["loss"] for _ in range(2)]
        assert fm.model.optimizer.__class__.__name__ == "LossScaleOptimizer"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(losses_seen).all()


@pytest.mark.parametrize(
    "requested, gpus, tpu, workers, expected",
    [
        ("auto", 0, False, 0, "default"),
        ("auto", 4, False, 0, "mirrored"),
        ("auto", 1, False, 2, "multi_worker"),
        ("auto", 0, True, 0, "tpu"),
        ("mirrored", 0, False, 0, "mirrored"),
    ],
)
def test_auto_strategy_choice(requested, gpus, tpu, workers, expected):
    assert choose_strategy(requested, gpus, tpu, workers) == expected


def test_tf_config_worker_count():
    spec = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "chief", "index": 0}}
    assert tf_config_workers({"TF_CONFIG": json.dumps(spec)}) == 3
    assert tf_config_workers({}) == 0


def _child(mode: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(CHILD), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
    )


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=240)
    lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, out[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_mirrored_strategy_trains_on_two_logical_cpus():
    result = _result(_child("mirrored"))
    assert result["strategy"] == "MirroredStrategy" and result["replicas"] == 2
    assert np.isfinite(result["losses"]).all()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_multi_worker_strategy_builds_from_tf_config_on_loopback():
    workers = [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]
    procs = [
        _child("multi_worker", {"TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})})
        for i in range(2)
    ]
    results = [_result(p) for p in procs]
    assert all(r["replicas"] == 2 for r in results)
