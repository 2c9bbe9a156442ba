"""`train()` on a folder-per-class dataset (data=folders), composed from the real conf/
tree: a classifier on the split-folder layout, and a detector on the FracAtlas-like
layout whose boxes come from data.boxes_dir."""

import json

import pytest

from conftest import compose_cfg
from fracture.data.synthetic import BOXES_DIR, SPLIT_CSV, FolderSpec, generate_folders
from fracture.training.trainer import train

COMMON = ["data=folders", "data.image_size=64", "data.batch_size=8", "trainer.epochs=1",
          "trainer.max_train_batches=2", "callbacks.progress=0", "callbacks.tensorboard.enabled=false"]


def run_info(run_dir):
    return json.loads((run_dir / "run.json").read_text())


@pytest.mark.parametrize("layout", ["splits", "classes"])
def test_folder_dataset_trains(tmp_path, layout):
    if layout == "splits":
        root = generate_folders(tmp_path / "ds", FolderSpec())
        extra = ["model=small_cnn", "data.negative_class=not fractured"]
    else:
        root = generate_folders(tmp_path / "ds", FolderSpec(
            layout="classes", positive="Fractured", negative="Non_fractured", split_csv=True, boxes=True,
            per_split={"train": (16, 8), "valid": (4, 3), "test": (4, 3)},
        ))
        extra = ["model=small_cnn_detector", "data.negative_class=Non_fractured", "data.images_dir=images",
                 f"data.boxes_dir={BOXES_DIR}", f"data.split_csv='{SPLIT_CSV}'", "data.multi_object_rule=all",
                 "trainer.freeze_epochs=0", "trainer.precision=float32"]
    cfg = compose_cfg("config", [*COMMON, f"data.root={root}", f"paths.log_dir={tmp_path / 'logs'}",
                                 f"paths.cache_dir={tmp_path / 'cache'}", *extra])
    result = train(cfg, tmp_path / "run")
    assert result.status == "finished"
    info = run_info(result.run_dir)
    positive = "fractured" if layout == "splits" else "Fractured"
    assert info["class_names"][0] == positive and len(info["class_names"]) == 2
    assert info["data"]["format"] == "folders" and info["data"]["nothing_dropped"]
    assert info["train_images"] == (20 if layout == "splits" else 24)
