"""In-graph target assignment from padded ground truth: FCOS center sampling or a
task-aligned assigner (TOOD / YOLOv8).

Center sampling (`kind: center_sampling`): a location is positive for a box when (a) its
point is inside the box AND within `center_radius * stride` of the box centre AND its
largest ltrb distance falls in its level's regress range, or (b) it is the location nearest
the box centre on the level the box's size belongs to (`nearest_positive`): a box smaller
than a stride may hold no location point at all, and many fractures are small. A location
claimed by several boxes takes the smallest (FCOS's tie-break: the small box has fewer
other locations). Prediction-free: at random init the targets are already right.

Task-aligned (`kind: task_aligned`): the candidates are the locations inside the box (plus
its nearest location, as above); of those, the `topk` whose current, detached prediction
scores `p(class)^alpha * IoU^beta` highest are positive, and a location claimed twice keeps
the box its predicted box overlaps most. The positives move to where the head already
localizes well, so the class score learns to rank well-localized boxes first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from keras import ops

from fracture.models.box_ops import iou
from fracture.models.detection.anchors import AnchorPoints
from fracture.models.detection.config import AssignerConfig

FAR = 1e9  # "not allowed" in masked arg-mins (normalized coordinates are ~1)


@dataclass
class Assignment:
    """Per-location targets.

    Attributes:
        positive: `(B, N)` float32 1/0.
        boxes: `(B, N, 4)` the matched box (normalized xyxy); meaningless where negative.
        classes: `(B, N)` int32 the matched class id; meaningless where negative.
    """

    positive: object
    boxes: object
    classes: object


def level_ranges(anchors: AnchorPoints, ranges_px, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-location `(low, high)` regress range, normalized; one fewer boundary than levels."""
    bounds = np.concatenate([[0.0], np.asarray(ranges_px, np.float64) / image_size, [np.inf]])
    num_levels = int(anchors.levels.max()) + 1
    if len(bounds) != num_levels + 1:
        raise ValueError(f"regress_ranges {list(ranges_px)} needs {num_levels - 1} values for {num_levels} levels.")
    return bounds[anchors.levels].astype(np.float32), bounds[anchors.levels + 1].astype(np.float32)


@dataclass
class Predictions:
    """The head's current output, as the task-aligned assigner reads it (gradients stopped).

    Attributes:
        boxes: `(B, N, 4)` decoded boxes, normalized xyxy.
        class_scores: `(B, N, K)` sigmoid class probabilities.
    """

    boxes: object
    class_scores: object


def assign(ground_truth, anchors: AnchorPoints, image_size: int, cfg: AssignerConfig, predictions: Predictions | None = None) -> Assignment:
    """Ground truth `(B, M, 5)` rows `[x1, y1, x2, y2, class_id]` (normalized; padding rows
    class -1) -> per-location targets for the `N` anchor points. `predictions` is needed by
    (and only read by) `kind: task_aligned`."""
    ground_truth = ops.cast(ground_truth, "float32")
    boxes, classes = ground_truth[..., :4], ground_truth[..., 4]  # (B, M, 4), (B, M)
    valid = (classes >= 0)[:, :, None]
    points = ops.convert_to_tensor(anchors.points)  # (N, 2)
    low, high = (ops.convert_to_tensor(v) for v in level_ranges(anchors, cfg.regress_ranges, image_size))
    ltrb = ops.concatenate([points - boxes[:, :, None, :2], boxes[:, :, None, 2:] - points], axis=-1)  # (B, M, N, 4)
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2.0
    offsets = ops.abs(points - centres[:, :, None, :])  # (B, M, N, 2)
    inside_box = ops.min(ltrb, axis=-1) > 0
    nearest = _nearest_on_own_level(boxes, offsets, low, high) if cfg.nearest_positive else ops.zeros_like(inside_box)
    if cfg.kind == "task_aligned":
        if predictions is None:
            raise ValueError("model.detection.assigner.kind=task_aligned needs the head's predictions.")
        return _task_aligned(boxes, classes, (inside_box | nearest) & valid, predictions, cfg)
    radius = cfg.center_radius * ops.convert_to_tensor(anchors.strides)
    near_centre = ops.max(offsets, axis=-1) < radius
    reach = ops.max(ltrb, axis=-1)
    in_range = (reach >= low) & (reach <= high)
    positive = ((inside_box & near_centre & in_range) | nearest) & valid
    area = ops.prod(ops.maximum(boxes[..., 2:] - boxes[..., :2], 0.0), axis=-1)  # (B, M)
    return _resolve(positive, ops.broadcast_to(area[:, :, None], ops.shape(positive)), boxes, classes)


def _task_aligned(boxes, classes, candidate, predictions: Predictions, cfg: AssignerConfig) -> Assignment:
    """`candidate` `(B, M, N)` -> the top-k aligned candidates of each box, conflicts to the
    box with the highest IoU."""
    pred_boxes = ops.stop_gradient(predictions.boxes)
    overlaps = ops.clip(iou(pred_boxes[:, None], boxes[:, :, None]), 0.0, 1.0)  # (B, M, N)
    num_classes = ops.shape(predictions.class_scores)[-1]
    box_class = ops.one_hot(ops.cast(ops.maximum(classes, 0.0), "int32"), num_classes)  # (B, M, K)
    scores = ops.einsum("bmk,bnk->bmn", box_class, ops.stop_gradient(predictions.class_scores))
    metric = ops.power(scores, cfg.align_alpha) * ops.power(overlaps, cfg.align_beta)
    # Non-candidates rank last; exact top-k indices (not a threshold) so ties at a metric of
    # 0, common at init, cannot make a large box claim every location inside it.
    _, top = ops.top_k(ops.where(candidate, metric, -1.0), k=cfg.topk)  # (B, M, k)
    num_locations = ops.shape(candidate)[-1]
    chosen = ops.zeros_like(candidate)
    for rank in range(cfg.topk):
        chosen = chosen | (ops.one_hot(top[..., rank], num_locations) > 0)
    return _resolve(chosen & candidate, -overlaps, boxes, classes)


def _nearest_on_own_level(boxes, offsets, low, high):
    """`(B, M, N)`: one-hot of the location nearest each box centre among the levels whose
    regress range holds half the box's longer side (the reach from its centre)."""
    half_side = ops.max(boxes[..., 2:] - boxes[..., :2], axis=-1) / 2.0  # (B, M)
    own_level = (half_side[..., None] >= low) & (half_side[..., None] <= high)
    distance = ops.sum(ops.square(offsets), axis=-1)
    nearest = ops.argmin(ops.where(own_level, distance, FAR), axis=-1)
    return ops.one_hot(nearest, ops.shape(distance)[-1]) > 0


def _resolve(positive, cost, boxes, classes) -> Assignment:
    """Each location takes its lowest-`cost` claimant; `positive` and `cost` are `(B, M, N)`."""
    owner = ops.argmin(ops.where(positive, cost, FAR), axis=1)  # (B, N)
    matched_boxes = ops.take_along_axis(boxes, ops.repeat(owner[..., None], 4, axis=-1), axis=1)
    matched_classes = ops.take_along_axis(classes, owner, axis=1)
    return Assignment(ops.cast(ops.any(positive, axis=1), "float32"), matched_boxes, ops.cast(matched_classes, "int32"))
