"""Folder-per-class datasets (data=folders): both layouts, csv splits, the "no finding"
folder, box files, and bad input counted and named, never dropped silently."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT, compose_cfg
from fracture.data import images as probe
from fracture.data.accounting import data_accounting
from fracture.data.config import DataConfig
from fracture.data.folders import BOX_ON_NEGATIVE
from fracture.data.index import NO_BOX, build_index
from fracture.data.layout import DatasetError
from fracture.data.records import AMBIGUOUS_NAME, LISTED_FILE_MISSING, LISTED_TWICE, STRAY_FILE
from fracture.data.synthetic import BOXES_DIR, SPLIT_CSV, FolderSpec, generate_folders

ALL_SPLITS = ["train", "valid", "test"]
FRACATLAS = FolderSpec(
    layout="classes", positive="Fractured", negative="Non_fractured", split_csv=True, boxes=True,
    per_split={"train": (12, 8), "valid": (4, 3), "test": (4, 3)},
)


@pytest.fixture
def s1(tmp_path):
    """`<root>/<train|val|test>/<fractured|not fractured>/*`, 12+8 / 4+3 / 4+3 images."""
    return generate_folders(tmp_path / "s1", FolderSpec())


@pytest.fixture
def fracatlas(tmp_path):
    """`<root>/images/<Fractured|Non_fractured>/*`, csv splits and YOLO box files."""
    return generate_folders(tmp_path / "fracatlas", FRACATLAS)


def s1_config(root, **kw):
    values = dict(root=str(root), format="folders", negative_class="not fractured", min_instances=1)
    return DataConfig(**{**values, **kw})


def fracatlas_config(root, **kw):
    values = dict(
        root=str(root), format="folders", negative_class="Non_fractured", images_dir="images",
        boxes_dir=BOXES_DIR, split_csv=SPLIT_CSV, min_instances=1,
    )
    return DataConfig(**{**values, **kw})


def test_split_folders_give_classes_from_folder_names_and_negatives_like_yolo(s1):
    index = build_index(s1_config(s1), splits=["train", "val", "test"])
    assert index.classes.class_names == ["fractured", "not fractured"]
    assert index.classes.negative_id == 1
    expected = {"train": (12, 8), "valid": (4, 3), "test": (4, 3)}
    for split, (positives, negatives) in expected.items():
        report = index.split(split).report
        assert report.images_found == report.images_used == report.accounted() == positives + negatives
        assert report.negatives == negatives
        assert dict(report.samples_per_class) == {"fractured": positives, "not fractured": negatives}
    samples = index.split("train").samples
    # No boxes_dir: every sample trains the classifier only (box loss masked).
    assert all(s.box == NO_BOX and not s.has_box for s in samples)
    assert {s.class_id for s in samples if "not fractured" in s.image_path} == {1}
    assert index.split("valid").samples[0].image_path.split("/")[-3] == "val"


def test_negative_class_must_name_a_folder_unless_negatives_are_dropped(s1):
    with pytest.raises(DatasetError, match=r"negative_class='no finding'.*\['fractured', 'not fractured'\]"):
        build_index(s1_config(s1, negative_class="no finding"))
    dropped = build_index(s1_config(s1, negatives="drop"))
    assert dropped.classes.class_names == ["fractured"]
    report = dropped.split("train").report
    assert report.negatives_dropped == 8 and report.images_used == 12 and report.accounted() == 20


def test_csv_split_and_box_files_train_the_detector(fracatlas):
    index = build_index(fracatlas_config(fracatlas, multi_object_rule="all"), splits=ALL_SPLITS)
    assert index.classes.class_names == ["Fractured", "Non_fractured"]
    for split, (positives, negatives) in FRACATLAS.per_split.items():
        report = index.split(split).report
        assert (report.images_found, report.images_used, report.negatives) == (positives + negatives,) * 2 + (negatives,)
        assert report.boxes == positives and not report.listing_problems
        names = {s.image_path.split("/")[-1].split("_")[0] for s in index.split(split).samples}
        assert names == {split}  # the csv decides the split, never the file name order
    train = index.split("train").samples
    positives = [s for s in train if s.class_id == 0]
    assert all(s.has_box and len(s.boxes) == 1 and s.box_classes == (0,) for s in positives)
    assert all(s.boxes == () and not s.has_box for s in train if s.class_id == 1)


def test_box_class_is_the_folder_class_whatever_id_the_file_writes(fracatlas):
    box_file = next((fracatlas / BOXES_DIR).glob("train_Fractured_0000.txt"))
    box_file.write_text(box_file.read_text().replace("0 ", "7 ", 1))
    sample = next(
        s for s in build_index(fracatlas_config(fracatlas)).split("train").samples
        if s.image_path.endswith("train_Fractured_0000.jpg")
    )
    assert (sample.class_id, sample.box_classes, sample.has_box) == (0, (0,), True)


def test_positive_without_box_trains_the_classifier_but_not_the_detector(fracatlas):
    (fracatlas / BOXES_DIR / "train_Fractured_0003.txt").unlink()
    (fracatlas / BOXES_DIR / "train_Fractured_0004.txt").write_text("")
    classifier = build_index(fracatlas_config(fracatlas)).split("train")
    report = classifier.report
    assert report.positives_without_boxes == 2 and report.images_used == 20
    assert any(e.endswith("train_Fractured_0003.jpg") for e in report.positives_without_boxes_examples)
    boxless = [s for s in classifier.samples if s.class_id == 0 and not s.has_box]
    assert len(boxless) == 2 and all(s.box == NO_BOX for s in boxless)

    index = build_index(fracatlas_config(fracatlas, multi_object_rule="all"))
    detector = index.split("train").report
    assert detector.positives_without_boxes_dropped == 2 and detector.images_used == 18
    assert detector.accounted() == detector.images_found
    assert data_accounting(index)["splits"]["train"]["images_left_out"] == {"positive_without_boxes": 2}


def test_detector_rule_without_boxes_dir_is_refused(s1):
    with pytest.raises(DatasetError, match="needs boxes: set data.boxes_dir"):
        build_index(s1_config(s1, multi_object_rule="all"))


def test_box_on_a_no_finding_image_is_dropped_and_counted(fracatlas):
    (fracatlas / BOXES_DIR / "train_Non_fractured_0000.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    report = build_index(fracatlas_config(fracatlas)).split("train").report
    assert report.dropped_lines[BOX_ON_NEGATIVE] == 1
    assert report.negatives == 8 and report.boxes == 12


def test_bad_input_is_counted_and_named(s1):
    train = s1 / "train"
    (train / "fractured" / "train_fractured_0000.jpg").write_text("not an image")
    (train / "empty class").mkdir()
    (train / "stray.jpg").write_bytes((train / "fractured" / "train_fractured_0001.jpg").read_bytes())
    (train / "fractured" / "nested").mkdir()
    (train / "fractured" / "notes.txt").write_text("x")
    index = build_index(s1_config(s1))
    report = index.split("train").report
    assert dict(report.bad_images) == {probe.NOT_AN_IMAGE: 1}
    assert "train_fractured_0000.jpg" in report.bad_image_examples[0]
    assert report.listing_problems[STRAY_FILE] == 3
    stray = " ".join(report.listing_problem_examples[STRAY_FILE])
    assert all(name in stray for name in ("stray.jpg", "nested", "notes.txt"))
    assert report.images_found == 20 and report.images_used == 19 and report.accounted() == 20
    # An empty class folder is a class with 0 train instances: dropped, said so.
    assert index.classes.dropped == {"empty class": 0}
    assert any("'empty class' holds no image" in n for n in index.layout.notes)


def test_csv_naming_a_missing_ambiguous_or_repeated_image_is_counted_and_named(fracatlas):
    csv_path = fracatlas / SPLIT_CSV.format(split="train")
    shutil.copy(fracatlas / "images" / "Fractured" / "valid_Fractured_0000.jpg", fracatlas / "images" / "Non_fractured")
    rows = csv_path.read_text() + "ghost.jpg\ntrain_Fractured_0001.jpg\nvalid_Fractured_0000.jpg\n"
    csv_path.write_text(rows)
    (fracatlas / "images" / "Fractured" / "train_Fractured_0005.jpg").unlink()
    index = build_index(fracatlas_config(fracatlas), splits=ALL_SPLITS)
    report = index.split("train").report
    assert dict(report.listing_problems) == {LISTED_FILE_MISSING: 2, LISTED_TWICE: 1, AMBIGUOUS_NAME: 1}
    missing = report.listing_problem_examples[LISTED_FILE_MISSING]
    assert any(e.startswith(f"{csv_path}:") and e.endswith("ghost.jpg") for e in missing)
    assert any(e.endswith("train_Fractured_0005.jpg") for e in missing)
    assert report.images_found == 19
    # The copy in two class folders is in no split now (the valid csv's name is ambiguous too).
    assert index.split("valid").report.listing_problems == {AMBIGUOUS_NAME: 1}
    assert any("in no split csv" in n for n in index.layout.notes)


def test_csv_without_its_column_names_the_columns_it_has(fracatlas):
    with pytest.raises(DatasetError, match=r"train.csv: no column 'name' \(columns: \['image_id'\]\)"):
        build_index(fracatlas_config(fracatlas, split_csv_column="name"))


def test_a_saved_mapping_leaves_an_unknown_class_folder_out(s1, tmp_path):
    classes = build_index(s1_config(s1)).classes
    (s1 / "val" / "dislocated").mkdir()
    shutil.copy(s1 / "val" / "fractured" / "val_fractured_0000.jpg", s1 / "val" / "dislocated" / "d.jpg")
    valid = build_index(s1_config(s1), splits=["valid"], classes=classes).split("valid").report
    assert valid.images_only_dropped_classes == 1 and valid.images_used == 7 and valid.accounted() == 8


def test_unsplit_folders_get_a_seeded_stratified_duplicate_aware_split(fracatlas, tmp_path):
    shutil.rmtree(fracatlas / "Utilities")
    original = fracatlas / "images" / "Fractured" / "train_Fractured_0000.jpg"
    shutil.copy(original, original.with_name("copy_of_0000.jpg"))  # an exact duplicate, other name
    cfg = fracatlas_config(fracatlas, split_csv=None, split_seed=3)
    index = build_index(cfg, splits=ALL_SPLITS, cache_dir=tmp_path / "cache")
    where = {}
    for split in ALL_SPLITS:
        for sample in index.split(split).samples:
            assert sample.image_path.split("/")[-1] not in where  # in exactly one split
            where[sample.image_path.split("/")[-1]] = split
    assert len(where) == 35
    assert where["copy_of_0000.jpg"] == where["train_Fractured_0000.jpg"]
    # Stratified: 21 fractured and 14 not, each split near its share of each class.
    per_class = {s: dict(index.split(s).report.samples_per_class) for s in ALL_SPLITS}
    assert per_class["train"] == {"Fractured": 15, "Non_fractured": 10}, per_class
    assert all(per_class[s]["Fractured"] >= 2 and per_class[s]["Non_fractured"] >= 2 for s in ("valid", "test"))
    assert index.layout.split("test").declared_as.startswith("grouped split (seed 3")
    again = build_index(cfg, splits=ALL_SPLITS, cache_dir=tmp_path / "cache")
    assert [s.image_path for s in again.split("test").samples] == [s.image_path for s in index.split("test").samples]
    other_seed = build_index(fracatlas_config(fracatlas, split_csv=None, split_seed=4), splits=["test"], cache_dir=tmp_path / "cache")
    assert {s.image_path for s in other_seed.split("test").samples} != {s.image_path for s in index.split("test").samples}


def test_a_split_given_no_share_is_missing_and_bad_fractions_are_refused(fracatlas, tmp_path):
    shutil.rmtree(fracatlas / "Utilities")
    cfg = fracatlas_config(fracatlas, split_csv=None, split_fractions={"train": 0.8, "val": 0.2, "test": 0})
    index = build_index(cfg, splits=["train", "val"], cache_dir=tmp_path / "cache")
    assert sum(index.split(s).report.images_found for s in ("train", "valid")) == 34
    with pytest.raises(DatasetError, match="'test'.*no share"):
        index.layout.split("test")
    with pytest.raises(ValueError, match="sum to 1"):
        fracatlas_config(fracatlas, split_fractions={"train": 0.8, "valid": 0.3})


def test_folders_config_composes_and_refuses_unknown_keys(s1):
    cfg = compose_cfg("inspect_data", ["data=folders", f"data.root={s1}", "data.negative_class=not fractured"])
    data = DataConfig.from_mapping(cfg.data)
    assert (data.format, data.negative_class, data.split_seed) == ("folders", "not fractured", 0)
    bad = compose_cfg("inspect_data", ["data=folders", f"data.root={s1}", "+data.boxdir=x"])
    with pytest.raises(ValueError, match=r"data\.boxdir \(did you mean data\.boxes_dir\?\)"):
        DataConfig.from_mapping(bad.data)


@pytest.mark.parametrize("layout", ["splits", "classes"])
def test_inspect_data_reports_both_layouts(tmp_path, layout):
    if layout == "splits":
        root = generate_folders(tmp_path / "ds", FolderSpec())
        args = ["data.negative_class=not fractured"]
    else:
        root = generate_folders(tmp_path / "ds", FRACATLAS)
        (root / "images" / "Fractured" / "train_Fractured_0002.jpg").write_text("broken")
        args = ["data.negative_class=Non_fractured", "data.images_dir=images", f"data.boxes_dir={BOXES_DIR}",
                f"data.split_csv='{SPLIT_CSV}'"]
    out = tmp_path / "report"
    run = subprocess.run(
        [sys.executable, "scripts/inspect_data.py", "data=folders", f"data.root={root}", "data.min_instances=1",
         "splits=[train,valid,test]", f"out={out}", f"paths.cache_dir={tmp_path / 'cache'}", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"]["format"] == "folders"
    assert set(summary["splits"]) == set(ALL_SPLITS)
    positive = "fractured" if layout == "splits" else "Fractured"
    assert summary["classes"]["samples_per_class"]["test"][positive] == 4
    report = (out / "report.md").read_text()
    assert "class folders" in report and "## Leakage" in report
    if layout == "classes":
        assert summary["splits"]["train"]["bad_images"] == {probe.NOT_AN_IMAGE: 1}
        assert summary["accounting"]["splits"]["train"]["images_left_out"] == {"bad_image:not_an_image": 1}
        assert "train_Fractured_0002.jpg" in report and "csv " in report
