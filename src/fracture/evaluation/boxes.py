"""Box AP with pycocotools: each image's predicted box is one detection, labelled with the
image's most probable fracture class and scored by that class's probability.

Ground truth: the true box of every positive image (category = its class). "No finding"
images have no ground truth, so a confident detection on one is a false positive.

Undefined values (AP of a class without true boxes, IoU with no positive image) are NaN
with the reason in the block's `undefined` dict, as in `metrics.py`.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fracture.evaluation.metrics import UNDEFINED, box_iou, metric_path

NO_POSITIVES = "no image with a true box"
SCALE = 1000.0  # boxes are normalized; COCO wants pixels. AP over area "all" is scale-free.


@dataclass(frozen=True)
class ImageBoxes:
    """One predicted box per image, against the image's true box (normalized xyxy in the
    original image's frame).

    Attributes:
        true_classes: each image's true class id.
        true_boxes: [N, 4]; rows of images without a box are ignored.
        has_box: whether each image has a true box.
        probs: [N, classes] predicted class probabilities (they label and score each box).
        pred_boxes: [N, 4] the predicted box of each image.
    """

    true_classes: Sequence[int]
    true_boxes: np.ndarray
    has_box: Sequence[bool]
    probs: np.ndarray
    pred_boxes: np.ndarray


def box_average_precision(boxes: ImageBoxes, class_names: Sequence[str], negative_id: int | None) -> dict:
    """AP50 and AP50:95 overall and per fracture class (COCO's 101-point interpolation).

    Returns NaN for classes without ground truth (listed under `no_ground_truth`, with
    the reason under `undefined`).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    fracture_ids = [c for c in range(len(class_names)) if c != negative_id]
    probs, pred_boxes = np.asarray(boxes.probs, float), boxes.pred_boxes
    images, annotations, detections = [], [], []
    for i, (cls, box, positive) in enumerate(zip(boxes.true_classes, np.asarray(boxes.true_boxes, float), boxes.has_box)):
        images.append({"id": i, "width": SCALE, "height": SCALE})
        if positive and int(cls) != negative_id:
            annotations.append(_annotation(len(annotations) + 1, i, int(cls), box))
        best = max(fracture_ids, key=lambda c: probs[i, c])
        detections.append({**_annotation(0, i, best, pred_boxes[i]), "score": float(probs[i, best])})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": c, "name": class_names[c]} for c in fracture_ids]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([{k: v for k, v in d.items() if k != "id"} for d in detections]) if detections else COCO()
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.params.catIds = fracture_ids
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # [IoU thr, recall, class] at area all, maxDets 100
    with_gt = {a["category_id"] for a in annotations}
    per_class, undefined = {}, {}
    for k, c in enumerate(fracture_ids):
        if c not in with_gt:
            per_class[class_names[c]] = {"ap50": math.nan, "ap50_95": math.nan, "instances": 0}
            for key in ("ap50", "ap50_95"):
                undefined[metric_path("per_class", class_names[c], key)] = f"no true box of {class_names[c]}"
            continue
        p = precision[:, :, k]
        per_class[class_names[c]] = {
            "ap50": _mean_valid(p[0]),
            "ap50_95": _mean_valid(p),
            "instances": sum(1 for a in annotations if a["category_id"] == c),
        }
    defined = [v for v in per_class.values() if v["instances"]]
    if not defined:
        undefined.update({"ap50": NO_POSITIVES, "ap50_95": NO_POSITIVES})
    return {
        "ap50": float(np.mean([v["ap50"] for v in defined])) if defined else math.nan,
        "ap50_95": float(np.mean([v["ap50_95"] for v in defined])) if defined else math.nan,
        "per_class": per_class,
        "no_ground_truth": [n for n, v in per_class.items() if not v["instances"]],
        UNDEFINED: undefined,
    }


def box_metrics(boxes: ImageBoxes, class_names: Sequence[str], negative_id: int | None) -> dict:
    """The `boxes` block of an evaluation: IoU over positive images and box AP, in one
    dict with one `undefined` (so the two parts' reasons cannot overwrite each other)."""
    has_box = np.asarray(boxes.has_box, bool)
    ious = box_iou(np.asarray(boxes.true_boxes, float), boxes.pred_boxes)[has_box]
    ap = box_average_precision(boxes, class_names, negative_id)
    undefined = {"mean_iou": NO_POSITIVES, "iou_at_least_0_5": NO_POSITIVES} if not has_box.any() else {}
    return {
        "positives": int(has_box.sum()),
        "mean_iou": float(ious.mean()) if has_box.any() else math.nan,
        "iou_at_least_0_5": float((ious >= 0.5).mean()) if has_box.any() else math.nan,
        **{k: v for k, v in ap.items() if k != UNDEFINED},
        UNDEFINED: {**undefined, **ap[UNDEFINED]},
    }


def _annotation(ann_id: int, image_id: int, category: int, box) -> dict:
    x1, y1, x2, y2 = (float(v) * SCALE for v in box)
    w, h = max(x2 - x1, 0.0), max(y2 - y1, 0.0)
    return {"id": ann_id, "image_id": image_id, "category_id": category, "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0}


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else math.nan
