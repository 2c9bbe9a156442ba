"""What every dataset reader yields: one `ImageRecord` per image file and a `SplitReport`.

A dataset format is one reader module (`yolo.py` for YOLO and COCO exports, `folders.py`
for folder-per-class datasets) that turns files into these records and counts; `index.py`
only merges them (classes from train counts, one target per image). Keeping the record
types here, below both readers and the index, lets a new format be added without touching
the merging, and without an import cycle.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fracture.data import images as image_probe
from fracture.data.labels import DroppedLine, LabelObject

MAX_EXAMPLES = 5

# Why a name a split listing gives (an image list line, a split csv row, a file in a
# folder-per-class tree) did not become an image found. Keys of `SplitReport.listing_problems`.
LISTED_FILE_MISSING = "listed_file_missing"      # a list/csv line names no existing file
LISTED_TWICE = "listed_twice"                    # the same image named again in one split
AMBIGUOUS_NAME = "ambiguous_name"                # a csv name found in several class folders
STRAY_FILE = "stray_file"                        # a file the folder layout does not place
LISTING_PROBLEMS = {
    LISTED_FILE_MISSING: "named by the split listing, but no such file",
    LISTED_TWICE: "named more than once in the split listing (read once)",
    AMBIGUOUS_NAME: "name found in more than one class folder (class unknown, left out)",
    STRAY_FILE: "not at <class>/<image> depth, or not an image file (left out)",
}


@dataclass(frozen=True)
class ClassNames:
    """The class-name spaces a reader needs (see `fracture.data.classes`).

    Attributes:
        source_names: names as the dataset gives them (data.yaml order, or class folders).
        label_names: source names after `data.rename`.
        source_to_label: label id of every source id.
    """

    source_names: list[str]
    label_names: list[str]
    source_to_label: list[int]


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
        source: where `objects` came from: "yolo", "coco", "coco (yolo empty)", "folder"
            or "none" (not usable: a bad image or no annotation).
        unmapped_objects: COCO objects of categories not in the class names.
        image_class: label id of the image-level class when the dataset gives one apart
            from boxes (a folder-per-class dataset: the class folder), None otherwise
            (YOLO: the class comes from the objects; a "no finding" folder: negative).
    """

    image_path: Path
    label_path: Path | None
    probe: image_probe.ImageProbe
    yolo: list[LabelObject] | None = None
    coco: list | None = None
    objects: list[LabelObject] = field(default_factory=list)
    source: str = "none"
    unmapped_objects: int = 0
    image_class: int | None = None


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
    # Names a split listing gave that did not become an image found (see LISTING_PROBLEMS):
    # not in `images_found`, so they sit outside the image buckets, counted and named here.
    listing_problems: Counter = field(default_factory=Counter)
    listing_problem_examples: dict[str, list[str]] = field(default_factory=dict)
    # Folder datasets with data.boxes_dir: positive-class images without any box. They
    # train the classifier (box loss masked); under multi_object_rule=all they are left
    # out (`positives_without_boxes_dropped`): as all-background images they would teach
    # the detector to miss the finding they are known to have.
    positives_without_boxes: int = 0
    positives_without_boxes_examples: list[str] = field(default_factory=list)
    positives_without_boxes_dropped: int = 0

    def add_listing_problem(self, reason: str, what: str | Path) -> None:
        self.listing_problems[reason] += 1
        examples = self.listing_problem_examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(str(what))

    def add_probe(self, path: Path, probe: image_probe.ImageProbe) -> bool:
        """Count one probed image (skip bucket, notes, size); True when it is usable."""
        if not probe.ok:
            self.bad_images[probe.status] += 1
            if len(self.bad_image_examples) < 20:
                self.bad_image_examples.append(f"{path} ({probe.status})")
            return False
        for note in probe.notes:
            self.image_notes[note] += 1
            examples = self.image_note_examples.setdefault(note, [])
            if len(examples) < MAX_EXAMPLES:
                examples.append(str(path))
        self.widths.append(probe.width)
        self.heights.append(probe.height)
        return True

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
            + self.positives_without_boxes_dropped
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
            "listing_problems": dict(self.listing_problems),
            "listing_problem_examples": self.listing_problem_examples,
            "positives_without_boxes": self.positives_without_boxes,
            "positives_without_boxes_examples": self.positives_without_boxes_examples,
            "positives_without_boxes_dropped": self.positives_without_boxes_dropped,
        }


def _stats(values: np.ndarray) -> dict:
    return {
        "min": int(values.min()),
        "median": float(np.median(values)),
        "max": int(values.max()),
    }


def example(examples: list[str], path: Path) -> None:
    if len(examples) < MAX_EXAMPLES:
        examples.append(str(path))
