"""The dataset index: every image of the requested splits, its annotations, and a report.

`build_index` is the one place that reads a dataset from disk. It:

1. resolves data.yaml (`layout.py`), lists images and label files per split;
2. probes every image once (`images.py`) and skips bad ones with a count;
3. parses YOLO labels (`labels.py`) and/or COCO JSON (`coco.py`) per `data.annotations`,
   cross-checking the two when both exist (`crosscheck.py`);
4. decides the classes from train instance counts (`classes.py`);
5. reduces each image to one image-level target (`select_target`), and keeps all its boxes
   of kept classes (`Sample.boxes`, largest first; at most `data.max_boxes` under
   `data.multi_object_rule=all`, the rest counted).

Every image found ends in exactly one bucket of `SplitReport` (used, bad image, no label
file, only dropped classes, negative dropped), so nothing is lost silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fracture.data import images as image_probe
from fracture.data.classes import ClassMapping, renamed_label_names
from fracture.data.coco import CocoAnnotations, read_coco
from fracture.data.config import DataConfig
from fracture.data.crosscheck import cross_check
from fracture.data.labels import Box, DroppedLine, LabelObject, read_label_file
from fracture.data.layout import DatasetError, DatasetLayout, canonical_split, find_coco_file, resolve_layout

NO_BOX: Box = (0.0, 0.0, 0.0, 0.0)
CATEGORY_NOT_IN_NAMES = "category_not_in_names"
MAX_EXAMPLES = 5


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
class ImageRecord:
    """Everything indexing knows about one image file (kept for reports and inspection).

    Attributes:
        image_path: the image file.
        label_path: its YOLO label file, or None when there is none.
        probe: result of the image probe.
        yolo: YOLO objects with *source* ids (None when no label file was read).
        coco: COCO objects (None when no COCO file covers the split).
        objects: objects used for training, with *label* ids, from the configured source.
        source: where `objects` came from: "yolo", "coco", "coco (yolo empty)" or "none".
    """

    image_path: Path
    label_path: Path | None
    probe: image_probe.ImageProbe
    yolo: list[LabelObject] | None = None
    coco: list | None = None
    objects: list[LabelObject] = field(default_factory=list)
    source: str = "none"
    unmapped_objects: int = 0


@dataclass
class SplitReport:
    """Counts for one split. Every image found lands in exactly one skip bucket or is used."""

    images_found: int = 0
    images_used: int = 0
    bad_images: Counter = field(default_factory=Counter)
    bad_image_examples: list[str] = field(default_factory=list)
    image_notes: Counter = field(default_factory=Counter)
    image_note_examples: dict[str, list[str]] = field(default_factory=dict)
    images_without_label_file: int = 0
    images_without_label_file_examples: list[str] = field(default_factory=list)
    labels_without_image: int = 0
    labels_without_image_examples: list[str] = field(default_factory=list)
    empty_labels: int = 0
    boxes: int = 0
    dropped_lines: Counter = field(default_factory=Counter)
    dropped_line_examples: dict[str, list[str]] = field(default_factory=dict)
    instances_before_filter: Counter = field(default_factory=Counter)
    instances_after_filter: Counter = field(default_factory=Counter)
    samples_per_class: Counter = field(default_factory=Counter)
    multi_object_images: int = 0
    multi_class_images: int = 0
    images_only_dropped_classes: int = 0
    # Objects of dropped classes on images that are used for their other objects: in no
    # target, so under multi_object_rule=all their regions train as background.
    dropped_class_objects_on_used_images: int = 0
    # multi_object_rule=all: images with more than data.max_boxes boxes, and the boxes cut.
    images_over_max_boxes: int = 0
    objects_over_max_boxes: int = 0
    negatives: int = 0
    negatives_dropped: int = 0
    filled_from_coco: int = 0
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    coco_file: str | None = None
    crosscheck: dict | None = None

    def add_dropped(self, dropped: list[DroppedLine]) -> None:
        for line in dropped:
            self.dropped_lines[line.reason] += 1
            examples = self.dropped_line_examples.setdefault(line.reason, [])
            if len(examples) < MAX_EXAMPLES:
                examples.append(f"{line.location}: {line.text}")

    def accounted(self) -> int:
        """Images that are used or sit in a skip bucket; equals `images_found` by design."""
        return (
            self.images_used
            + sum(self.bad_images.values())
            + self.images_without_label_file
            + self.images_only_dropped_classes
            + self.negatives_dropped
        )

    def size_stats(self) -> dict:
        if not self.widths:
            return {}
        w, h = np.asarray(self.widths), np.asarray(self.heights)
        long_side = np.maximum(w, h)
        return {
            "width": _stats(w),
            "height": _stats(h),
            "long_side": _stats(long_side),
            "long_side_over_1024": int((long_side > 1024).sum()),
        }

    def to_dict(self) -> dict:
        return {
            "images": self.images_found,
            "images_used": self.images_used,
            "empty_labels": self.empty_labels,
            "boxes": self.boxes,
            "dropped_lines": dict(self.dropped_lines),
            "dropped_line_examples": self.dropped_line_examples,
            "bad_images": dict(self.bad_images),
            "bad_image_examples": self.bad_image_examples,
            "image_notes": dict(self.image_notes),
            "image_note_examples": self.image_note_examples,
            "images_without_label_file": self.images_without_label_file,
            "images_without_label_file_examples": self.images_without_label_file_examples,
            "labels_without_image": self.labels_without_image,
            "labels_without_image_examples": self.labels_without_image_examples,
            "instances_before_filter": dict(self.instances_before_filter),
            "instances_after_filter": dict(self.instances_after_filter),
            "samples_per_class": dict(self.samples_per_class),
            "multi_object_images": self.multi_object_images,
            "multi_class_images": self.multi_class_images,
            "images_only_dropped_classes": self.images_only_dropped_classes,
            "dropped_class_objects_on_used_images": self.dropped_class_objects_on_used_images,
            "images_over_max_boxes": self.images_over_max_boxes,
            "objects_over_max_boxes": self.objects_over_max_boxes,
            "negatives": self.negatives,
            "negatives_dropped": self.negatives_dropped,
            "filled_from_coco": self.filled_from_coco,
            "image_size": self.size_stats(),
            "coco_file": self.coco_file,
        }


def _stats(values: np.ndarray) -> dict:
    return {
        "min": int(values.min()),
        "median": float(np.median(values)),
        "max": int(values.max()),
    }


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


def _read_split(
    cfg: DataConfig,
    layout: DatasetLayout,
    split: str,
    source_names: list[str],
    label_names: list[str],
    source_to_label: list[int],
    probe_cache: image_probe.ProbeCache,
) -> tuple[list[ImageRecord], SplitReport]:
    """Find, probe and annotate every image of one split (classes not yet filtered)."""
    paths = layout.split(split)
    report = SplitReport()
    image_files = image_probe.list_image_files(paths.images_dir)
    report.images_found = len(image_files)
    use_yolo = cfg.annotations in ("yolo", "merge")
    use_coco = cfg.annotations in ("coco", "merge")

    coco: CocoAnnotations | None = None
    coco_path = find_coco_file(layout, split, cfg.coco_file)
    if coco_path is not None:
        coco = read_coco(coco_path)
        report.coco_file = str(coco_path)
        if use_coco:  # in yolo mode the COCO file only feeds the cross-check
            report.add_dropped(coco.dropped)
    elif cfg.annotations == "coco":
        raise DatasetError(
            f"data.annotations=coco but no COCO file found for split {split!r} "
            f"(looked for {paths.images_dir / '_annotations.coco.json'} and "
            f"{layout.root / 'annotations_coco' / f'{split}_annotations.coco.json'}); "
            "set data.coco_file."
        )

    label_files = {}
    if paths.labels_dir.is_dir():
        label_files = {p.stem: p for p in paths.labels_dir.glob("*.txt")}
    image_stems = {p.stem for p in image_files}
    if use_yolo:
        orphans = sorted(set(label_files) - image_stems)
        report.labels_without_image = len(orphans)
        report.labels_without_image_examples = [str(label_files[s]) for s in orphans[:MAX_EXAMPLES]]

    probes = probe_cache.probe_all(image_files, cfg.max_image_pixels)
    label_id_of = {name: i for i, name in enumerate(label_names)}
    records: list[ImageRecord] = []
    for image_path, probe in zip(image_files, probes):
        record = ImageRecord(image_path, label_files.get(image_path.stem), probe)
        records.append(record)
        if not probe.ok:
            report.bad_images[probe.status] += 1
            if len(report.bad_image_examples) < 20:
                report.bad_image_examples.append(f"{image_path} ({probe.status})")
            continue
        for note in probe.notes:
            report.image_notes[note] += 1
            examples = report.image_note_examples.setdefault(note, [])
            if len(examples) < MAX_EXAMPLES:
                examples.append(str(image_path))
        report.widths.append(probe.width)
        report.heights.append(probe.height)
        if record.label_path is not None:
            record.yolo, dropped = read_label_file(
                record.label_path, len(source_names), cfg.max_coordinate_overshoot
            )
            report.add_dropped(dropped)
        if coco is not None and image_path.name in coco.objects:
            record.coco = coco.objects[image_path.name]

        yolo_objects = [
            LabelObject(source_to_label[o.class_id], o.box) for o in (record.yolo or [])
        ]
        coco_objects, unmapped = [], []
        for obj in (record.coco or []) if use_coco else []:
            if obj.category in label_id_of:
                coco_objects.append(LabelObject(label_id_of[obj.category], obj.box))
            else:
                unmapped.append(DroppedLine(report.coco_file or "", -1, CATEGORY_NOT_IN_NAMES, obj.category))

        if cfg.annotations == "coco":
            if record.coco is None:
                report.images_without_label_file += 1
                _example(report.images_without_label_file_examples, image_path)
                continue
            report.add_dropped(unmapped)
            record.objects, record.source, record.unmapped_objects = coco_objects, "coco", len(unmapped)
        else:
            if record.yolo is None:
                report.images_without_label_file += 1
                _example(report.images_without_label_file_examples, image_path)
                continue
            record.objects, record.source = yolo_objects, "yolo"
            if not record.yolo:
                report.empty_labels += 1
                if use_coco and record.coco:
                    report.add_dropped(unmapped)
                    record.objects, record.source = coco_objects, "coco (yolo empty)"
                    record.unmapped_objects = len(unmapped)
                    report.filled_from_coco += 1
        report.boxes += len(record.objects)
        for obj in record.objects:
            report.instances_before_filter[label_names[obj.class_id]] += 1
        if len(record.objects) > 1:
            report.multi_object_images += 1
            if len({o.class_id for o in record.objects}) > 1:
                report.multi_class_images += 1

    if coco is not None and label_files:
        report.crosscheck = _crosscheck_split(records, coco, source_names)
    return records, report


def _example(examples: list[str], path: Path) -> None:
    if len(examples) < MAX_EXAMPLES:
        examples.append(str(path))


def _crosscheck_split(records: list[ImageRecord], coco: CocoAnnotations, source_names: list[str]) -> dict:
    yolo = {
        r.image_path.name: [(source_names[o.class_id], o.box) for o in r.yolo]
        for r in records
        if r.yolo is not None
    }
    coco_objects = {r.image_path.name: r.coco or [] for r in records if r.probe.ok and r.image_path.name in coco.objects}
    return cross_check(yolo, coco_objects, coco.sizes)


def _finalize_split(
    name: str, records: list[ImageRecord], report: SplitReport, cfg: DataConfig, classes: ClassMapping
) -> SplitIndex:
    """Filter to kept classes; give each image its target and boxes (see `Sample`)."""
    label_to_class = classes.label_to_class()
    samples: list[Sample] = []
    for record in records:
        if not record.probe.ok or record.source == "none":
            continue
        kept = [
            LabelObject(label_to_class[o.class_id], o.box)
            for o in record.objects
            if o.class_id in label_to_class
        ]
        for obj in kept:
            report.instances_after_filter[classes.class_names[obj.class_id]] += 1
        if (record.objects or record.unmapped_objects) and not kept:
            # A finding of a dropped (or unnamed) class is not "no finding": leave it out.
            report.images_only_dropped_classes += 1
            continue
        if not kept:
            if classes.negative_id is None:
                report.negatives_dropped += 1
                continue
            report.negatives += 1
            sample = Sample(str(record.image_path), classes.negative_id, NO_BOX, False, 0)
        else:
            report.dropped_class_objects_on_used_images += len(record.objects) - len(kept)
            sample = _sample_with_boxes(record.image_path, kept, cfg, report)
        samples.append(sample)
        report.samples_per_class[classes.class_names[sample.class_id]] += 1
    report.images_used = len(samples)
    return SplitIndex(name, samples, records, report)


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


def source_class_names(cfg: DataConfig, layout: DatasetLayout) -> list[str]:
    """Class names in YOLO id order: `data.names`, else data.yaml, else (COCO-only) the
    categories the train COCO file uses."""
    if cfg.names:
        return list(cfg.names)
    if layout.names:
        return list(layout.names)
    coco_path = find_coco_file(layout, cfg.train_split, cfg.coco_file)
    if coco_path is None:
        raise DatasetError(
            f"No class names: {layout.root} has no {cfg.yaml} and no train COCO file; set data.names."
        )
    return read_coco(coco_path).used_category_names()


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
        cache_dir: where the image-probe cache lives; None probes without caching.

    Raises:
        DatasetError: a requested split or the dataset itself cannot be read.
    """
    layout = resolve_layout(cfg.root, cfg.yaml)
    requested = [canonical_split(s) for s in splits]
    source_names = classes.source_names if classes else source_class_names(cfg, layout)
    rename = classes.rename if classes else cfg.rename
    label_names, source_to_label = renamed_label_names(source_names, rename)
    cache = image_probe.ProbeCache(
        image_probe.cache_file_for(cache_dir, layout.root) if cache_dir else None
    )
    train = canonical_split(cfg.train_split)
    to_read = requested if classes is not None or train in requested else [train, *requested]
    raw = {
        split: _read_split(cfg, layout, split, source_names, label_names, source_to_label, cache)
        for split in to_read
    }
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
