"""The folder reader: folder-per-class datasets as `ImageRecord`s, read in place.

One of the index's readers (see `records.py`). Two layouts, told apart by the folder names
under `<root>/<data.images_dir>`:

* `<split>/<class>/*` (e.g. `train|val|test/<fractured|not fractured>/`): split folders
  use the aliases of `layout.py` (`val`, `validation` = `valid`);
* `<class>/*` with no split folders (e.g. FracAtlas `images/Fractured`,
  `images/Non_fractured`): split by csv files of image names (`data.split_csv`, FracAtlas'
  official split), else by a seeded split stratified by class that keeps duplicate groups
  together (`fracture.data.splitting.grouped_split` over
  `fracture.data.duplicates.duplicate_groups`).

The class of an image is its folder's name. The folder named `data.negative_class` holds
the "no finding" images: they become negatives exactly as empty YOLO label files do (the
appended negative class under `data.negatives=keep`, left out under `drop`). A class
instance is an image, not a box, since the class is an image-level label.

`data.boxes_dir` optionally adds YOLO boxes (`<boxes_dir>/<image stem>.txt`) to the
positives, so the detector trains as well as the classifier. A box takes its image's
folder class; the id written in the file is ignored (FracAtlas writes 0 for every
fracture, and a folder dataset has no names list that the id could index). A box on a
"no finding" image contradicts its folder: the line is dropped and counted
(`box_on_no_finding_image`). A positive without any box is counted
(`SplitReport.positives_without_boxes`) and trains the classifier with its box loss masked;
under `multi_object_rule=all` it is left out, counted, because as an all-background
image it would teach the detector to miss the finding it is known to have.

Everything the layout does not place (a file directly in a split folder, a folder inside
a class folder, a non-image file, a csv name with no file) is counted and named.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

from fracture.data import images as image_probe
from fracture.data.config import DataConfig
from fracture.data.duplicates import duplicate_groups
from fracture.data.labels import DroppedLine, LabelObject, read_label_file
from fracture.data.layout import (
    SPLIT_ALIASES,
    SPLIT_DIR_NAMES,
    SPLITS,
    DatasetError,
    DatasetLayout,
    SplitPaths,
)
from fracture.data.records import (
    AMBIGUOUS_NAME,
    LISTED_FILE_MISSING,
    LISTED_TWICE,
    MAX_EXAMPLES,
    STRAY_FILE,
    ClassNames,
    ImageRecord,
    SplitReport,
    example,
)
from fracture.data.splitting import grouped_split

BOX_ON_NEGATIVE = "box_on_no_finding_image"
FOLDER_SOURCE = "folder"
# Class ids in box files are ignored (see the module docstring): any id parses.
ANY_CLASS_ID = sys.maxsize


@dataclass(frozen=True)
class FolderImage:
    """One image file of a class folder (or a file the layout does not place: class None)."""

    path: Path
    class_name: str | None


@dataclass
class FolderSplit:
    """The files of one split: images by class folder, and files the layout does not place."""

    images: list[FolderImage]
    problems: list[tuple[str, str]]  # (listing problem key, what)


def class_folder_files(class_dir: Path) -> tuple[list[FolderImage], list[str]]:
    """The images of one class folder, and what else is in it (folders, non-image files)."""
    images = image_probe.list_image_files(class_dir)
    listed = set(images)
    stray = sorted(str(p) for p in class_dir.iterdir() if p not in listed)
    return [FolderImage(p, class_dir.name) for p in images], stray


def read_class_folders(folder: Path) -> FolderSplit:
    """Every `<folder>/<class>/<image>`; files directly in `folder` are stray."""
    images, problems = [], []
    for child in sorted(folder.iterdir()):
        if child.is_dir():
            found, stray = class_folder_files(child)
            images += found
            problems += [(STRAY_FILE, s) for s in stray]
        else:
            problems.append((STRAY_FILE, str(child)))
    return FolderSplit(images, problems)


def read_split_csv(path: Path, column: str) -> list[tuple[int, str]]:
    """(line number, image name) of every row of a split csv.

    Raises:
        DatasetError: the file cannot be read, or has no such column (the columns it has
            are named).
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if column not in (reader.fieldnames or []):
                raise DatasetError(
                    f"{path}: no column {column!r} (columns: {reader.fieldnames}); set data.split_csv_column."
                )
            return [(reader.line_num, (row[column] or "").strip()) for row in reader]
    except (OSError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read the split csv ({exc}).") from None


def csv_split(images: list[FolderImage], rows: list[tuple[int, str]], csv_path: Path) -> FolderSplit:
    """The images a split csv names, by file name (or stem, when the csv has no suffix).

    Names with no file, named twice, or found in several class folders are counted."""
    by_name: dict[str, list[FolderImage]] = {}
    for image in images:
        by_name.setdefault(image.path.name, []).append(image)
        by_name.setdefault(image.path.stem, []).append(image)
    chosen, problems, seen = [], [], set()
    for line_no, name in rows:
        where = f"{csv_path}:{line_no}: {name}"
        matches = by_name.get(Path(name).name, [])
        if not name or not matches:
            problems.append((LISTED_FILE_MISSING, where))
        elif len(matches) > 1:
            problems.append((AMBIGUOUS_NAME, where))
        elif matches[0].path in seen:
            problems.append((LISTED_TWICE, where))
        else:
            seen.add(matches[0].path)
            chosen.append(matches[0])
    return FolderSplit(chosen, problems)


def grouped_assignment(images: list[FolderImage], cfg: DataConfig, cache_dir: str | Path | None) -> dict[str, list[FolderImage]]:
    """Split name -> its images: seeded, stratified by class folder, and keeping each group
    of duplicates (same Roboflow source, identical pixels, confirmed near duplicates) in
    one split, so no image leaks across. An undecodable image is its own group (and is
    counted as a bad image when its split is read)."""
    groups = duplicate_groups([image.path for image in images], cache_dir=Path(cache_dir) if cache_dir else None)
    return grouped_split(images, [image.class_name for image in images], groups, cfg.split_fractions, cfg.split_seed)


class FolderReader:
    """Reads a folder-per-class dataset (layouts: module docstring)."""

    def __init__(self, cfg: DataConfig, cache_dir: str | Path | None = None):
        self.cfg = cfg
        self.cache_dir = cache_dir
        root = Path(cfg.root).expanduser().resolve()
        if not root.is_dir():
            raise DatasetError(f"Dataset root {root} does not exist: pass data.root=<folder of class folders>.")
        self.base = root / cfg.images_dir if cfg.images_dir else root
        if not self.base.is_dir():
            raise DatasetError(f"data.images_dir={cfg.images_dir!r}: {self.base} is not a folder.")
        self.boxes_dir = self._boxes_dir(root)
        self.layout = DatasetLayout(root=root, yaml_path=None, names=[])
        self._splits = self._find_splits()
        self.layout.names = self._class_names()

    def _boxes_dir(self, root: Path) -> Path | None:
        if not self.cfg.boxes_dir:
            if self.cfg.multi_object_rule == "all":
                raise DatasetError(
                    "data.multi_object_rule=all trains a detector, which needs boxes: set data.boxes_dir "
                    "(YOLO box files by image stem) for this folder dataset."
                )
            return None
        boxes = Path(self.cfg.boxes_dir).expanduser()
        boxes = boxes if boxes.is_absolute() else root / boxes
        if not boxes.is_dir():
            raise DatasetError(f"data.boxes_dir={self.cfg.boxes_dir!r}: {boxes} is not a folder.")
        return boxes

    def _find_splits(self) -> dict[str, FolderSplit]:
        """Split name -> its files, for the splits present; the others go to `layout.missing`."""
        split_dirs = {}
        for child in sorted(self.base.iterdir()):
            split = SPLIT_ALIASES.get(child.name.lower())
            if child.is_dir() and split and split not in split_dirs:
                split_dirs[split] = child
        if split_dirs:
            return self._split_folders(split_dirs)
        if self.cfg.split_csv:
            return self._csv_splits()
        return self._grouped_splits()

    def _split_folders(self, split_dirs: dict[str, Path]) -> dict[str, FolderSplit]:
        ignored = sorted(p.name for p in self.base.iterdir() if p not in split_dirs.values())
        if ignored:
            self.layout.notes.append(f"{self.base}: not split folders, ignored: {', '.join(ignored[:20])}")
        out = {}
        for split in SPLITS:
            if split not in split_dirs:
                self.layout.missing[split] = f"no {' or '.join(SPLIT_DIR_NAMES[split])} folder in {self.base}"
                continue
            out[split] = read_class_folders(split_dirs[split])
            self._describe(split, split_dirs[split], f"{split_dirs[split].name}/<class>/")
        return out

    def _all_class_images(self) -> list[FolderImage]:
        everything = read_class_folders(self.base)
        stray = [what for _, what in everything.problems]
        if stray:
            shown = ", ".join(stray[:MAX_EXAMPLES])
            self.layout.notes.append(f"{len(stray)} files not at <class>/<image> depth, left out: {shown}")
        return everything.images

    def _csv_splits(self) -> dict[str, FolderSplit]:
        images = self._all_class_images()
        out, named = {}, set()
        for split in SPLITS:
            path = self._csv_path(split)
            if path is None:
                self.layout.missing[split] = f"no split csv {self.cfg.split_csv!r} for it"
                continue
            out[split] = csv_split(images, read_split_csv(path, self.cfg.split_csv_column), path)
            self._describe(split, self.base, f"csv {path}")
            named |= {image.path for image in out[split].images}
        unlisted = [str(image.path) for image in images if image.path not in named]
        if unlisted:
            self.layout.notes.append(
                f"{len(unlisted)} images are in no split csv, left out: {', '.join(unlisted[:MAX_EXAMPLES])}"
            )
        return out

    def _csv_path(self, split: str) -> Path | None:
        for name in SPLIT_DIR_NAMES[split]:
            path = Path(self.cfg.split_csv.format(split=name)).expanduser()
            path = path if path.is_absolute() else self.layout.root / path
            if path.is_file():
                return path
        return None

    def _grouped_splits(self) -> dict[str, FolderSplit]:
        assigned = grouped_assignment(self._all_class_images(), self.cfg, self.cache_dir)
        out = {}
        for split in SPLITS:
            if not self.cfg.split_fractions.get(split):
                self.layout.missing[split] = f"data.split_fractions gives it no share ({self.cfg.split_fractions})"
                continue
            out[split] = FolderSplit(assigned[split], [])
            self._describe(split, self.base, f"grouped split (seed {self.cfg.split_seed}, {self.cfg.split_fractions})")
        return out

    def _describe(self, split: str, folder: Path, declared_as: str) -> None:
        self.layout.splits[split] = SplitPaths(folder, self.boxes_dir or folder, declared_as)

    def _class_names(self) -> list[str]:
        """The positive classes: every class folder name but `data.negative_class`, sorted.
        An empty class folder is said aloud (its class then has 0 train instances, and
        `data.min_instances` drops it, as for YOLO)."""
        class_dirs = self._class_dirs()
        folders = sorted({folder.name for folder in class_dirs})
        negative = self.cfg.negative_class
        if self.cfg.negatives == "keep" and negative not in folders:
            raise DatasetError(
                f"data.negative_class={negative!r} is not a class folder of {self.base} (class folders: "
                f"{folders}): set data.negative_class to the 'no finding' folder, or data.negatives=drop "
                "when the dataset has none."
            )
        for folder in sorted(class_dirs):
            if not image_probe.list_image_files(folder):
                self.layout.notes.append(f"class folder {folder.name!r} holds no image ({folder})")
        return [name for name in folders if name != negative]

    def _class_dirs(self) -> list[Path]:
        """Every class folder, in every split folder (or under the base)."""
        parents = {p.images_dir for p in self.layout.splits.values()} or {self.base}
        return [c for parent in parents for c in parent.iterdir() if c.is_dir()]

    def source_names(self) -> list[str]:
        return list(self.layout.names)

    def read_split(
        self, split: str, names: ClassNames, probe_cache: image_probe.ProbeCache
    ) -> tuple[list[ImageRecord], SplitReport]:
        """Probe every image of one split; a positive's class is its folder (label id)."""
        self.layout.split(split)  # a DatasetError saying why, when the split is not there
        files = self._splits[split]
        report = SplitReport()
        for reason, what in files.problems:
            report.add_listing_problem(reason, what)
        report.images_found = len(files.images)
        label_of = {source: names.source_to_label[i] for i, source in enumerate(names.source_names)}
        probes = probe_cache.probe_all([i.path for i in files.images], self.cfg.max_image_pixels)
        records = []
        for image, probe in zip(files.images, probes):
            record = ImageRecord(image.path, None, probe)
            records.append(record)
            if report.add_probe(image.path, probe):
                self._annotate(record, label_of.get(image.class_name), names, report)
        return records, report

    def _annotate(self, record: ImageRecord, label_id: int | None, names: ClassNames, report: SplitReport) -> None:
        """Give a usable image its folder class and boxes, counting them. `label_id` None:
        the "no finding" folder, or a class folder a saved class mapping does not know
        (left out as a class not kept, as a YOLO object of an unnamed class is)."""
        record.source = FOLDER_SOURCE
        boxes = self._boxes_of(record, report)
        if label_id is None:
            if record.image_path.parent.name != self.cfg.negative_class:
                record.unmapped_objects = 1
                return
            report.add_dropped(
                [DroppedLine(str(record.label_path), -1, BOX_ON_NEGATIVE, str(o.box)) for o in boxes]
            )
            return
        record.image_class = label_id
        record.objects = [LabelObject(label_id, o.box) for o in boxes]
        report.instances_before_filter[names.label_names[label_id]] += 1
        report.boxes += len(record.objects)
        report.multi_object_images += int(len(record.objects) > 1)
        if self.boxes_dir is not None and not record.objects:
            report.positives_without_boxes += 1
            example(report.positives_without_boxes_examples, record.image_path)

    def _boxes_of(self, record: ImageRecord, report: SplitReport) -> list[LabelObject]:
        """The boxes of `<boxes_dir>/<stem>.txt` (malformed lines dropped and counted)."""
        if self.boxes_dir is None:
            return []
        path = self.boxes_dir / f"{record.image_path.stem}.txt"
        if not path.is_file():
            return []
        record.label_path = path
        objects, dropped = read_label_file(path, ANY_CLASS_ID, self.cfg.max_coordinate_overshoot)
        report.add_dropped(dropped)
        return objects
