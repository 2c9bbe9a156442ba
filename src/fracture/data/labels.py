"""Pure parsing of YOLO label files: box and polygon lines to normalized xyxy boxes.

A YOLO label line is either a box `cls cx cy w h` or a polygon `cls x1 y1 ... xn yn`
(segmentation exports, n >= 3 points), all coordinates normalized to the image size.
Both become one axis-aligned box `(x1, y1, x2, y2)` clipped to [0, 1].

Malformed lines never raise: they come back as `DroppedLine`s with a reason and the
`file:line` they came from, so the data report can count and show them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

Box = tuple[float, float, float, float]

# Reasons a label line is dropped. Keys of the report's `dropped_lines`.
NON_NUMERIC = "non_numeric"
NON_FINITE = "non_finite"
INVALID_CLASS_ID = "invalid_class_id"
UNKNOWN_CLASS = "unknown_class"
ODD_COORDINATE_COUNT = "odd_coordinate_count"
TOO_FEW_POINTS = "too_few_points"
OUT_OF_RANGE = "coordinates_out_of_range"
ZERO_AREA = "zero_area"
DROP_REASONS = (
    NON_NUMERIC,
    NON_FINITE,
    INVALID_CLASS_ID,
    UNKNOWN_CLASS,
    ODD_COORDINATE_COUNT,
    TOO_FEW_POINTS,
    OUT_OF_RANGE,
    ZERO_AREA,
)

# A box narrower or lower than this (fraction of the image) carries no location.
MIN_BOX_SIDE = 1e-4


@dataclass(frozen=True)
class LabelObject:
    """One annotated object: a class id (in the id space of its source) and a box.

    Attributes:
        class_id: integer class id as written in the label source.
        box: normalized `(x1, y1, x2, y2)`, clipped to [0, 1], with x2 > x1 and y2 > y1.
    """

    class_id: int
    box: Box

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@dataclass(frozen=True)
class DroppedLine:
    """A label line (or COCO annotation) that was not used, and why.

    Attributes:
        path: the file it came from.
        line_no: 1-based line number (for COCO: the annotation id).
        reason: one of `DROP_REASONS` (or a COCO-specific reason).
        text: the offending text, shortened for reports.
    """

    path: str
    line_no: int
    reason: str
    text: str

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line_no}"


def clip_box(x1: float, y1: float, x2: float, y2: float) -> Box:
    """Clip a normalized box to the unit square."""
    return (
        min(max(x1, 0.0), 1.0),
        min(max(y1, 0.0), 1.0),
        min(max(x2, 0.0), 1.0),
        min(max(y2, 0.0), 1.0),
    )


def box_from_coordinates(coords: list[float]) -> Box:
    """Unclipped xyxy box of a YOLO coordinate list: 4 numbers = `cx cy w h`, else a polygon."""
    if len(coords) == 4:
        cx, cy, w, h = coords
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    xs, ys = coords[0::2], coords[1::2]
    return (min(xs), min(ys), max(xs), max(ys))


def parse_label_line(
    text: str, num_classes: int, max_overshoot: float = 0.05
) -> LabelObject | str:
    """Parse one non-empty label line.

    Args:
        text: the line, without its newline.
        num_classes: classes named in data.yaml; ids outside `[0, num_classes)` are unknown.
        max_overshoot: how far outside [0, 1] a coordinate may lie and still be clipped
            rather than rejected (exports round polygon points slightly past the edge).

    Returns:
        A `LabelObject`, or the drop reason (one of `DROP_REASONS`) as a string.
    """
    fields = text.split()
    try:
        values = [float(f) for f in fields]
    except ValueError:
        return NON_NUMERIC
    if not all(math.isfinite(v) for v in values):
        return NON_FINITE
    class_value, coords = values[0], values[1:]
    if class_value != int(class_value) or class_value < 0:
        return INVALID_CLASS_ID
    if class_value >= num_classes:
        return UNKNOWN_CLASS
    if len(coords) % 2:
        return ODD_COORDINATE_COUNT
    # 4 numbers is the box format; otherwise a polygon needs at least 3 points.
    if len(coords) != 4 and len(coords) < 6:
        return TOO_FEW_POINTS
    low, high = -max_overshoot, 1.0 + max_overshoot
    if any(v < low or v > high for v in coords):
        return OUT_OF_RANGE
    x1, y1, x2, y2 = clip_box(*box_from_coordinates(coords))
    if x2 - x1 < MIN_BOX_SIDE or y2 - y1 < MIN_BOX_SIDE:
        return ZERO_AREA
    return LabelObject(int(class_value), (x1, y1, x2, y2))


def parse_label_text(
    text: str, path: str, num_classes: int, max_overshoot: float = 0.05
) -> tuple[list[LabelObject], list[DroppedLine]]:
    """Parse a whole label file's text. Blank lines are ignored, not counted."""
    objects: list[LabelObject] = []
    dropped: list[DroppedLine] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parsed = parse_label_line(line, num_classes, max_overshoot)
        if isinstance(parsed, LabelObject):
            objects.append(parsed)
        else:
            dropped.append(DroppedLine(path, line_no, parsed, _shorten(line)))
    return objects, dropped


def read_label_file(
    path: str | Path, num_classes: int, max_overshoot: float = 0.05
) -> tuple[list[LabelObject], list[DroppedLine]]:
    """Read and parse a label file; undecodable bytes become a dropped `non_numeric` line."""
    raw = Path(path).read_bytes()
    text = raw.decode("utf-8", errors="replace")
    return parse_label_text(text, str(path), num_classes, max_overshoot)


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
