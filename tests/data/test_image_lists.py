"""Image-list splits (`train: train.txt`, the ultralytics convention scripts/resplit.py
writes): images read in place from any folder, labels beside them, bad lines counted."""

import yaml

from conftest import write_yolo_dataset
from fracture.data.config import DataConfig
from fracture.data.index import build_index
from fracture.data.layout import read_image_list, resolve_layout
from fracture.data.records import LISTED_FILE_MISSING, LISTED_TWICE

BOX = "0.5 0.5 0.2 0.2"


def write_lists(out, lists: dict[str, list[str]], names, **extra):
    out.mkdir(parents=True, exist_ok=True)
    for split, lines in lists.items():
        (out / f"{split}.txt").write_text("".join(f"{line}\n" for line in lines))
    spec = {("val" if s == "valid" else s): f"{s}.txt" for s in lists}
    (out / "data.yaml").write_text(yaml.safe_dump({**spec, "names": names, **extra}))
    return out


def test_list_lines_resolve_against_the_yaml_folder_and_bad_lines_are_named(tmp_path):
    (tmp_path / "ds").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "ds" / name).write_bytes(b"x")
    lines = ["# a comment", "", "../ds/a.jpg", "../ds/missing.jpg", "  ../ds/a.jpg  ", str(tmp_path / "ds" / "b.jpg")]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train.txt").write_text("\n".join(lines) + "\n")
    listed = read_image_list(tmp_path / "out" / "train.txt", tmp_path / "out")
    assert [p.name for p in listed.paths] == ["a.jpg", "b.jpg"]
    assert listed.missing == [f"{tmp_path / 'out' / 'train.txt'}:4: ../ds/missing.jpg"]
    assert listed.repeated == [f"{tmp_path / 'out' / 'train.txt'}:5: ../ds/a.jpg"]


def test_list_splits_read_images_and_labels_in_place_across_source_folders(tmp_path):
    names = ["x", "y"]
    ds = write_yolo_dataset(
        tmp_path / "ds", names,
        {"train": {"t0": f"0 {BOX}\n", "t1": f"1 {BOX}\n", "tneg": ""}, "valid": {"v0": f"1 {BOX}\n", "v1": f"0 {BOX}\n"}},
    )
    out = write_lists(
        tmp_path / "resplit",
        {
            # a re-split moves v0 into train and t1 into valid
            "train": ["../ds/train/images/t0.jpg", "../ds/train/images/tneg.jpg", "../ds/valid/images/v0.jpg",
                      "../ds/train/images/gone.jpg"],
            "valid": ["# moved", "../ds/train/images/t1.jpg", "../ds/valid/images/v1.jpg", "../ds/valid/images/v1.jpg"],
        },
        names,
    )
    layout = resolve_layout(out)
    assert layout.split("train").list_file == out / "train.txt"
    index = build_index(DataConfig(root=str(out), min_instances=1))
    train, valid = index.split("train"), index.split("valid")
    assert sorted(s.image_path.rsplit("/", 1)[-1] for s in train.samples) == ["t0.jpg", "tneg.jpg", "v0.jpg"]
    by_name = {s.image_path.rsplit("/", 1)[-1]: s for s in train.samples + valid.samples}
    assert by_name["v0.jpg"].class_id == 1 and by_name["t1.jpg"].class_id == 1  # labels found beside each image
    assert by_name["tneg.jpg"].class_id == index.classes.negative_id
    assert train.report.listing_problems == {LISTED_FILE_MISSING: 1}
    assert train.report.listing_problem_examples[LISTED_FILE_MISSING] == [f"{out / 'train.txt'}:4: ../ds/train/images/gone.jpg"]
    assert valid.report.listing_problems == {LISTED_TWICE: 1}
    # The shared label folders hold other lists' labels: those are not orphans.
    assert train.report.labels_without_image == 0 == valid.report.labels_without_image
    assert train.report.accounted() == train.report.images_found == 3
    assert ds.is_dir()


def test_list_splits_take_coco_boxes_from_beside_the_listed_folders(synthetic_root, tmp_path):
    """merge mode on a re-split: a list mixing both export splits fills exactly the empty
    YOLO files that the per-folder indexing fills, from each folder's own COCO file."""
    per_folder = build_index(DataConfig(root=str(synthetic_root), annotations="merge", min_instances=5))
    every = sorted(str(p) for split in ("train", "valid") for p in (synthetic_root / split / "images").glob("*.jpg"))
    names = yaml.safe_load((synthetic_root / "data.yaml").read_text())["names"]
    out = write_lists(tmp_path / "lists", {"train": every}, names)
    listed = build_index(DataConfig(root=str(out), annotations="merge", min_instances=5), splits=["train"])
    report = listed.split("train").report
    filled = sum(per_folder.split(s).report.filled_from_coco for s in ("train", "valid"))
    assert filled > 0 and report.filled_from_coco == filled
    assert report.images_found == len(every) and report.accounted() == len(every)
