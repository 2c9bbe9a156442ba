"""Download the default dataset from Kaggle: python scripts/download_data.py [TARGET_DIR]

Credentials come from .env (KAGGLE_USERNAME, KAGGLE_KEY). Offline, it says how to get the
data by hand, and exits with status 2.
"""

import sys
from pathlib import Path

from fracture.data.download import DownloadError, download
from fracture.env import setup_env


def main() -> int:
    root = setup_env(Path(__file__).resolve().parents[1])
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "data" / "BoneFractureYolo8"
    try:
        dataset_root = download(target)
    except DownloadError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"Dataset ready at {dataset_root}")
    print(f"Use it with: FRACTURE_DATA_ROOT={dataset_root} in .env, or data.root={dataset_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
