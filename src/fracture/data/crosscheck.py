"""Cross-checking two annotation sources of the same images (YOLO labels vs COCO JSON).

Roboflow exports one project in several formats, and they do not always agree: a
segmentation (polygon) export drops box-only annotations, and class names can be attached
to the wrong ids. Comparing the sources finds both. All functions here are pure.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from fracture.data.coco import CocoObject
from fracture.data.labels import Box

# Boxes from the two sources agree when no corner differs by more than this many pixels.
BOX_TOLERANCE_PX = 2.0
# A source name is suggested for renaming when this share of its matched boxes agree on
# one other name.
RENAME_MAJORITY = 0.9


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two xyxy boxes (any consistent unit)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(first: list[Box], second: list[Box]) -> list[tuple[int, int]]:
    """Greedy one-to-one matching by IoU, best pairs first (enough for a handful of boxes)."""
    pairs = sorted(
        ((iou(a, b), i, j) for i, a in enumerate(first) for j, b in enumerate(second)),
        reverse=True,
    )
    used_i, used_j, matched = set(), set(), []
    for _, i, j in pairs:
        if i not in used_i and j not in used_j:
            used_i.add(i)
            used_j.add(j)
            matched.append((i, j))
    return sorted(matched)


def cross_check(
    yolo: dict[str, list[tuple[str, Box]]],
    coco: dict[str, list[CocoObject]],
    sizes: dict[str, tuple[int, int]],
    tolerance_px: float = BOX_TOLERANCE_PX,
    max_examples: int = 20,
) -> dict:
    """Compare YOLO and COCO annotations image by image.

    Args:
        yolo: file name -> (source class name, normalized box) from the YOLO labels.
        coco: file name -> COCO objects.
        sizes: file name -> (width, height) in pixels, to compare boxes in pixels.
        tolerance_px: corner tolerance for "the same box".
        max_examples: how many example file names to keep per finding.

    Returns:
        A JSON-ready dict: disagreeing images, the name-agreement matrix over matched
        boxes (only images where both sources have the same number of boxes are matched),
        box agreement in pixels with its exceptions, and rename suggestions.
    """
    both = sorted(set(yolo) & set(coco))
    yolo_empty_coco_annotated: list[str] = []
    coco_boxes_on_those = Counter()
    coco_empty_yolo_annotated: list[str] = []
    count_mismatch: list[str] = []
    agreement: dict[str, Counter] = defaultdict(Counter)
    within, exceptions = 0, []
    for name in both:
        ys, cs = yolo[name], coco[name]
        if not ys and cs:
            yolo_empty_coco_annotated.append(name)
            coco_boxes_on_those[len(cs)] += 1
        elif ys and not cs:
            coco_empty_yolo_annotated.append(name)
        elif len(ys) != len(cs):
            count_mismatch.append(name)
        if not ys or len(ys) != len(cs):
            continue
        width, height = sizes[name]
        yolo_px = [(b[0] * width, b[1] * height, b[2] * width, b[3] * height) for _, b in ys]
        coco_px = [(x, y, x + w, y + h) for x, y, w, h in (c.bbox_px for c in cs)]
        for i, j in match_boxes(yolo_px, coco_px):
            agreement[ys[i][0]][cs[j].category] += 1
            diff = max(abs(p - q) for p, q in zip(yolo_px[i], coco_px[j]))
            if diff <= tolerance_px:
                within += 1
            else:
                exceptions.append(
                    {
                        "file": name,
                        "yolo_class": ys[i][0],
                        "coco_class": cs[j].category,
                        "yolo_box_px": [round(v, 1) for v in yolo_px[i]],
                        "coco_box_px": [round(v, 1) for v in coco_px[j]],
                        "max_corner_diff_px": round(diff, 2),
                    }
                )
    matched = within + len(exceptions)
    return {
        "images_in_both": len(both),
        "images_only_in_yolo": len(set(yolo) - set(coco)),
        "images_only_in_coco": len(set(coco) - set(yolo)),
        "yolo_empty_coco_annotated": len(yolo_empty_coco_annotated),
        "yolo_empty_coco_annotated_by_box_count": {
            str(k): v for k, v in sorted(coco_boxes_on_those.items())
        },
        "yolo_empty_coco_annotated_examples": yolo_empty_coco_annotated[:max_examples],
        "coco_empty_yolo_annotated": len(coco_empty_yolo_annotated),
        "coco_empty_yolo_annotated_examples": coco_empty_yolo_annotated[:max_examples],
        "box_count_mismatch": len(count_mismatch),
        "box_count_mismatch_examples": count_mismatch[:max_examples],
        "matched_boxes": matched,
        "name_agreement": {y: dict(sorted(c.items())) for y, c in sorted(agreement.items())},
        "box_agreement": {
            "tolerance_px": tolerance_px,
            "within_tolerance": within,
            "compared": matched,
            "exceptions": sorted(exceptions, key=lambda e: -e["max_corner_diff_px"]),
        },
        "rename_suggestions": rename_suggestions(agreement),
    }


def rename_suggestions(agreement: dict[str, Counter], majority: float = RENAME_MAJORITY) -> dict[str, str]:
    """YOLO names whose matched boxes COCO overwhelmingly calls something else."""
    suggestions = {}
    for yolo_name, counts in agreement.items():
        total = sum(counts.values())
        coco_name, top = counts.most_common(1)[0]
        if coco_name != yolo_name and top >= majority * total:
            suggestions[yolo_name] = coco_name
    return dict(sorted(suggestions.items()))


def merge_agreement(matrices: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Sum name-agreement matrices of several splits."""
    total: dict[str, Counter] = defaultdict(Counter)
    for matrix in matrices:
        for yolo_name, row in matrix.items():
            total[yolo_name].update(row)
    return {y: dict(sorted(c.items())) for y, c in sorted(total.items())}
