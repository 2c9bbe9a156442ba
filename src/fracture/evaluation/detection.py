"""Detection metrics the field recognises, in the original image frame (pixels).

* COCO mAP50 and mAP50-95 by pycocotools (101-point interpolated precision, area "all",
  at most 100 detections per image and class); classes without a true box are NaN with
  the reason and left out of the mean; the "no finding" class never has boxes and is not
  a detection class.
* Per-class AP50 with the number of true boxes and a bootstrap 95% CI over *images*
  (per-class AP on a test split rests on a handful of boxes, so the interval matters).
* One-class "fracture" AP50: every class merged, so a box on the right fracture with the
  wrong fracture class still counts; with its bootstrap CI.
* FROC: sensitivity (true boxes hit by a detection with IoU >= 0.5, class-agnostic) at
  0.125 ... 8 false positives per image, averaged over all images (negatives included),
  and sensitivity at 1 FP/image with its bootstrap CI.

Matching is COCO's greedy rule, done once per image: detections in score order each take
the unmatched true box of highest IoU >= 0.5. Matching is per image, so a bootstrap
resample only recombines per-image results; it never re-matches. Our own AP50 is
pycocotools' (tested equal), which makes 1000 resamples cheap.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fracture.evaluation.metrics import UNDEFINED, metric_path

FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's recall thresholds
MAX_DETS_PER_CLASS = 100  # pycocotools' default maxDets, per image and class


@dataclass(frozen=True)
class ImageEval:
    """One image's truth and detections, xyxy pixels in the original image.

    Attributes:
        width, height: the original image size.
        true_boxes: `(M, 4)`; true_classes: `(M,)` class ids.
        boxes: `(D, 4)` detections; scores: `(D,)`; classes: `(D,)`.
    """

    width: int
    height: int
    true_boxes: np.ndarray
    true_classes: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


@dataclass(frozen=True)
class DetectionEvalSettings:
    """How the detection block is computed (all of it is written into `conventions`).

    Attributes:
        bootstrap: resamples of images for the CIs (0: no CI).
        seed: the bootstrap's seed.
        confidence, iou, max_detections, test_time_flip: the caller's decoding settings,
            reported.
    """

    bootstrap: int = 1000
    seed: int = 0
    confidence: float = 0.001
    iou: float = 0.7
    max_detections: int = 300
    test_time_flip: bool = False


@dataclass(frozen=True)
class Matches:
    """Per-image matching results for one class (or for all classes merged).

    Attributes:
        scores: per image, the scores of its (capped) detections.
        hits: per image, whether each of those detections matched a true box.
        n_true: per image, its number of true boxes.
    """

    scores: list
    hits: list
    n_true: np.ndarray


def detection_class_ids(num_classes: int, negative_id: int | None) -> list[int]:
    """The classes that have boxes: every class but "no finding"."""
    return [c for c in range(num_classes) if c != negative_id]


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` `(N, 4)` with every box in `b` `(M, 4)`, xyxy."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: np.clip(z[:, 2] - z[:, 0], 0, None) * np.clip(z[:, 3] - z[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_image(boxes, scores, true_boxes, threshold: float = 0.5, cap: int | None = MAX_DETS_PER_CLASS):
    """COCO's greedy matching on one image: `(scores, hits)` of its top `cap` detections."""
    order = np.argsort(-np.asarray(scores, float), kind="stable")[:cap]
    boxes, scores = np.asarray(boxes, float).reshape(-1, 4)[order], np.asarray(scores, float)[order]
    hits = np.zeros(len(order), bool)
    if len(true_boxes) and len(boxes):
        iou = pairwise_iou(boxes, true_boxes)
        taken = np.zeros(len(true_boxes), bool)
        for d in range(len(boxes)):
            candidates = np.where(taken, -1.0, iou[d])
            best = int(np.argmax(candidates))
            if candidates[best] >= threshold:
                taken[best], hits[d] = True, True
    return scores, hits


def matches(images: Sequence[ImageEval], class_id: int | None) -> Matches:
    """Match every image for one class, or class-agnostically (`class_id=None`)."""
    scores, hits, n_true = [], [], []
    for im in images:
        keep_t = np.ones(len(im.true_classes), bool) if class_id is None else np.asarray(im.true_classes) == class_id
        keep_d = np.ones(len(im.classes), bool) if class_id is None else np.asarray(im.classes) == class_id
        s, h = match_image(np.asarray(im.boxes).reshape(-1, 4)[keep_d], np.asarray(im.scores)[keep_d],
                           np.asarray(im.true_boxes).reshape(-1, 4)[keep_t], cap=None if class_id is None else MAX_DETS_PER_CLASS)
        scores.append(s)
        hits.append(h)
        n_true.append(int(keep_t.sum()))
    return Matches(scores, hits, np.array(n_true))


