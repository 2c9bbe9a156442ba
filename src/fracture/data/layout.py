"""Where a dataset's splits live: `data.yaml` resolution the way real exports write it.

Exports disagree on how to write split paths:

* Ultralytics: `path: ../datasets/x` plus `train: images/train`;
* Roboflow / Kaggle: `train: ../train/images`, relative to a folder *inside* the dataset;
* Colab leftovers: absolute paths from another machine (`/content/datasets/...`).

`resolve_layout` tries the readings in that order and falls back to the conventional
`<root>/<split>/images`, noting every fallback so the report can show it. Split keys are
canonicalised to `train`, `valid` and `test` (`val` and `validation` mean `valid`).
A split missing from the yaml or from disk is only an error when it is requested.

A split may also be declared as an image list (`train: train.txt`, the ultralytics
convention `scripts/resplit.py` writes): a text file with one image path per line, read by
`read_image_list`. Its images stay where they are; each one's YOLO label is found by the
usual images -> labels rule beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

SPLIT_ALIASES = {
    "train": "train",
    "val": "valid",
    "valid": "valid",
    "validation": "valid",
    "test": "test",
}
SPLITS = ("train", "valid", "test")
# Folder names a split may have on disk, per canonical split.
SPLIT_DIR_NAMES = {"train": ("train",), "valid": ("valid", "val"), "test": ("test",)}
COCO_FILE_NAME = "_annotations.coco.json"
LIST_SUFFIX = ".txt"  # a split declared as a file with this suffix is an image list


class DatasetError(ValueError):
    """A dataset cannot be read as configured; the message names the file at fault."""


def canonical_split(name: str) -> str:
    try:
        return SPLIT_ALIASES[name.lower()]
    except KeyError:
        raise DatasetError(
            f"Unknown split {name!r}; use one of {', '.join(SPLITS)} (or 'val')."
        ) from None


@dataclass(frozen=True)
class SplitPaths:
    """Folders of one split.

    Attributes:
        images_dir: folder with the image files; for a list split, the folder its relative
            lines are resolved against (data.yaml's folder, or its `path:`).
        labels_dir: the YOLO label folder (`images` replaced by `labels`); may not exist.
            A list split has one per listed image's folder (`labels_dir_for`).
        declared_as: the text data.yaml had for this split (or "<convention>").
        list_file: the image list of a list split; None for a folder split.
    """

    images_dir: Path
    labels_dir: Path
    declared_as: str
    list_file: Path | None = None


@dataclass
class DatasetLayout:
    """A resolved dataset: root, class names from data.yaml and the splits found on disk.

    Attributes:
        root: the folder holding data.yaml (the `data.root` of the config).
        yaml_path: data.yaml, or None for a COCO-only export without one.
        names: class names in YOLO id order (empty when data.yaml is absent).
        splits: canonical split name -> its folders, only for splits present on disk.
        missing: canonical split name -> why it is not available.
        notes: fallbacks taken while resolving, for the report.
    """

    root: Path
    yaml_path: Path | None
    names: list[str]
    splits: dict[str, SplitPaths] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def split(self, name: str) -> SplitPaths:
        """The folders of a requested split, or a `DatasetError` saying why there are none."""
        split = canonical_split(name)
        if split in self.splits:
            return self.splits[split]
        where = self.yaml_path or self.root
        reason = self.missing.get(split, "not declared and no conventional folder found")
        raise DatasetError(f"Split {split!r} is not available in {where}: {reason}.")


def labels_dir_for(images_dir: Path) -> Path:
    """YOLO convention: the last `images` component of the path becomes `labels`."""
    parts = list(images_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return images_dir.parent / "labels"


def _images_dir_of(candidate: Path) -> Path | None:
    """Accept a folder of images, a split folder that contains `images/`, or an image list
    (a `.txt` file)."""
    if candidate.is_file() and candidate.suffix.lower() == LIST_SUFFIX:
        return candidate
    if (candidate / "images").is_dir():
        return candidate / "images"
    if candidate.is_dir():
        return candidate
    return None


def _read_names(raw: object, yaml_path: Path) -> list[str]:
    if isinstance(raw, dict):
        try:
            return [str(raw[k]) for k in sorted(raw, key=int)]
        except (TypeError, ValueError):
            raise DatasetError(f"{yaml_path}: 'names' keys must be integer class ids.") from None
    if isinstance(raw, (list, tuple)):
        return [str(n) for n in raw]
    raise DatasetError(f"{yaml_path}: 'names' must be a list or an id -> name mapping.")


def _resolve_declared(declared: str, base: Path, root: Path, split: str) -> tuple[Path | None, str]:
    """Resolve one declared split path; returns (images dir, how it was found)."""
    path = Path(declared)
    candidates: list[tuple[Path, str]] = []
    if path.is_absolute():
        candidates.append((path, "absolute path"))
    else:
        candidates.append((base / path, "relative to data.yaml"))
        # Roboflow writes '../train/images' relative to a folder inside the dataset.
        stripped = Path(*[p for p in path.parts if p != ".."]) if ".." in path.parts else None
        if stripped is not None:
            candidates.append((root / stripped, "Roboflow-style '../' path, read from the root"))
    for candidate, how in candidates:
        images = _images_dir_of(candidate)
        if images is not None:
            return images, how
    return None, ""


def _conventional(root: Path, split: str) -> Path | None:
    for dirname in SPLIT_DIR_NAMES[split]:
        images = _images_dir_of(root / dirname) if (root / dirname).is_dir() else None
        if images is not None:
            return images
    return None


def resolve_layout(root: str | Path, yaml_name: str = "data.yaml") -> DatasetLayout:
    """Read `<root>/<yaml_name>` and locate every split it declares.

    Args:
        root: the dataset folder (the one holding data.yaml).
        yaml_name: file name of the dataset yaml inside `root`.

    Raises:
        DatasetError: the root does not exist, or data.yaml is unreadable.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(
            f"Dataset root {root} does not exist: pass data.root=<folder holding data.yaml>."
        )
    yaml_path = root / yaml_name
    layout = DatasetLayout(root=root, yaml_path=None, names=[])
    declared: dict[str, str | list] = {}
    base = root
    if yaml_path.is_file():
        try:
            spec = yaml.safe_load(yaml_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise DatasetError(f"{yaml_path}: not valid YAML ({exc}).") from None
        if not isinstance(spec, dict):
            raise DatasetError(f"{yaml_path}: expected a mapping with 'names' and split paths.")
        layout.yaml_path = yaml_path
        if "names" not in spec:
            raise DatasetError(f"{yaml_path}: no 'names' list of classes.")
        layout.names = _read_names(spec["names"], yaml_path)
        nc = spec.get("nc")
        if nc is not None and int(nc) != len(layout.names):
            layout.notes.append(
                f"{yaml_path.name}: nc={nc} but {len(layout.names)} names; the names win."
            )
        if spec.get("path"):
            base = Path(str(spec["path"])).expanduser()
            base = base if base.is_absolute() else (root / base)
            if not base.is_dir():
                layout.notes.append(f"{yaml_path.name}: 'path: {spec['path']}' not found; using the root.")
                base = root
        for key, value in spec.items():
            if isinstance(key, str) and key.lower() in SPLIT_ALIASES and value:
                declared[SPLIT_ALIASES[key.lower()]] = value
    else:
        layout.notes.append(f"No {yaml_name} in {root}; splits found by folder name.")

    for split in SPLITS:
        value = declared.get(split)
        if isinstance(value, list):
            if len(value) != 1:
                layout.missing[split] = f"{len(value)} folders listed; only one per split is supported"
                continue
            value = value[0]
        images_dir, how = (None, "")
        if value:
            images_dir, how = _resolve_declared(str(value), base, root, split)
            if images_dir is None:
                images_dir = _conventional(root, split)
                if images_dir is not None:
                    layout.notes.append(
                        f"{split}: declared '{value}' not found; using {images_dir.relative_to(root)}."
                    )
            elif how != "relative to data.yaml":
                layout.notes.append(f"{split}: '{value}' resolved as {how}.")
        elif layout.yaml_path is None:
            images_dir = _conventional(root, split)
        if images_dir is None:
            layout.missing[split] = (
                f"declared '{value}' but no such folder" if value else "not declared in data.yaml"
            )
            continue
        declared_as = str(value) if value else "<convention>"
        if images_dir.is_file():
            layout.splits[split] = SplitPaths(base, labels_dir_for(base), declared_as, list_file=images_dir)
        else:
            layout.splits[split] = SplitPaths(images_dir, labels_dir_for(images_dir), declared_as)
    return layout


@dataclass
class ImageList:
    """What an image list names.

    Attributes:
        paths: existing files, in list order, each once.
        missing: `file:line: path` of lines naming no existing file.
        repeated: `file:line: path` of lines naming a file already listed (read once).
    """

    paths: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)


def read_image_list(list_file: Path, base: Path) -> ImageList:
    """Read an ultralytics image list: one image path per line.

    Blank lines and lines starting with `#` are skipped. A relative path is resolved
    against `base` (data.yaml's folder, or its `path:`), the way split folders are, so a
    list written beside data.yaml works wherever the dataset is moved; an absolute path is
    read as it is. Which files are images is decided later, by the probe: a listed
    non-image is counted there as a bad image, like one in an image folder.

    Raises:
        DatasetError: the list cannot be read.
    """
    try:
        text = list_file.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DatasetError(f"{list_file}: cannot read the image list ({exc}).") from None
    listed, seen = ImageList(), set()
    for line_no, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry).expanduser()
        path = path if path.is_absolute() else base / path
        where = f"{list_file}:{line_no}: {entry}"
        if not path.is_file():
            listed.missing.append(where)
        elif path.resolve() in seen:
            listed.repeated.append(where)
        else:
            seen.add(path.resolve())
            listed.paths.append(path)
    return listed


