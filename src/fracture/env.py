"""Process-level setup shared by every entry point: `.env` loading and the project root.

Hydra configs refer to `${oc.env:FRACTURE_PROJECT_ROOT}` for paths that default to the
project folder (data/, logs/, .cache/); scripts and tests set it through `setup_env`.
"""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import load_dotenv

PROJECT_ROOT_VAR = "FRACTURE_PROJECT_ROOT"
DATA_ROOT_VAR = "FRACTURE_DATA_ROOT"


def find_project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` that holds both `conf/` and `pyproject.toml`.

    Falls back to the current directory, so an installed package run from elsewhere
    still gets a usable (if unusual) root.
    """
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "conf").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    return Path.cwd().resolve()


def setup_env(project_root: Path | None = None) -> Path:
    """Load `<root>/.env` (shell variables win) and export the project root for configs."""
    root = (project_root or find_project_root()).resolve()
    load_dotenv(root / ".env", override=False)
    # An empty FRACTURE_DATA_ROOT= line (as in .env.example) means "not set".
    if not os.environ.get(DATA_ROOT_VAR):
        os.environ.pop(DATA_ROOT_VAR, None)
    os.environ.setdefault(PROJECT_ROOT_VAR, str(root))
    quiet_tensorflow_without_gpu()
    return root


def quiet_tensorflow_without_gpu() -> None:
    """On a machine with no NVIDIA driver, TensorFlow's C++ layer logs
    "E0000 ... failed call to cuInit" at error level the first time devices are listed:
    noise that reads like a failure. Without a driver, C++ errors are raised as Python
    exceptions anyway, so its log is quieted, unless the user chose a level."""
    has_driver = Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists()
    if not has_driver:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