def average_precision(scores: np.ndarray, hits: np.ndarray, n_true: int) -> float:
    """COCO's 101-point interpolated AP of ranked detections; NaN without true boxes."""
    if n_true == 0:
        return math.nan
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(hits[order])
    fp = np.cumsum(~hits[order])
    recall = tp / n_true
    precision = tp / np.maximum(tp + fp, np.finfo(float).eps)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the envelope, as COCOeval
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.zeros(len(RECALL_POINTS))
    reached = idx < len(precision)
    q[reached] = precision[idx[reached]]
    return float(np.mean(q))


def ap_of(m: Matches, which: np.ndarray | None = None) -> float:
    """AP of the images `which` (indices, repeats allowed: a bootstrap resample)."""
    which = np.arange(len(m.n_true)) if which is None else which
    if not len(which):
        return math.nan
    scores = np.concatenate([m.scores[i] for i in which])
    hits = np.concatenate([m.hits[i] for i in which]).astype(bool)
    return average_precision(scores, hits, int(m.n_true[which].sum()))


def pr_curve(m: Matches) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision after each ranked detection (for the PR figure)."""
    if not m.scores or not int(m.n_true.sum()):
        return np.zeros(0), np.zeros(0)
    scores, hits = np.concatenate(m.scores), np.concatenate(m.hits).astype(bool)
    order = np.argsort(-scores, kind="mergesort")
    tp, fp = np.cumsum(hits[order]), np.cumsum(~hits[order])
    return tp / m.n_true.sum(), tp / np.maximum(tp + fp, 1)


def froc_curve(m: Matches) -> tuple[np.ndarray, np.ndarray]:
    """False positives per image and sensitivity after each ranked detection."""
    if not m.scores or not int(m.n_true.sum()):
        return np.zeros(0), np.zeros(0)
    scores, hits = np.concatenate(m.scores), np.concatenate(m.hits).astype(bool)
    order = np.argsort(-scores, kind="mergesort")
    return np.cumsum(~hits[order]) / len(m.n_true), np.cumsum(hits[order]) / m.n_true.sum()


def worst_misses(images: Sequence[ImageEval], n: int) -> list[int]:
    """Images whose true boxes are missed worst: the lowest best-IoU of any detection with
    a true box (a miss with nothing near ranks first), ties broken by the top false positive's score."""
    ranked = []
    for i, im in enumerate(images):
        if not len(im.true_boxes):
            continue
        iou = pairwise_iou(im.true_boxes, im.boxes)
        best = iou.max(axis=1).min() if iou.size else 0.0
        if best < 0.5:
            ranked.append((best, -float(np.max(im.scores, initial=0.0)), i))
    return [i for _, _, i in sorted(ranked)[:n]]


def froc(m: Matches, rates: Sequence[float] = FROC_RATES, which: np.ndarray | None = None) -> dict:
    """Sensitivity at each average number of false positives per image (class-agnostic
    matches `m`): the best sensitivity of any score threshold whose FP/image <= rate."""
    which = np.arange(len(m.n_true)) if which is None else which
    n_true = int(m.n_true[which].sum())
    if n_true == 0 or not len(which):
        return {r: math.nan for r in rates}
    scores = np.concatenate([m.scores[i] for i in which])
    hits = np.concatenate([m.hits[i] for i in which]).astype(bool)
    order = np.argsort(-scores, kind="mergesort")
    sens = np.concatenate([[0.0], np.cumsum(hits[order]) / n_true])
    fp_per_image = np.concatenate([[0.0], np.cumsum(~hits[order]) / len(which)])
    return {r: float(sens[fp_per_image <= r].max()) for r in rates}


