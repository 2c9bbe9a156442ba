"""Reading Roboflow COCO exports: boxes per image file, categories by *name*.

COCO category ids are export-specific (Roboflow adds a supercategory at id 0 and shifts
the rest), so a COCO file is only ever joined to a YOLO dataset through category names.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from fracture.data.labels import MIN_BOX_SIDE, Box, DroppedLine, clip_box
from fracture.data.layout import DatasetError

COCO_NON_FINITE = "non_finite"
COCO_ZERO_AREA = "zero_area"
COCO_UNKNOWN_IMAGE = "unknown_image_id"
COCO_UNKNOWN_CATEGORY = "unknown_category_id"
COCO_BAD_BBOX = "malformed_bbox"


@dataclass(frozen=True)
class CocoObject:
    """One COCO annotation: the category *name* and a normalized, clipped xyxy box.

    Attributes:
        category: category name as the COCO file writes it.
        box: normalized `(x1, y1, x2, y2)`.
        bbox_px: the original `[x, y, w, h]` in pixels, for cross-checks in pixel units.
    """

    category: str
    box: Box
    bbox_px: tuple[float, float, float, float]


@dataclass
class CocoAnnotations:
    """A COCO file indexed by image file name.

    Attributes:
        path: the JSON file.
        categories: category id -> name.
        sizes: file name -> (width, height) as recorded in the file.
        objects: file name -> objects (files with no annotation map to an empty list).
        dropped: annotations that could not be used, with the reason.
    """

    path: Path
    categories: dict[int, str]
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    objects: dict[str, list[CocoObject]] = field(default_factory=dict)
    dropped: list[DroppedLine] = field(default_factory=list)

    def used_category_names(self) -> list[str]:
        """Names of categories with at least one annotation, in category-id order."""
        used = {o.category for objs in self.objects.values() for o in objs}
        return [name for _, name in sorted(self.categories.items()) if name in used]


def parse_coco(data: dict, path: str | Path) -> CocoAnnotations:
    """Index a loaded COCO dict. Bad annotations are dropped with a reason, never raised."""
    path = Path(path)
    categories = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
    result = CocoAnnotations(path=path, categories=categories)
    names_by_id: dict[int, str] = {}
    for image in data.get("images", []):
        name = Path(str(image["file_name"])).name
        names_by_id[int(image["id"])] = name
        result.sizes[name] = (int(image["width"]), int(image["height"]))
        result.objects.setdefault(name, [])
    for ann in data.get("annotations", []):
        ann_id = int(ann.get("id", -1))
        text = json.dumps(ann.get("bbox"))[:80]

        def drop(reason: str) -> None:
            result.dropped.append(DroppedLine(str(path), ann_id, reason, text))

        file_name = names_by_id.get(int(ann.get("image_id", -1)))
        if file_name is None:
            drop(COCO_UNKNOWN_IMAGE)
            continue
        category = categories.get(int(ann.get("category_id", -1)))
        if category is None:
            drop(COCO_UNKNOWN_CATEGORY)
            continue
        bbox = ann.get("bbox")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            drop(COCO_BAD_BBOX)
            continue
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            drop(COCO_NON_FINITE)
            continue
        width, height = result.sizes[file_name]
        box = clip_box(x / width, y / height, (x + w) / width, (y + h) / height)
        if box[2] - box[0] < MIN_BOX_SIDE or box[3] - box[1] < MIN_BOX_SIDE:
            drop(COCO_ZERO_AREA)
            continue
        result.objects[file_name].append(CocoObject(category, box, (x, y, w, h)))
    return result


def read_coco(path: str | Path) -> CocoAnnotations:
    """Load and index a COCO JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read COCO annotations ({exc}).") from None
    return parse_coco(data, path)
