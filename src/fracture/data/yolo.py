"""The YOLO reader: a YOLO export (and the COCO file beside it) as `ImageRecord`s.

One of the index's readers (see `records.py`). Per split it lists the images (a folder,
or an image list such as `train.txt`), pairs each with its YOLO label file, probes it,
parses its labels (`labels.py`) and/or COCO objects (`coco.py`) per `data.annotations`,
and cross-checks the two when both exist (`crosscheck.py`). Classes are not filtered
here: `index.py` decides them from the train counts and merges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fracture.data import images as image_probe
from fracture.data.coco import CocoAnnotations, read_coco
from fracture.data.config import DataConfig
from fracture.data.crosscheck import cross_check
from fracture.data.labels import DroppedLine, LabelObject, read_label_file
from fracture.data.layout import (
    DatasetError,
    SplitPaths,
    coco_file_beside,
    find_coco_file,
    labels_dir_for,
    read_image_list,
    resolve_layout,
)
from fracture.data.records import (
    LISTED_FILE_MISSING,
    LISTED_TWICE,
    MAX_EXAMPLES,
    ClassNames,
    ImageRecord,
    SplitReport,
    example,
)

CATEGORY_NOT_IN_NAMES = "category_not_in_names"


@dataclass
class SplitFiles:
    """The image files of one split and the YOLO label file of each (None: none found)."""

    images: list[Path] = field(default_factory=list)
    labels: list[Path | None] = field(default_factory=list)


class YoloReader:
    """Reads a YOLO (and/or Roboflow COCO) export described by data.yaml."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.layout = resolve_layout(cfg.root, cfg.yaml)

    def source_names(self) -> list[str]:
        """Class names in YOLO id order: `data.names`, else data.yaml, else (COCO-only) the
        categories the train COCO file uses."""
        cfg, layout = self.cfg, self.layout
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

    def read_split(
        self, split: str, names: ClassNames, probe_cache: image_probe.ProbeCache
    ) -> tuple[list[ImageRecord], SplitReport]:
        """Find, probe and annotate every image of one split (classes not yet filtered)."""
        cfg = self.cfg
        paths = self.layout.split(split)
        report = SplitReport()
        files = self._split_files(paths, report)
        report.images_found = len(files.images)
        coco = self._coco(split, paths, files.images, report)
        probes = probe_cache.probe_all(files.images, cfg.max_image_pixels)
        records = []
        for image_path, label_path, probe in zip(files.images, files.labels, probes):
            record = ImageRecord(image_path, label_path, probe)
            records.append(record)
            if report.add_probe(image_path, probe):
                self._annotate(record, coco, names, report)
        if coco is not None and any(label is not None for label in files.labels):
            report.crosscheck = _crosscheck_split(records, coco, names.source_names)
        return records, report

    def _split_files(self, paths: SplitPaths, report: SplitReport) -> SplitFiles:
        """A folder split: its images and the label folder's files by stem (label files
        with no image counted). A list split: the listed images (missing and repeated lines
        counted and named), each one's label file beside it by the images -> labels rule.
        The label folder of a list split is shared with other lists, so its other files
        are not orphans."""
        if paths.list_file is not None:
            listed = read_image_list(paths.list_file, paths.images_dir)
            for where in listed.missing:
                report.add_listing_problem(LISTED_FILE_MISSING, where)
            for where in listed.repeated:
                report.add_listing_problem(LISTED_TWICE, where)
            labels = [labels_dir_for(p.parent) / f"{p.stem}.txt" for p in listed.paths]
            return SplitFiles(listed.paths, [p if p.is_file() else None for p in labels])
        images = image_probe.list_image_files(paths.images_dir)
        label_files = {}
        if paths.labels_dir.is_dir():
            label_files = {p.stem: p for p in paths.labels_dir.glob("*.txt")}
        if self.cfg.annotations in ("yolo", "merge"):
            orphans = sorted(set(label_files) - {p.stem for p in images})
            report.labels_without_image = len(orphans)
            report.labels_without_image_examples = [str(label_files[s]) for s in orphans[:MAX_EXAMPLES]]
        return SplitFiles(images, [label_files.get(p.stem) for p in images])

    def _coco(self, split: str, paths: SplitPaths, images: list[Path], report: SplitReport) -> CocoAnnotations | None:
        """The COCO annotations covering a split, or None (an error when data.annotations=coco)."""
        cfg = self.cfg
        if paths.list_file is not None and not cfg.coco_file:
            coco = _coco_beside_listed(images)
        else:
            coco_path = find_coco_file(self.layout, split, cfg.coco_file)
            coco = read_coco(coco_path) if coco_path is not None else None
        if coco is not None:
            report.coco_file = str(coco.path)
            if cfg.annotations in ("coco", "merge"):  # in yolo mode the COCO file only feeds the cross-check
                report.add_dropped(coco.dropped)
        elif cfg.annotations == "coco":
            looked = (
                "beside the listed images' folders"
                if paths.list_file is not None
                else f"{paths.images_dir / '_annotations.coco.json'} and "
                f"{self.layout.root / 'annotations_coco' / f'{split}_annotations.coco.json'}"
            )
            raise DatasetError(
                f"data.annotations=coco but no COCO file found for split {split!r} (looked {looked}); "
                "set data.coco_file."
            )
        return coco

    def _annotate(self, record: ImageRecord, coco: CocoAnnotations | None, names: ClassNames, report: SplitReport) -> None:
        """Read the objects of one usable image from the configured source, counting them."""
        cfg = self.cfg
        use_coco = cfg.annotations in ("coco", "merge")
        if record.label_path is not None:
            record.yolo, dropped = read_label_file(record.label_path, len(names.source_names), cfg.max_coordinate_overshoot)
            report.add_dropped(dropped)
        if coco is not None and record.image_path.name in coco.objects:
            record.coco = coco.objects[record.image_path.name]
        yolo_objects = [LabelObject(names.source_to_label[o.class_id], o.box) for o in (record.yolo or [])]
        label_id_of = {name: i for i, name in enumerate(names.label_names)}
        coco_objects, unmapped = [], []
        for obj in (record.coco or []) if use_coco else []:
            if obj.category in label_id_of:
                coco_objects.append(LabelObject(label_id_of[obj.category], obj.box))
            else:
                unmapped.append(DroppedLine(report.coco_file or "", -1, CATEGORY_NOT_IN_NAMES, obj.category))

        if cfg.annotations == "coco":
            if record.coco is None:
                report.images_without_label_file += 1
                example(report.images_without_label_file_examples, record.image_path)
                return
            report.add_dropped(unmapped)
            record.objects, record.source, record.unmapped_objects = coco_objects, "coco", len(unmapped)
        else:
            if record.yolo is None:
                report.images_without_label_file += 1
                example(report.images_without_label_file_examples, record.image_path)
                return
            record.objects, record.source = yolo_objects, "yolo"
            if not record.yolo:
                report.empty_labels += 1
                if use_coco and record.coco:
                    report.add_dropped(unmapped)
                    record.objects, record.source = coco_objects, "coco (yolo empty)"
                    record.unmapped_objects = len(unmapped)
                    report.filled_from_coco += 1
        count_objects(record, names, report)


