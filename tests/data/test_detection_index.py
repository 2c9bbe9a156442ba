"""Every box of an image reaches its Sample (YOLO boxes and polygons, COCO), and what the
`all` rule leaves out (dropped classes, boxes beyond max_boxes) is counted."""

import numpy as np
import pytest

from conftest import write_yolo_dataset
from fracture.data.accounting import data_accounting, format_accounting
from fracture.data.config import DataConfig
from fracture.data.index import NO_BOX, build_index

# names: a, b, rare. "rare" has 1 train instance and is dropped with min_instances=2.
LABELS = {
    # a box (a, area .16), a polygon (b, box .1-.3 x .1-.2), a small box (a, area .01)
    "m3": "0 0.5 0.5 0.4 0.4\n1 0.1 0.1 0.3 0.1 0.3 0.2 0.1 0.2\n0 0.8 0.8 0.1 0.1\n",
    # a triangle polygon of class b, and a box of the dropped class
    "m2": "1 0.6 0.6 0.9 0.6 0.9 0.9\n2 0.2 0.2 0.2 0.2\n",
    "b1": "1 0.5 0.5 0.2 0.2\n",
    "neg": "",
}
M3_BOXES = [(0.3, 0.3, 0.7, 0.7), (0.1, 0.1, 0.3, 0.2), (0.75, 0.75, 0.85, 0.85)]


@pytest.fixture
def multi_box(tmp_path):
    return write_yolo_dataset(tmp_path, ["a", "b", "rare"], {"train": LABELS})


def index_of(root, **kw):
    return build_index(DataConfig(root=str(root), min_instances=2, **kw), splits=["train"])


def by_stem(index):
    return {s.image_path.rsplit("/", 1)[-1].split(".")[0]: s for s in index.split("train").samples}


def test_all_rule_keeps_every_box_largest_first_and_the_largest_class(multi_box):
    index = index_of(multi_box, multi_object_rule="all")
    assert index.classes.class_names == ["a", "b", "no finding"]
    samples = by_stem(index)
    m3 = samples["m3"]
    np.testing.assert_allclose(m3.boxes, M3_BOXES, atol=1e-6)
    assert m3.box_classes == (0, 1, 0)
    assert (m3.class_id, m3.num_objects, m3.has_box) == (0, 3, True)
    np.testing.assert_allclose(m3.box, M3_BOXES[0], atol=1e-6)
    # The dropped class's box is neither kept nor relabelled as a kept class.
    m2 = samples["m2"]
    np.testing.assert_allclose(m2.boxes, [(0.6, 0.6, 0.9, 0.9)], atol=1e-6)
    assert m2.box_classes == (1,) and m2.class_id == 1
    neg = samples["neg"]
    assert (neg.boxes, neg.box_classes, neg.box, neg.class_id) == ((), (), NO_BOX, 2)
    report = index.split("train").report
    assert report.dropped_class_objects_on_used_images == 1
    assert report.images_over_max_boxes == 0 and report.accounted() == report.images_found


def test_all_rule_image_class_is_the_largest_box_not_the_first(tmp_path):
    labels = {"x": "0 0.1 0.1 0.1 0.1\n1 0.5 0.5 0.6 0.6\n", "a": "0 0.5 0.5 0.2 0.2\n", "b": "1 0.5 0.5 0.2 0.2\n"}
    root = write_yolo_dataset(tmp_path, ["a", "b"], {"train": labels})
    sample = by_stem(index_of(root, multi_object_rule="all"))["x"]
    assert sample.class_id == 1 and sample.box_classes == (1, 0)


def test_boxes_over_max_boxes_are_cut_keeping_the_largest_and_counted(multi_box):
    index = index_of(multi_box, multi_object_rule="all", max_boxes=2)
    m3 = by_stem(index)["m3"]
    np.testing.assert_allclose(m3.boxes, M3_BOXES[:2], atol=1e-6)
    assert m3.box_classes == (0, 1) and m3.num_objects == 3
    report = index.split("train").report
    assert (report.images_over_max_boxes, report.objects_over_max_boxes) == (1, 1)
    acc = data_accounting(index)
    train = acc["splits"]["train"]
    assert train["objects_over_max_boxes"] == 1 and train["images_over_max_boxes"] == 1
    assert train["objects_of_dropped_classes_on_used_images"] == 1
    assert train["objects_not_target"] == 0  # under "all" every other box is a target
    table = format_accounting(acc)
    assert "objects beyond data.max_boxes=2 on an image (the largest are kept) 1 (on 1 images)" in table
    assert "objects of dropped classes on used images (in no target; their regions train as background) 1" in table


def test_other_rules_fill_boxes_too_but_never_cut_them(multi_box):
    index = index_of(multi_box, multi_object_rule="first", max_boxes=1)
    m3 = by_stem(index)["m3"]
    np.testing.assert_allclose(m3.box, M3_BOXES[0], atol=1e-6)  # the first line
    assert len(m3.boxes) == 3 and m3.box_classes == (0, 1, 0)
    report = index.split("train").report
    assert report.objects_over_max_boxes == 0
    assert data_accounting(index)["splits"]["train"]["objects_not_target"] == 2


def test_coco_boxes_reach_the_sample_like_yolo_boxes(synthetic_root):
    coco = by_stem(index_of(synthetic_root, annotations="coco", multi_object_rule="all"))
    yolo = by_stem(index_of(synthetic_root, annotations="yolo", multi_object_rule="all"))
    multi = [stem for stem, s in coco.items() if len(s.boxes) > 1]
    assert multi, "the synthetic data has second fractures"
    compared = 0
    for stem, sample in coco.items():
        assert len(sample.boxes) == len(sample.box_classes) == sample.num_objects
        if sample.has_box and yolo[stem].has_box:  # YOLO files of some images are "lost"
            np.testing.assert_allclose(sample.boxes, yolo[stem].boxes, atol=0.01)
            assert sample.box_classes == yolo[stem].box_classes
            compared += 1
    assert compared > len(coco) // 3


def test_max_boxes_must_be_positive():
    with pytest.raises(ValueError, match="max_boxes"):
        DataConfig(root="x", max_boxes=0)
    with pytest.raises(ValueError, match="largest, first, union, all"):
        DataConfig(root="x", multi_object_rule="every")
