"""Shared fixtures: the real dataset (skipped when absent), synthetic data, tiny YOLO trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data" / "bone-fracture-yolo8"


def compose_cfg(name: str, overrides: list[str]):
    """Compose the project's real conf/ tree with overrides (as the scripts would)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real BoneFractureYolo8 copy beside the project, read in place."""
    if not (SHARED_DATA / "data.yaml").is_file():
        pytest.skip(f"real dataset not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic dataset with a COCO file and some 'lost' YOLO labels."""
    from fracture.data.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(per_class=12, rare_per_split=3, write_coco=True, lost_yolo_labels=0.2, seed=3)
    return generate(tmp_path_factory.mktemp("synthetic"), spec)


def write_yolo_dataset(root: Path, names: list[str], splits: dict[str, dict[str, str]], image_size=(48, 64)) -> Path:
    """A tiny YOLO tree. `splits`: split -> {stem: label text}; a None label writes no file.

    Every stem gets a plain grey JPEG; data.yaml uses Roboflow's '../<split>/images' style.
    """
    import numpy as np
    from PIL import Image

    import yaml

    for split, labels in splits.items():
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
        for stem, text in labels.items():
            pixels = np.full((*image_size, 3), 90, np.uint8)
            Image.fromarray(pixels).save(root / split / "images" / f"{stem}.jpg")
            if text is not None:
                (root / split / "labels" / f"{stem}.txt").write_text(text)
    spec = {("val" if s == "valid" else s): f"../{s}/images" for s in splits}
    (root / "data.yaml").write_text(yaml.safe_dump({**spec, "nc": len(names), "names": names}))
    return root


@pytest.fixture(scope="session")
def served_run_dir(tmp_path_factory):
    """A tiny run trained on synthetic data (once per session), its threshold locked on valid:
    the model the server tests serve."""
    pytest.importorskip("fastapi", reason="the server needs the serve extra: pip install -e '.[serve]'")
    from fracture.evaluation.runner import EvalConfig, evaluate_run
    from fracture.training.trainer import train

    tmp = tmp_path_factory.mktemp("serve_run")
    cfg = compose_cfg("config", [
        "experiment=demo", f"data.root={tmp / 'synthetic'}", "data.synthetic.per_class=12",
        "data.synthetic.min_side=96", "data.synthetic.max_side=128", "data.image_size=48", "data.batch_size=16",
        "trainer.epochs=1", f"paths.log_dir={tmp / 'logs'}", f"paths.cache_dir={tmp / 'cache'}",
        "callbacks.progress=0", "callbacks.tensorboard.enabled=false",
    ])
    run_dir = train(cfg, tmp / "run").run_dir
    evaluate_run(run_dir, "valid", cfg=EvalConfig(gradcam_random=0, gradcam_worst_boxes=0, gradcam_max_critical=0))
    return run_dir


@pytest.fixture(scope="session")
def served_run(served_run_dir):
    from fracture.runs import load_run

    return load_run(served_run_dir)