def find_coco_file(layout: DatasetLayout, split: str, configured: str | None = None) -> Path | None:
    """Locate a COCO annotation file for a split.

    Looks at, in order: the configured path (may contain `{split}`), Roboflow's COCO export
    layout `<split>/_annotations.coco.json` (beside or above the images), and
    `<root>/annotations_coco/<split>_annotations.coco.json`.
    """
    split = canonical_split(split)
    candidates: list[Path] = []
    if configured:
        path = Path(configured.format(split=split)).expanduser()
        candidates.append(path if path.is_absolute() else layout.root / path)
    if split in layout.splits:
        images_dir = layout.splits[split].images_dir
        candidates += [images_dir / COCO_FILE_NAME, images_dir.parent / COCO_FILE_NAME]
    for dirname in SPLIT_DIR_NAMES[split]:
        candidates += [
            layout.root / dirname / COCO_FILE_NAME,
            layout.root / "annotations_coco" / f"{dirname}_annotations.coco.json",
        ]
    return next((c for c in candidates if c.is_file()), None)


def coco_file_beside(images_dir: Path) -> Path | None:
    """The COCO file an export keeps for the images of one folder, found from the folder
    alone (an image list names images, not splits): `<images_dir>/_annotations.coco.json`,
    `<split dir>/_annotations.coco.json`, or `<root>/annotations_coco/<split>_annotations.coco.json`."""
    split_dir = images_dir.parent if images_dir.name == "images" else images_dir
    candidates = [
        images_dir / COCO_FILE_NAME,
        split_dir / COCO_FILE_NAME,
        split_dir.parent / "annotations_coco" / f"{split_dir.name}_annotations.coco.json",
    ]
    return next((c for c in candidates if c.is_file()), None)

