"""Data accounting: a damaged dataset's losses are counted per bucket, and a shrunken one stops."""

import json
import shutil

import pytest

from conftest import write_yolo_dataset
from fracture.data.accounting import check_shrink, data_accounting, format_accounting, reason_text
from fracture.data.config import DataConfig
from fracture.data.index import build_index
from fracture.data.inspect import write_inspection
from fracture.data.layout import DatasetError
from fracture.data.synthetic import SyntheticSpec, generate

BOX = "0.5 0.5 0.2 0.2"


@pytest.fixture(scope="module")
def clean_synthetic(tmp_path_factory):
    """Exactly known counts: 12 images per common class in train (4 in valid), 3 of the
    rare class per split, no second fractures and no lost labels."""
    spec = SyntheticSpec(per_class=12, rare_per_split=3, second_fracture=0.0, lost_yolo_labels=0.0, seed=1)
    return generate(tmp_path_factory.mktemp("clean"), spec)


@pytest.fixture
def damaged(clean_synthetic, tmp_path):
    """A copy with images, label files and most of a class lost (numbers in the asserts)."""
    root = shutil.copytree(clean_synthetic, tmp_path / "damaged")
    train, valid = root / "train", root / "valid"
    for image in sorted(train.glob("images/*_fingers_fx.jpg"))[4:]:  # 12 -> 4 fingers fractures
        image.unlink()  # its label file stays: a label file without an image
    for image in sorted(train.glob("images/*_elbow_fx.jpg"))[:2]:
        image.write_text("not an image")
    (train / "images" / "scan.dcm").write_bytes(b"\x00" * 128 + b"DICM")
    label = sorted(train.glob("labels/*_forearm_fx.txt"))[0]
    label.write_text(label.read_text() + "0 0.1 abc 0.3 0.4 0.5\n")
    common = [p for p in sorted(valid.glob("images/*.jpg")) if "_fingers_" not in p.name and "_clavicle_" not in p.name]
    for image in common[:25]:
        (valid / "labels" / f"{image.stem}.txt").unlink()
    return root


def test_every_bucket_of_a_damaged_dataset_is_counted(damaged):
    index = build_index(DataConfig(root=str(damaged), annotations="yolo"))
    acc = data_accounting(index)
    json.dumps(acc)  # JSON-ready for run.json
    classes = acc["classes"]
    assert {d["name"]: d["train_instances"] for d in classes["dropped"]} == {"fingers fracture": 4, "clavicle fracture": 3}
    assert all(d["reason"] == "fewer than data.min_instances=10 train instances" for d in classes["dropped"])
    assert len(classes["kept"]) == 6 and classes["kept"][-1] == "no finding"

    train, valid = acc["splits"]["train"], acc["splits"]["valid"]
    assert train["images_found"] == len(list((damaged / "train" / "images").iterdir()))
    assert train["images_left_out"] == {
        "bad_image:not_an_image": 2,
        "bad_image:unsupported_dicom": 1,
        "only_dropped_classes": 4 + 3,
    }
    assert train["images_used"] == train["images_found"] - 10
    assert train["label_lines_dropped"] == {"non_numeric": 1}
    assert train["label_files_without_image"] == 8
    assert train["objects_of_dropped_classes"] == {"clavicle fracture": 3, "fingers fracture": 4}
    assert valid["images_left_out"] == {"no_label_file": 25, "only_dropped_classes": 4 + 3}
    assert valid["images_used"] == valid["images_found"] - 32
    assert acc["nothing_dropped"] is False

    table = format_accounting(acc)
    for key, n in [("bad_image:not_an_image", 2), ("bad_image:unsupported_dicom", 1), ("only_dropped_classes", 7)]:
        assert f"{n} {reason_text(key)}" in table.splitlines()[_row(table, "train")]
    assert f"25 {reason_text('no_label_file')}" in table.splitlines()[_row(table, "valid")]
    assert "fingers fracture (4 train instances)" in table
    assert "label lines non numeric 1; label files without image 8" in table
    assert "objects of dropped classes clavicle fracture 3, fingers fracture 4" in table
    assert "DICOM" in table and len(table.splitlines()) <= 12


def _row(table: str, split: str) -> int:
    return next(i for i, line in enumerate(table.splitlines()) if line.split()[:1] == [split])


