"""Downloading the default dataset from Kaggle, failing fast and clearly when offline.

kagglehub is tried first; the `kaggle` package is only a fallback and is imported lazily,
because `import kaggle` authenticates at import time and calls SystemExit when no
credentials are set.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

KAGGLE_DATASET = "pkdarabi/bone-fracture-detection-computer-vision-project"
KAGGLE_HOST = "www.kaggle.com"


class DownloadError(RuntimeError):
    """The dataset could not be fetched; the message says what to do instead."""


def offline_help(target: Path, reason: str) -> str:
    return (
        f"Could not download {KAGGLE_DATASET} from Kaggle: {reason}\n"
        "To get the data another way:\n"
        f"  1. On a machine with internet, download https://www.kaggle.com/datasets/{KAGGLE_DATASET}\n"
        f"  2. Unzip it and copy the folder that holds data.yaml to {target} (or anywhere),\n"
        "  3. Point the tools at it: FRACTURE_DATA_ROOT=<that folder> in .env, or data.root=<that folder>.\n"
        "Offline you can still run everything on generated data: data=synthetic."
    )


def reachable(host: str = KAGGLE_HOST, port: int = 443, timeout: float = 3.0) -> str | None:
    """None when a TCP connection to host:port opens, else why not (DNS or connect error)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host}:{port} is unreachable ({exc.__class__.__name__}: {exc})"


def find_dataset_root(folder: Path) -> Path | None:
    """The shallowest folder under `folder` holding a data.yaml."""
    candidates = sorted(folder.rglob("data.yaml"), key=lambda p: len(p.parts))
    return candidates[0].parent if candidates else None


def download(target: Path, check_network=reachable) -> Path:
    """Download the Kaggle dataset and return the folder holding its data.yaml.

    Args:
        target: where the user wants the data (used for kagglehub's cache location and in
            the instructions printed on failure).
        check_network: returns None when Kaggle is reachable, else the reason; injected so
            tests can fake the network.

    Raises:
        DownloadError: offline, no credentials, or the download failed.
    """
    reason = check_network()
    if reason:
        raise DownloadError(offline_help(target, reason))
    if not (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")):
        kaggle_json = Path.home() / ".kaggle" / "kaggle.json"
        if not kaggle_json.is_file():
            raise DownloadError(
                offline_help(target, "no credentials: set KAGGLE_USERNAME and KAGGLE_KEY in .env "
                             "(see .env.example) or create ~/.kaggle/kaggle.json.")
            )
    target.mkdir(parents=True, exist_ok=True)
    errors = []
    try:
        import kagglehub

        os.environ.setdefault("KAGGLEHUB_CACHE", str(target / ".kagglehub"))
        path = Path(kagglehub.dataset_download(KAGGLE_DATASET))
    except Exception as exc:  # noqa: BLE001 - any failure falls through to the kaggle CLI
        errors.append(f"kagglehub: {exc}")
        path = None
    if path is None:
        try:
            import kaggle  # noqa: PLC0415 - exits the process at import without credentials

            kaggle.api.dataset_download_files(KAGGLE_DATASET, path=str(target), unzip=True)
            path = target
        except SystemExit as exc:
            errors.append(f"kaggle: exited while authenticating ({exc})")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"kaggle: {exc}")
    if path is None:
        raise DownloadError(offline_help(target, "; ".join(errors)))
    root = find_dataset_root(path)
    if root is None:
        raise DownloadError(f"Downloaded to {path}, but found no data.yaml inside it.")
    return root
