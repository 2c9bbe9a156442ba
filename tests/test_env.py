"""Process setup: no GPU-driver noise on machines without one."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT


@pytest.mark.skipif(Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists(), reason="this machine has an NVIDIA driver")
def test_no_cuinit_error_line_without_a_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = ("from fracture.env import setup_env; setup_env(); import tensorflow as tf; "
            "print(len(tf.config.list_physical_devices('GPU')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "0", out.stderr[-2000:]
    assert "cuInit" not in out.stderr
