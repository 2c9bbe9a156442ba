"""A duplicate-proof re-split of an indexed dataset, written as ultralytics image lists.

Every decodable image of every indexed split is clustered (`duplicates.duplicate_groups`:
Roboflow source, identical pixels, confirmed near duplicate), and whole clusters are dealt
to new splits, stratified by the image-level class (`splitting.grouped_split`). The result
is `train.txt`, `valid.txt`, `test.txt` (absolute image paths, one per line) and a
`data.yaml` naming them; no image is copied, and labels stay beside their images.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from fracture.data.duplicates import duplicate_groups, duplicate_report
from fracture.data.index import DatasetIndex, ImageRecord, select_target
from fracture.data.leakage import augmentation_groups
from fracture.data.splitting import grouped_split

NO_FINDING = "(no finding)"


@dataclass
class Resplit:
    """A new split of a dataset's images.

    Attributes:
        files: split name -> image paths.
        strata: image path -> image-level class name (`NO_FINDING` without objects).
        groups: image path -> duplicate cluster id.
        skipped: image paths left out, with why (not decodable).
        coco_only: images whose objects came from a COCO file because their YOLO file is empty.
    """

    files: dict[str, list[str]]
    strata: dict[str, str]
    groups: dict[str, int]
    skipped: dict[str, str]
    coco_only: int


def image_class(record: ImageRecord, label_names: list[str], rule: str) -> str:
    """The image-level class a record would train with, before class filtering."""
    if not record.objects:
        return NO_FINDING
    return label_names[select_target(record.objects, rule).class_id]


def resplit_index(index: DatasetIndex, fractions: dict[str, float], seed: int, cache_dir: Path | None) -> Resplit:
    """Cluster every decodable image of `index` and deal whole clusters to `fractions`."""
    records = [r for s in index.splits.values() for r in s.records]
    used = [r for r in records if r.probe.ok]
    skipped = {str(r.image_path): f"not used: {r.probe.status}" for r in records if not r.probe.ok}
    paths = [str(r.image_path) for r in used]
    clusters = duplicate_groups([r.image_path for r in used], cache_dir)
    strata = [image_class(r, index.classes.label_names, index.config.multi_object_rule) for r in used]
    files = grouped_split(paths, strata, clusters, fractions, seed)
    return Resplit(
        files,
        dict(zip(paths, strata)),
        dict(zip(paths, clusters)),
        skipped,
        sum(r.source == "coco (yolo empty)" for r in used),
    )


def write_lists(result: Resplit, out: Path, names: list[str]) -> Path:
    """`<split>.txt` per split and a `data.yaml` pointing at them; returns the yaml path."""
    out.mkdir(parents=True, exist_ok=True)
    for split, files in result.files.items():
        (out / f"{split}.txt").write_text("".join(f"{Path(f).resolve()}\n" for f in files))
    spec = {("val" if s == "valid" else s): f"{s}.txt" for s in result.files}
    yaml_path = out / "data.yaml"
    yaml_path.write_text(yaml.safe_dump({"path": str(out.resolve()), **spec, "nc": len(names), "names": names},
                                        sort_keys=False))
    return yaml_path


def split_table(result: Resplit) -> dict[str, dict]:
    """Per split: images, duplicate clusters, images per class."""
    return {
        split: {
            "images": len(files),
            "groups": len({result.groups[f] for f in files}),
            "per_class": dict(sorted(Counter(result.strata[f] for f in files).items())),
        }
        for split, files in result.files.items()
    }


def verify(files: dict[str, list[str]], cache_dir: Path | None) -> dict:
    """The leakage checks the inspector runs, on the new lists: shared Roboflow groups,
    cross-split exact and near duplicates, and shared duplicate clusters. All should be 0."""
    shared = augmentation_groups(files)["groups_shared_between_splits"]
    dups = duplicate_report(files, cache_dir)
    return {
        "shared_roboflow_groups": {pair: shared.get(pair, 0) for pair in dups["counts"]["exact"]},
        "exact": dups["counts"]["exact"],
        "near": dups["counts"]["near"],
        "duplicates": dups,
    }
