"""scripts/serve.py: a bad run folder or setting is one `error:` line and exit 2."""

import os
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT


@pytest.mark.parametrize("args, words", [
    (["run=/nonexistent/run"], "no such run folder"),
    (["run=/nonexistent/run", "+serve.limits.max_upload_gb=1"], "unknown serve setting limits.max_upload_gb"),
])
def test_serve_script_fails_cleanly(args, words):
    pytest.importorskip("uvicorn", reason="the server needs the serve extra: pip install -e '.[serve]'")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "serve.py"), *args],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and len(done.stderr.strip().splitlines()[-1]) > 0
    assert "Traceback" not in done.stderr
