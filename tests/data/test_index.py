import numpy as np
import pytest
from PIL import Image

from conftest import write_yolo_dataset
from fracture.data import images as probe
from fracture.data.classes import ClassMapping
from fracture.data.config import DataConfig
from fracture.data.index import NO_BOX, build_index, select_target
from fracture.data.labels import LabelObject

BOX = "0.5 0.5 0.2 0.2"


def many(cls, n, prefix):
    return {f"{prefix}{i}": f"{cls} {BOX}\n" for i in range(n)}


@pytest.fixture
def three_class(tmp_path):
    """Train instances: common 5, other 4, rare 3; one image carries two classes."""
    train = {**many(0, 4, "a"), **many(1, 3, "b"), **many(2, 2, "r"), "neg0": "", "neg1": "", "nolabel": None}
    train["multi"] = f"0 {BOX}\n1 0.2 0.2 0.1 0.1\n"  # a large class-0 box, a small class-1 box
    train["onlyrare"] = f"2 {BOX}\n"
    valid = {**many(0, 2, "va"), "vneg": "", "vrare": f"2 {BOX}\n"}
    return write_yolo_dataset(tmp_path, ["common", "other", "rare"], {"train": train, "valid": valid})


def test_rare_class_dropped_ids_remapped_and_every_image_accounted(three_class):
    index = build_index(DataConfig(root=str(three_class), min_instances=4))
    assert index.classes.kept == ["common", "other"]
    assert index.classes.dropped == {"rare": 3}
    assert index.classes.class_names == ["common", "other", "no finding"]
    train = index.split("train")
    report = train.report
    assert report.images_found == 14
    assert report.images_without_label_file == 1
    assert report.images_only_dropped_classes == 3  # r0, r1, onlyrare
    assert report.negatives == 2 and report.empty_labels == 2
    assert report.multi_object_images == 1 and report.multi_class_images == 1
    assert report.accounted() == report.images_found
    assert {s.class_id for s in train.samples} == {0, 1, 2}
    assert all(s.box == NO_BOX and not s.has_box for s in train.samples if s.class_id == 2)
    valid = index.split("valid").report
    assert valid.images_only_dropped_classes == 1 and valid.accounted() == valid.images_found


def test_negatives_drop_mode_has_no_no_finding_class(three_class):
    index = build_index(DataConfig(root=str(three_class), min_instances=4, negatives="drop"))
    assert index.classes.class_names == ["common", "other"]
    assert index.split("train").report.negatives_dropped == 2


def test_saved_mapping_is_applied_unchanged(three_class, tmp_path):
    first = build_index(DataConfig(root=str(three_class), min_instances=4))
    first.classes.save(tmp_path / "classes.json")
    loaded = ClassMapping.load(tmp_path / "classes.json")
    assert loaded == first.classes
    # A different min_instances in the config must not change a model's saved classes.
    again = build_index(DataConfig(root=str(three_class), min_instances=1), splits=["valid"], classes=loaded)
    assert again.classes.class_names == first.classes.class_names
    assert list(again.splits) == ["valid"]


def test_rename_swaps_and_merges(three_class):
    swapped = build_index(DataConfig(root=str(three_class), min_instances=1, rename={"common": "other", "other": "common"}))
    assert swapped.classes.label_names == ["other", "common", "rare"]
    merged = build_index(DataConfig(root=str(three_class), min_instances=1, rename={"rare": "other"}))
    assert merged.classes.label_names == ["common", "other"]
    with pytest.raises(ValueError, match="not class names"):
        build_index(DataConfig(root=str(three_class), rename={"typo": "x"}))


@pytest.mark.parametrize(
    "rule, expected",
    [("largest", (1, (0.0, 0.0, 0.5, 0.5))), ("first", (0, (0.6, 0.6, 0.7, 0.7))), ("union", (1, (0.0, 0.0, 0.9, 0.9)))],
)
def test_multi_object_rules(rule, expected):
    objects = [
        LabelObject(0, (0.6, 0.6, 0.7, 0.7)),
        LabelObject(1, (0.0, 0.0, 0.5, 0.5)),
        LabelObject(1, (0.8, 0.8, 0.9, 0.9)),
    ]
    target = select_target(objects, rule)
    assert (target.class_id, target.box) == expected


def test_bad_images_skipped_and_counted_unusual_ones_kept(tmp_path):
    labels = {f"ok{i}": f"0 {BOX}\n" for i in range(3)}
    labels.update({k: f"0 {BOX}\n" for k in ("truncated", "text", "gray16", "gray", "cmyk")})
    root = write_yolo_dataset(tmp_path, ["x"], {"train": labels})
    images = root / "train" / "images"
    noisy = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(images / "truncated.jpg", quality=95)
    data = (images / "truncated.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(data[: int(len(data) * 0.7)])
    (images / "text.jpg").write_text("not an image")
    for stem in ("gray16", "gray", "cmyk"):
        (images / f"{stem}.jpg").unlink()
    Image.fromarray((np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16)).save(images / "gray16.png")
    Image.fromarray(np.full((48, 64), 100, np.uint8)).save(images / "gray.png")
    Image.new("CMYK", (64, 48), (0, 50, 100, 0)).save(images / "cmyk.jpg")

    index = build_index(DataConfig(root=str(root), min_instances=1), splits=["train"], cache_dir=tmp_path / "cache")
    report = index.split("train").report
    assert dict(report.bad_images) == {probe.TRUNCATED: 1, probe.NOT_AN_IMAGE: 1}
    assert report.image_notes[probe.GRAYSCALE] == 2
    assert report.image_notes[probe.HIGH_BIT_DEPTH] == 1
    assert report.image_notes[probe.CMYK] == 1
    assert report.images_used == 6
    assert report.accounted() == report.images_found == 8
    # The probe cache makes the second indexing skip decoding, with identical results.
    again = build_index(DataConfig(root=str(root), min_instances=1), splits=["train"], cache_dir=tmp_path / "cache")
    assert again.split("train").report.bad_images == report.bad_images


def test_too_large_images_are_skipped_without_decoding(tmp_path):
    root = write_yolo_dataset(tmp_path, ["x"], {"train": {"a": f"0 {BOX}\n", "b": f"0 {BOX}\n"}}, image_size=(40, 40))
    Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(root / "train" / "images" / "b.jpg")
    index = build_index(DataConfig(root=str(root), min_instances=1, max_image_pixels=2000), splits=["train"])
    assert dict(index.split("train").report.bad_images) == {probe.TOO_LARGE: 1}


def test_labels_without_images_are_reported(tmp_path):
    root = write_yolo_dataset(tmp_path, ["x"], {"train": {"a": f"0 {BOX}\n"}})
    (root / "train" / "labels" / "ghost.txt").write_text(f"0 {BOX}\n")
    report = build_index(DataConfig(root=str(root), min_instances=1), splits=["train"]).split("train").report
    assert report.labels_without_image == 1
    assert report.labels_without_image_examples[0].endswith("ghost.txt")
