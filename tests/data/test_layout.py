import pytest
import yaml

from fracture.data.layout import DatasetError, resolve_layout


def make_split(root, split):
    (root / split / "images").mkdir(parents=True)
    (root / split / "labels").mkdir(parents=True)


def write_yaml(root, spec):
    (root / "data.yaml").write_text(yaml.safe_dump({"names": ["a", "b"], **spec}))


def test_roboflow_relative_paths_and_val_alias(tmp_path):
    make_split(tmp_path, "train")
    make_split(tmp_path, "valid")
    write_yaml(tmp_path, {"train": "../train/images", "val": "../valid/images"})
    layout = resolve_layout(tmp_path)
    assert layout.split("train").images_dir == tmp_path / "train" / "images"
    assert layout.split("val").labels_dir == tmp_path / "valid" / "labels"
    assert layout.names == ["a", "b"]


def test_ultralytics_path_key(tmp_path):
    (tmp_path / "ds" / "images" / "train").mkdir(parents=True)
    write_yaml(tmp_path, {"path": "ds", "train": "images/train"})
    layout = resolve_layout(tmp_path)
    assert layout.split("train").images_dir == tmp_path / "ds" / "images" / "train"
    assert layout.split("train").labels_dir == tmp_path / "ds" / "labels" / "train"


def test_absolute_path_and_stale_absolute_path_fallback(tmp_path):
    make_split(tmp_path, "train")
    make_split(tmp_path, "valid")
    write_yaml(
        tmp_path,
        {"train": str(tmp_path / "train" / "images"), "valid": "/content/datasets/x/valid/images"},
    )
    layout = resolve_layout(tmp_path)
    assert layout.split("train").images_dir == tmp_path / "train" / "images"
    assert layout.split("valid").images_dir == tmp_path / "valid" / "images"
    assert any("not found" in n for n in layout.notes)


def test_missing_split_is_an_error_only_when_requested(tmp_path):
    make_split(tmp_path, "train")
    write_yaml(tmp_path, {"train": "../train/images", "test": "../test/images"})
    layout = resolve_layout(tmp_path)
    assert layout.split("train")
    with pytest.raises(DatasetError, match="'test'.*no such folder"):
        layout.split("test")
    with pytest.raises(DatasetError, match="'valid'.*not declared"):
        layout.split("valid")


def test_dict_names_and_missing_root(tmp_path):
    make_split(tmp_path, "train")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"names": {1: "b", 0: "a"}, "train": "train/images"}))
    assert resolve_layout(tmp_path).names == ["a", "b"]
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_layout(tmp_path / "nope")