def bootstrap_ci(statistic, n_images: int, settings: DetectionEvalSettings) -> list[float]:
    """Percentile 95% CI of `statistic(indices)` over image resamples; NaNs are skipped."""
    if settings.bootstrap <= 0 or n_images == 0:
        return [math.nan, math.nan]
    rng = np.random.default_rng(settings.seed)
    values = np.array([statistic(rng.integers(0, n_images, n_images)) for _ in range(settings.bootstrap)])
    values = values[np.isfinite(values)]
    if not len(values):
        return [math.nan, math.nan]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def coco_map(images: Sequence[ImageEval], class_ids: Sequence[int]) -> tuple[float, float, dict]:
    """pycocotools' mAP50, mAP50-95 and per-class AP50 (NaN for a class without true boxes)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_images, annotations, detections = [], [], []
    for i, im in enumerate(images):
        gt_images.append({"id": i, "width": im.width, "height": im.height})
        for box, cls in zip(np.asarray(im.true_boxes).reshape(-1, 4), im.true_classes):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(cls), "iscrowd": 0,
                                "bbox": _xywh(box), "area": float(_xywh(box)[2] * _xywh(box)[3])})
        for box, score, cls in zip(np.asarray(im.boxes).reshape(-1, 4), im.scores, im.classes):
            detections.append({"image_id": i, "category_id": int(cls), "bbox": _xywh(box), "score": float(score)})
    with_truth = {a["category_id"] for a in annotations}
    if not with_truth:
        return math.nan, math.nan, {c: math.nan for c in class_ids}
    gt = COCO()
    gt.dataset = {"images": gt_images, "annotations": annotations, "categories": [{"id": int(c)} for c in class_ids]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(detections) if detections else COCO()
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.params.catIds = [int(c) for c in class_ids]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # [IoU, recall, class], area all, maxDets 100
    per_class, ap50, ap50_95 = {}, [], []
    for k, c in enumerate(class_ids):
        if c not in with_truth:
            per_class[c] = math.nan
            continue
        p = precision[:, :, k]
        per_class[c] = _mean_valid(p[0])
        ap50.append(per_class[c])
        ap50_95.append(_mean_valid(p))
    return float(np.mean(ap50)), float(np.mean(ap50_95)), per_class


def detection_metrics(images: Sequence[ImageEval], class_names: Sequence[str], negative_id: int | None,
                      settings: DetectionEvalSettings = DetectionEvalSettings()) -> dict:
    """The `detection` block of metrics.json (keys: module docstring; NaN = null + reason)."""
    class_ids = detection_class_ids(len(class_names), negative_id)
    n = len(images)
    map50, map50_95, coco_per_class = coco_map(images, class_ids)
    undefined: dict = {}
    if math.isnan(map50):
        undefined.update({"map50": "no true box in this split", "map50_95": "no true box in this split"})
    per_class = {}
    for c in class_ids:
        m = matches(images, c)
        name = class_names[c]
        n_boxes = int(m.n_true.sum())
        per_class[name] = {"ap50": coco_per_class[c], "n_boxes": n_boxes,
                           "ci": bootstrap_ci(lambda w, m=m: ap_of(m, w), n, settings) if n_boxes else [math.nan, math.nan]}
        if not n_boxes:
            for key in ("ap50", "ci"):
                undefined[metric_path("per_class", name, key)] = f"no true box of {name}"
    merged = matches(images, None)
    rates = froc(merged)
    block = {
        "map50": map50,
        "map50_95": map50_95,
        "per_class": per_class,
        "one_class_ap50": ap_of(merged),
        "one_class_ap50_ci": bootstrap_ci(lambda w: ap_of(merged, w), n, settings),
        "froc": {_rate_key(r): v for r, v in rates.items()},
        "sens_at_1fp": rates[1.0],
        "sens_at_1fp_ci": bootstrap_ci(lambda w: froc(merged, (1.0,), w)[1.0], n, settings),
        "images": n,
        "true_boxes": int(merged.n_true.sum()),
        "detections": int(sum(len(s) for s in merged.scores)),
        "test_time_flip": settings.test_time_flip,
        "conventions": conventions(settings),
    }
    if not merged.n_true.sum():
        for key in ("one_class_ap50", "one_class_ap50_ci", "sens_at_1fp", "sens_at_1fp_ci", "froc"):
            undefined[key] = "no true box in this split"
    else:
        for key, value in block["froc"].items():
            if math.isnan(value):
                undefined[metric_path("froc", key)] = "FP rate never reached"
    block[UNDEFINED] = undefined
    return block


def conventions(settings: DetectionEvalSettings) -> dict:
    """The conventions, in words, for metrics.json and the report."""
    return {
        "frame": "boxes in the original image's pixels (the letterbox is undone before scoring)",
        "decoding": (f"class-wise NMS at IoU {settings.iou}, confidence >= {settings.confidence}, "
                     f"at most {settings.max_detections} boxes per image; 'no finding' is never a box class"),
        "test_time_flip": ("on: the dense outputs of each image and of its mirror image averaged per location "
                           "before NMS (2 forward passes)" if settings.test_time_flip else "off (one forward pass)"),
        "map": "pycocotools COCOeval bbox: 101-point interpolated precision, area 'all', maxDets 100; "
               "mAP50-95 averages IoU 0.50:0.05:0.95; classes without a true box are left out of the mean",
        "matching": "COCO greedy: detections in score order each take the unmatched true box of highest IoU >= 0.5",
        "one_class": "all fracture classes merged into one before matching (class-agnostic)",
        "froc": "class-agnostic matches at IoU 0.5; sensitivity = matched true boxes / all true boxes; "
                "false positives per image averaged over every image, negatives included",
        "ci": f"percentile bootstrap over images, {settings.bootstrap} resamples, seed {settings.seed}",
    }


def _rate_key(rate: float) -> str:
    return f"{rate:g}"


def _xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, max(x2 - x1, 0.0), max(y2 - y1, 0.0)]


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else math.nan