def count_objects(record: ImageRecord, names: ClassNames, report: SplitReport) -> None:
    """Count a record's objects (boxes, instances per label name, multi-object images)."""
    report.boxes += len(record.objects)
    for obj in record.objects:
        report.instances_before_filter[names.label_names[obj.class_id]] += 1
    if len(record.objects) > 1:
        report.multi_object_images += 1
        if len({o.class_id for o in record.objects}) > 1:
            report.multi_class_images += 1


def _coco_beside_listed(images: list[Path]) -> CocoAnnotations | None:
    """The COCO files beside the folders a list draws from, merged and cut to the listed
    images (a re-split list mixes images of several export splits). Their dropped
    annotations are kept whole: a dropped annotation names no image file."""
    listed = {p.name for p in images}
    files = sorted({f for f in (coco_file_beside(folder) for folder in {p.parent for p in images}) if f})
    if not files:
        return None
    merged = CocoAnnotations(path=Path(" + ".join(str(f) for f in files)), categories={})
    for path in files:
        coco = read_coco(path)
        merged.categories.update(coco.categories)
        merged.objects.update({n: o for n, o in coco.objects.items() if n in listed})
        merged.sizes.update({n: s for n, s in coco.sizes.items() if n in listed})
        merged.dropped += coco.dropped
    return merged


def _crosscheck_split(records: list[ImageRecord], coco: CocoAnnotations, source_names: list[str]) -> dict:
    yolo = {
        r.image_path.name: [(source_names[o.class_id], o.box) for o in r.yolo]
        for r in records
        if r.yolo is not None
    }
    coco_objects = {r.image_path.name: r.coco or [] for r in records if r.probe.ok and r.image_path.name in coco.objects}
    return cross_check(yolo, coco_objects, coco.sizes)
