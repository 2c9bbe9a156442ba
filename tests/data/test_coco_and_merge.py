import json

from fracture.data.coco import parse_coco
from fracture.data.config import DataConfig
from fracture.data.crosscheck import cross_check
from fracture.data.index import build_index


def test_coco_is_read_by_category_name_with_pixel_boxes_normalized():
    data = {
        "categories": [{"id": 0, "name": "bones"}, {"id": 5, "name": "wrist"}],
        "images": [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 100}, {"id": 2, "file_name": "b.jpg", "width": 10, "height": 10}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "bbox": [20, 10, 100, 50]},
            {"id": 2, "image_id": 1, "category_id": 9, "bbox": [0, 0, 1, 1]},
            {"id": 3, "image_id": 1, "category_id": 5, "bbox": [0, 0, 0, 5]},
            {"id": 4, "image_id": 7, "category_id": 5, "bbox": [0, 0, 1, 1]},
        ],
    }
    coco = parse_coco(data, "x.json")
    assert [o.category for o in coco.objects["a.jpg"]] == ["wrist"]
    assert coco.objects["a.jpg"][0].box == (0.1, 0.1, 0.6, 0.6)
    assert coco.objects["b.jpg"] == []
    assert sorted(d.reason for d in coco.dropped) == ["unknown_category_id", "unknown_image_id", "zero_area"]
    assert coco.used_category_names() == ["wrist"]


def test_merge_fills_empty_yolo_files_from_coco(synthetic_root):
    yolo = build_index(DataConfig(root=str(synthetic_root), annotations="yolo", min_instances=5))
    merged = build_index(DataConfig(root=str(synthetic_root), annotations="merge", min_instances=5))
    coco_only = build_index(DataConfig(root=str(synthetic_root), annotations="coco", min_instances=5))
    y, m, c = (i.split("train").report for i in (yolo, merged, coco_only))
    lost = y.crosscheck["yolo_empty_coco_annotated"]
    assert lost > 0
    assert m.filled_from_coco == lost
    assert m.negatives == y.negatives - lost == c.negatives
    assert m.boxes == c.boxes
    assert m.accounted() == m.images_found


def test_crosscheck_finds_swapped_names_on_synthetic(synthetic_root, tmp_path):
    # Swap two names in a copy of data.yaml's view: the COCO names then disagree.
    names = json.loads(json.dumps(build_index(DataConfig(root=str(synthetic_root), min_instances=1)).classes.source_names))
    swapped = names.copy()
    swapped[0], swapped[1] = names[1], names[0]
    index = build_index(DataConfig(root=str(synthetic_root), min_instances=1, names=swapped))
    check = index.split("train").report.crosscheck
    assert check["name_agreement"][swapped[0]] == {names[0]: check["name_agreement"][swapped[0]][names[0]]}
    assert check["rename_suggestions"] == {swapped[0]: names[0], swapped[1]: names[1]}
    assert check["box_agreement"]["within_tolerance"] == check["box_agreement"]["compared"] > 0


def test_crosscheck_flags_a_moved_box():
    from fracture.data.coco import CocoObject

    yolo = {"a.jpg": [("x", (0.1, 0.1, 0.5, 0.5))]}
    coco = {"a.jpg": [CocoObject("x", (0.0, 0.0, 0.0, 0.0), (10.0, 10.0, 40.0, 30.0))]}
    check = cross_check(yolo, coco, {"a.jpg": (100, 100)})
    assert check["box_agreement"]["within_tolerance"] == 0
    assert check["box_agreement"]["exceptions"][0]["max_corner_diff_px"] == 10.0


def test_coco_box_of_an_unnamed_category_does_not_make_a_negative(tmp_path):
    from conftest import write_yolo_dataset

    root = write_yolo_dataset(tmp_path, ["x"], {"train": {"a": "0 0.5 0.5 0.2 0.2\n", "b": "", "c": ""}})
    coco = {
        "categories": [{"id": 1, "name": "x"}, {"id": 2, "name": "unlisted"}],
        "images": [{"id": i, "file_name": f"{s}.jpg", "width": 64, "height": 48} for i, s in enumerate("abc")],
        "annotations": [
            {"id": 1, "image_id": 0, "category_id": 1, "bbox": [20, 14, 12, 10]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [5, 5, 10, 10]},
        ],
    }
    (root / "train" / "_annotations.coco.json").write_text(json.dumps(coco))
    report = build_index(DataConfig(root=str(root), annotations="merge", min_instances=1), splits=["train"]).split("train").report
    assert report.negatives == 1  # only c
    assert report.images_only_dropped_classes == 1  # b
    assert report.dropped_lines["category_not_in_names"] == 1
    assert report.accounted() == 3
