"""scripts/resplit.py end to end on synthetic data with planted cross-split duplicates."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import yaml

from conftest import PROJECT_ROOT
from fracture.data.synthetic import SyntheticSpec, generate


def _plant(root: Path) -> dict[str, tuple[str, ...]]:
    """Cross-split relations the re-split must keep together: name -> files (in valid/images)."""
    train = sorted((root / "train" / "images").glob("*.jpg"))
    valid = root / "valid" / "images"

    def copy(src: Path, name: str, transform=None) -> str:
        image = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(valid / name), transform(image) if transform else image)
        shutil.copy(root / "train" / "labels" / f"{src.stem}.txt", root / "valid" / "labels" / f"{Path(name).stem}.txt")
        return name

    exact = copy(train[0], "planted_exact.png")  # lossless: same decoded pixels
    near = copy(train[1], "planted_near.jpg", lambda im: cv2.flip(cv2.convertScaleAbs(im, alpha=1.2, beta=-10), 1))
    # a Roboflow group: train[2] renamed as one augmentation, another image as a second
    (root / "train" / "images" / train[2].name).rename(root / "train" / "images" / "src_png.rf.aaa.jpg")
    (root / "train" / "labels" / f"{train[2].stem}.txt").rename(root / "train" / "labels" / "src_png.rf.aaa.txt")
    group = copy(train[3], "src_png.rf.bbb.jpg")
    (root / "train" / "images" / train[3].name).unlink()
    (root / "train" / "labels" / f"{train[3].stem}.txt").unlink()
    return {
        "exact": (train[0].name, exact),
        "near": (train[1].name, near),
        "roboflow": ("src_png.rf.aaa.jpg", group),
    }


def test_resplit_keeps_duplicates_together_and_lists_every_image_once(tmp_path):
    root = generate(tmp_path / "syn", SyntheticSpec(per_class=8, splits={"train": 1.0, "valid": 0.5}, seed=5))
    planted = _plant(root)
    images = sorted(p.name for p in root.glob("*/images/*"))
    out = tmp_path / "resplit"
    result = subprocess.run(
        [sys.executable, "scripts/resplit.py", "data=yolo", f"data.root={root}", f"out={out}",
         f"paths.cache_dir={tmp_path / 'cache'}", "seed=3"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    print(result.stdout)
    assert "split test: not pooled" in result.stdout
    lists = {s: (out / f"{s}.txt").read_text().splitlines() for s in ("train", "valid", "test")}
    listed = [Path(p).name for v in lists.values() for p in v]
    assert sorted(listed) == images  # every image exactly once
    assert all(Path(p).is_absolute() and Path(p).is_file() for v in lists.values() for p in v)
    split_of = {Path(p).name: s for s, v in lists.items() for p in v}
    for kind, (a, b) in planted.items():
        assert split_of[a] == split_of[b], kind
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert (data["train"], data["val"], data["test"]) == ("train.txt", "valid.txt", "test.txt")
    assert data["names"] == yaml.safe_load((root / "data.yaml").read_text())["names"]
    report = json.loads((out / "resplit.json").read_text())
    verify = report["verify"]
    assert not any(verify["shared_roboflow_groups"].values())
    assert not any(verify["exact"].values()) and not any(verify["near"].values())
    sizes = {s: len(v) for s, v in lists.items()}
    assert sizes["train"] > sizes["valid"] > 0 and sizes["test"] > 0
    assert abs(sizes["train"] / len(images) - 0.7) < 0.08
