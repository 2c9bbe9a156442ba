"""In-graph FCOS-style target assignment from padded ground truth.

A location is positive for a box when (a) its point is inside the box AND within
`center_radius * stride` of the box centre (center sampling) AND its largest ltrb distance
falls in its level's regress range, or (b) it is the location nearest the box centre on the
level the box's size belongs to (`nearest_positive`): a box smaller than a stride may hold
no location point at all, and many fractures are small. A location claimed by several
boxes takes the smallest (FCOS's tie-break: the small box has fewer other locations).

Prediction-free on purpose: at random init the targets are already right, which matters
for small, rare boxes; the quality branch then learns how good each location's box is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from keras import ops

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


def assign(ground_truth, anchors: AnchorPoints, image_size: int, cfg: AssignerConfig) -> Assignment:
    """Ground truth `(B, M, 5)` rows `[x1, y1, x2, y2, class_id]` (normalized; padding rows
    class -1) -> per-location targets for the `N` anchor points."""
    ground_truth = ops.cast(ground_truth, "float32")
    boxes, valid = ground_truth[..., :4], ground_truth[..., 4] >= 0  # (B, M, 4), (B, M)
    points = ops.convert_to_tensor(anchors.points)  # (N, 2)
    low, high = (ops.convert_to_tensor(v) for v in level_ranges(anchors, cfg.regress_ranges, image_size))
    ltrb = ops.concatenate([points - boxes[:, :, None, :2], boxes[:, :, None, 2:] - points], axis=-1)  # (B, M, N, 4)
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2.0
    offsets = ops.abs(points - centres[:, :, None, :])  # (B, M, N, 2)
    radius = cfg.center_radius * ops.convert_to_tensor(anchors.strides)
    inside_box = ops.min(ltrb, axis=-1) > 0
    near_centre = ops.max(offsets, axis=-1) < radius
    reach = ops.max(ltrb, axis=-1)
    in_range = (reach >= low) & (reach <= high)
    positive = inside_box & near_centre & in_range
    if cfg.nearest_positive:
        positive = positive | _nearest_on_own_level(boxes, offsets, low, high)
    positive = positive & valid[:, :, None]
    return _resolve(positive, boxes, ground_truth[..., 4])


def _nearest_on_own_level(boxes, offsets, low, high):
    """`(B, M, N)`: one-hot of the location nearest each box centre among the levels whose
    regress range holds half the box's longer side (the reach from its centre)."""
    half_side = ops.max(boxes[..., 2:] - boxes[..., :2], axis=-1) / 2.0  # (B, M)
    own_level = (half_side[..., None] >= low) & (half_side[..., None] <= high)
    distance = ops.sum(ops.square(offsets), axis=-1)
    nearest = ops.argmin(ops.where(own_level, distance, FAR), axis=-1)
    return ops.one_hot(nearest, ops.shape(distance)[-1]) > 0


def _resolve(positive, boxes, classes) -> Assignment:
    """Each location takes its smallest-area claimant."""
    area = ops.prod(ops.maximum(boxes[..., 2:] - boxes[..., :2], 0.0), axis=-1)  # (B, M)
    claim = ops.where(positive, area[:, :, None], FAR)  # (B, M, N)
    owner = ops.argmin(claim, axis=1)  # (B, N)
    matched_boxes = ops.take_along_axis(boxes, ops.repeat(owner[..., None], 4, axis=-1), axis=1)
    matched_classes = ops.take_along_axis(classes, owner, axis=1)
    return Assignment(ops.cast(ops.any(positive, axis=1), "float32"), matched_boxes, ops.cast(matched_classes, "int32"))