def test_shrunken_split_stops_the_run_saying_why_unless_allowed(damaged):
    acc = data_accounting(build_index(DataConfig(root=str(damaged), annotations="yolo")))
    used, found = acc["splits"]["valid"]["images_used"], acc["splits"]["valid"]["images_found"]
    with pytest.raises(DatasetError) as info:
        check_shrink(acc, allow_shrink=False)
    message = str(info.value)
    assert f"split 'valid' uses {used} of {found} images" in message
    assert "no label file: 25" in message and "data.allow_shrink=true" in message
    assert "'train'" not in message  # train kept more than half
    check_shrink(acc, allow_shrink=True)
    only_train = data_accounting(build_index(DataConfig(root=str(damaged), annotations="yolo")), splits=["train"])
    assert list(only_train["splits"]) == ["train"]
    check_shrink(only_train, allow_shrink=False)  # the shrunken valid split is not accounted for


def test_a_clean_dataset_says_nothing_dropped_and_passes(tmp_path):
    root = write_yolo_dataset(tmp_path, ["a", "b"], {"train": {"a0": f"0 {BOX}\n", "b0": f"1 {BOX}\n", "n": ""}})
    acc = data_accounting(build_index(DataConfig(root=str(root), min_instances=1), splits=["train"]))
    assert acc["nothing_dropped"] is True and acc["splits"]["train"]["images_left_out"] == {}
    assert "nothing dropped" in format_accounting(acc)
    check_shrink(acc, allow_shrink=False)


def test_fewer_than_two_classes_stops_the_run(tmp_path):
    root = write_yolo_dataset(tmp_path, ["a", "b"], {"train": {**{f"a{i}": f"0 {BOX}\n" for i in range(3)}, "b0": f"1 {BOX}\n"}})
    acc = data_accounting(build_index(DataConfig(root=str(root), min_instances=2, negatives="drop"), splits=["train"]))
    assert acc["classes"]["kept"] == ["a"]
    with pytest.raises(DatasetError, match=r"only 1 class left \(a\); dropped: b \(1 train instances\)"):
        check_shrink(acc, allow_shrink=False)
    check_shrink(acc, allow_shrink=True)


def test_negatives_dropped_by_choice_do_not_count_as_shrinking(tmp_path):
    labels = {"a0": f"0 {BOX}\n", "b0": f"1 {BOX}\n", **{f"n{i}": "" for i in range(5)}}
    root = write_yolo_dataset(tmp_path, ["a", "b"], {"train": labels})
    acc = data_accounting(build_index(DataConfig(root=str(root), min_instances=1, negatives="drop"), splits=["train"]))
    assert acc["splits"]["train"]["images_left_out"] == {"negative_dropped": 5}
    assert "5 no objects, and data.negatives=drop" in format_accounting(acc)
    check_shrink(acc, allow_shrink=False)


@pytest.mark.parametrize("rule, not_target", [("largest", 2), ("union", 1)])
def test_renames_merges_and_objects_that_are_not_the_target(tmp_path, rule, not_target):
    # one image with two "a" boxes and one "b" box: largest keeps 1 of 3, union folds the "a" boxes
    multi = f"0 {BOX}\n0 0.2 0.2 0.1 0.1\n1 0.8 0.8 0.1 0.1\n"
    root = write_yolo_dataset(tmp_path, ["a", "b", "c"], {"train": {"m": multi, "c0": f"2 {BOX}\n"}})
    cfg = DataConfig(root=str(root), min_instances=1, multi_object_rule=rule, rename={"a": "x", "c": "b"})
    acc = data_accounting(build_index(cfg, splits=["train"]))
    assert acc["classes"]["renamed"] == {"a": "x"} and acc["classes"]["merged"] == {"b": ["b", "c"]}
    assert acc["splits"]["train"]["objects_not_target"] == not_target
    table = format_accounting(acc)
    assert "classes renamed: a -> x" in table and "classes merged into b: b, c" in table
    assert f"objects not the image's one target (data.multi_object_rule={rule}) {not_target}" in table



def test_the_inspector_reports_the_same_accounting(damaged, tmp_path):
    index = build_index(DataConfig(root=str(damaged), annotations="yolo"))
    summary = write_inspection(index, tmp_path / "inspect")
    assert summary["accounting"] == json.loads(json.dumps(data_accounting(index)))
    assert format_accounting(summary["accounting"]) in (tmp_path / "inspect" / "report.md").read_text()
