"""The dataset index: every image of the requested splits, its annotations, and a report.

`build_index` is the one entry point that reads a dataset from disk. Reading is done by
one reader per dataset format (`data.format`), each yielding the same `ImageRecord`s and
`SplitReport` counts (`records.py`):

* `yolo.py`: YOLO exports, their COCO files, and image-list splits (`train: train.txt`);
* `folders.py`: folder-per-class datasets (`<root>/<split>/<class>/*`, `<root>/<class>/*`).

This module only merges what they read:

1. decides the classes from train instance counts (`classes.py`);
2. reduces each image to one image-level target (`select_target`), and keeps all its boxes
   of kept classes (`Sample.boxes`, largest first; at most `data.max_boxes` under
   `data.multi_object_rule=all`, the rest counted).

Every image found ends in exactly one bucket of `SplitReport` (used, bad image, no label
file, only dropped classes, negative dropped, positive without boxes), so nothing is lost
silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fracture.data import images as image_probe
from fracture.data.classes import ClassMapping, renamed_label_names
from fracture.data.config import DataConfig
from fracture.data.folders import FolderReader
from fracture.data.labels import Box, LabelObject
from fracture.data.layout import DatasetError, DatasetLayout, canonical_split
from fracture.data.records import ClassNames, ImageRecord, SplitReport
from fracture.data.yolo import YoloReader

NO_BOX: Box = (0.0, 0.0, 0.0, 0.0)
__all__ = ["NO_BOX", "DatasetIndex", "ImageRecord", "Sample", "SplitIndex", "SplitReport", "build_index"]


@dataclass(frozen=True)
class Sample:
    """One image, its image-level target and all its boxes, ready for the tf.data pipeline.

    Attributes:
        image_path: the image file.
        class_id: index into `ClassMapping.class_names`.
        box: normalized xyxy box; `NO_BOX` for negatives.
        has_box: False for "no finding" negatives, whose box loss is masked.
        num_objects: objects of kept classes on the image before reduction to one target.
        boxes: every box of a kept class, normalized xyxy in the original image frame,
            largest first (so a cut to `data.max_boxes` keeps the largest). Empty for
            negatives. Objects of dropped classes are not here (counted in
            `SplitReport.dropped_class_objects_on_used_images`).
        box_classes: the class id (into `ClassMapping.class_names`) of each of `boxes`.
    """

    image_path: str
    class_id: int
    box: Box
    has_box: bool
    num_objects: int = 0
    boxes: tuple[Box, ...] = ()
    box_classes: tuple[int, ...] = ()


@dataclass
class SplitIndex:
    """One split: its samples (what trains) and records (what was found)."""

    name: str
    samples: list[Sample]
    records: list[ImageRecord]
    report: SplitReport


@dataclass
class DatasetIndex:
    """All requested splits of a dataset, with the class mapping they were built with."""

    config: DataConfig
    layout: DatasetLayout
    classes: ClassMapping
    splits: dict[str, SplitIndex]

    def split(self, name: str) -> SplitIndex:
        name = canonical_split(name)
        if name not in self.splits:
            raise DatasetError(f"Split {name!r} was not indexed; indexed: {sorted(self.splits)}.")
        return self.splits[name]


def select_target(objects: list[LabelObject], rule: str) -> LabelObject:
    """Reduce the objects of one image to its image-level target.

    Args:
        objects: at least one object.
        rule: "largest" (the largest box and its class), "first" (the first line),
            "union" (the class of the largest box, and the box enclosing every box of
            that class), or "all" (as "largest").

    Under "all" every box trains the detector, and this target only feeds the jointly
    trained image-level class head. It is the largest box's class because the largest
    finding is the one most visible at the image level, and because it gives an image
    the same image-level label as the "largest" rule, so classifier and detector runs
    are scored on the same image labels.
    """
    if rule == "first":
        return objects[0]
    largest = max(objects, key=lambda o: o.area)
    if rule in ("largest", "all"):
        return largest
    if rule == "union":
        same = [o.box for o in objects if o.class_id == largest.class_id]
        return LabelObject(
            largest.class_id,
            (min(b[0] for b in same), min(b[1] for b in same), max(b[2] for b in same), max(b[3] for b in same)),
        )
    raise ValueError(f"Unknown multi-object rule {rule!r}.")


def largest_first(objects: list[LabelObject], max_boxes: int | None) -> tuple[list[LabelObject], int]:
    """The objects sorted largest box first (ties keep file order), cut to `max_boxes`.

    Returns:
        The kept objects and how many were cut (0 when `max_boxes` is None).
    """
    ordered = sorted(objects, key=lambda o: -o.area)
    if max_boxes is None or len(ordered) <= max_boxes:
        return ordered, 0
    return ordered[:max_boxes], len(ordered) - max_boxes


def _finalize_split(
    name: str, records: list[ImageRecord], report: SplitReport, cfg: DataConfig, classes: ClassMapping
) -> SplitIndex:
    """Filter to kept classes; give each image its target and boxes (see `Sample`)."""
    samples: list[Sample] = []
    for record in records:
        if not record.probe.ok or record.source == "none":
            continue
        if record.image_class is None:
            sample = _sample_from_objects(record, cfg, classes, report)
        else:
            sample = _sample_of_class_folder(record, cfg, classes, report)
        if sample is None:
            continue
        samples.append(sample)
        report.samples_per_class[classes.class_names[sample.class_id]] += 1
    report.images_used = len(samples)
    return SplitIndex(name, samples, records, report)


def _sample_from_objects(record: ImageRecord, cfg: DataConfig, classes: ClassMapping, report: SplitReport) -> Sample | None:
    """An image whose class comes from its objects (YOLO, COCO): objects of kept classes
    make the target; no object at all makes a negative; None = left out (counted)."""
    label_to_class = classes.label_to_class()
    kept = [LabelObject(label_to_class[o.class_id], o.box) for o in record.objects if o.class_id in label_to_class]
    for obj in kept:
        report.instances_after_filter[classes.class_names[obj.class_id]] += 1
    if (record.objects or record.unmapped_objects) and not kept:
        # A finding of a dropped (or unnamed) class is not "no finding": leave it out.
        report.images_only_dropped_classes += 1
        return None
    if not kept:
        if classes.negative_id is None:
            report.negatives_dropped += 1
            return None
        report.negatives += 1
        return Sample(str(record.image_path), classes.negative_id, NO_BOX, False, 0)
    report.dropped_class_objects_on_used_images += len(record.objects) - len(kept)
    return _sample_with_boxes(record.image_path, kept, cfg, report)


def _sample_of_class_folder(record: ImageRecord, cfg: DataConfig, classes: ClassMapping, report: SplitReport) -> Sample | None:
    """An image whose class is given apart from boxes (its class folder): one instance of
    that class, with its boxes when it has some (all of the folder's class), else a sample
    with the box loss masked. None = left out (counted): its class was dropped, or it has
    no box under multi_object_rule=all (see `SplitReport.positives_without_boxes`)."""
    class_id = classes.label_to_class().get(record.image_class)
    if class_id is None:
        report.images_only_dropped_classes += 1
        return None
    report.instances_after_filter[classes.class_names[class_id]] += 1
    if record.objects:
        return _sample_with_boxes(record.image_path, [LabelObject(class_id, o.box) for o in record.objects], cfg, report)
    if cfg.multi_object_rule == "all":
        report.positives_without_boxes_dropped += 1
        return None
    return Sample(str(record.image_path), class_id, NO_BOX, False, 0)


def _sample_with_boxes(image_path: Path, kept: list[LabelObject], cfg: DataConfig, report: SplitReport) -> Sample:
    """The sample of an image with objects: its one target, and its boxes (under rule
    "all" cut to `data.max_boxes`, largest kept, the cut counted in `report`)."""
    target = select_target(kept, cfg.multi_object_rule)
    cap = cfg.max_boxes if cfg.multi_object_rule == "all" else None
    boxes, cut = largest_first(kept, cap)
    if cut:
        report.images_over_max_boxes += 1
        report.objects_over_max_boxes += cut
    return Sample(
        str(image_path),
        target.class_id,
        target.box,
        True,
        len(kept),
        boxes=tuple(o.box for o in boxes),
        box_classes=tuple(o.class_id for o in boxes),
    )


class DatasetReader(Protocol):
    """What `build_index` needs from a dataset format's reader (`yolo.py`, `folders.py`).

    Attributes:
        layout: the resolved dataset, for reports (root, notes, splits missing).
    """

    layout: DatasetLayout

    def source_names(self) -> list[str]:
        """Class names as the dataset gives them, in id order."""

    def read_split(
        self, split: str, names: ClassNames, probe_cache: image_probe.ProbeCache
    ) -> tuple[list[ImageRecord], SplitReport]:
        """Every image of one split, probed and annotated with label ids (classes not yet
        filtered), and its counts."""


def reader_for(cfg: DataConfig, cache_dir: str | Path | None = None) -> DatasetReader:
    """The reader of `data.format`."""
    if cfg.format == "folders":
        return FolderReader(cfg, cache_dir)
    return YoloReader(cfg)


def build_index(
    cfg: DataConfig,
    splits: tuple[str, ...] | list[str] = ("train", "valid"),
    classes: ClassMapping | None = None,
    cache_dir: str | Path | None = None,
) -> DatasetIndex:
    """Read and index the requested splits of the dataset `cfg` describes.

    Args:
        cfg: the data config.
        splits: split names to index (aliases such as "val" are accepted).
        classes: a saved mapping (from a trained run) to apply instead of deriving one from
            the train split; evaluation passes the model's own mapping here.
        cache_dir: where the image-probe cache (and a reader's own caches) live; None
            probes without caching.

    Raises:
        DatasetError: a requested split or the dataset itself cannot be read.
    """
    reader = reader_for(cfg, cache_dir)
    layout = reader.layout
    requested = [canonical_split(s) for s in splits]
    source_names = classes.source_names if classes else reader.source_names()
    rename = classes.rename if classes else cfg.rename
    names = ClassNames(source_names, *renamed_label_names(source_names, rename))
    cache = image_probe.ProbeCache(
        image_probe.cache_file_for(cache_dir, layout.root) if cache_dir else None
    )
    train = canonical_split(cfg.train_split)
    to_read = requested if classes is not None or train in requested else [train, *requested]
    raw = {split: reader.read_split(split, names, cache) for split in to_read}
    cache.save()
    if classes is None:
        classes = ClassMapping.from_counts(
            source_names,
            rename,
            raw[train][1].instances_before_filter,
            cfg.min_instances,
            cfg.negative_class if cfg.negatives == "keep" else None,
        )
    if not classes.kept:
        raise DatasetError(
            f"No class of {layout.root} has data.min_instances={cfg.min_instances} train instances."
        )
    splits_out = {
        split: _finalize_split(split, *raw[split], cfg, classes) for split in requested
    }
    return DatasetIndex(cfg, layout, classes, splits_out)

