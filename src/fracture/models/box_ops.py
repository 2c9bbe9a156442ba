"""Pure box geometry on normalized xyxy tensors (keras.ops, so it runs in any backend graph)."""

from __future__ import annotations

import math

from keras import ops

EPSILON = 1e-7


def canonical_xyxy(boxes):
    """Order each box's corners so that x1 <= x2 and y1 <= y2. `boxes`: `(..., 4)`."""
    x1, y1, x2, y2 = ops.unstack(boxes, 4, axis=-1)
    return ops.stack([ops.minimum(x1, x2), ops.minimum(y1, y2), ops.maximum(x1, x2), ops.maximum(y1, y2)], axis=-1)


def _area(boxes):
    return ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * ops.maximum(boxes[..., 3] - boxes[..., 1], 0.0)


def iou(boxes_a, boxes_b):
    """Element-wise IoU of two `(..., 4)` xyxy tensors -> `(...)`."""
    top_left = ops.maximum(boxes_a[..., :2], boxes_b[..., :2])
    bottom_right = ops.minimum(boxes_a[..., 2:], boxes_b[..., 2:])
    wh = ops.maximum(bottom_right - top_left, 0.0)
    intersection = wh[..., 0] * wh[..., 1]
    union = _area(boxes_a) + _area(boxes_b) - intersection
    return intersection / (union + EPSILON)


def _enclosing(boxes_a, boxes_b):
    top_left = ops.minimum(boxes_a[..., :2], boxes_b[..., :2])
    bottom_right = ops.maximum(boxes_a[..., 2:], boxes_b[..., 2:])
    return top_left, bottom_right


def giou(boxes_a, boxes_b):
    """Generalized IoU (Rezatofighi et al. 2019), in [-1, 1]."""
    top_left, bottom_right = _enclosing(boxes_a, boxes_b)
    wh = ops.maximum(bottom_right - top_left, 0.0)
    hull = wh[..., 0] * wh[..., 1]
    plain = iou(boxes_a, boxes_b)
    top_left_i = ops.maximum(boxes_a[..., :2], boxes_b[..., :2])
    wh_i = ops.maximum(ops.minimum(boxes_a[..., 2:], boxes_b[..., 2:]) - top_left_i, 0.0)
    union = _area(boxes_a) + _area(boxes_b) - wh_i[..., 0] * wh_i[..., 1]
    return plain - (hull - union) / (hull + EPSILON)


def ciou(boxes_a, boxes_b):
    """Complete IoU (Zheng et al. 2020): IoU minus centre distance and aspect-ratio terms."""
    plain = iou(boxes_a, boxes_b)
    top_left, bottom_right = _enclosing(boxes_a, boxes_b)
    diagonal = ops.sum(ops.square(bottom_right - top_left), axis=-1) + EPSILON
    centre_a = (boxes_a[..., :2] + boxes_a[..., 2:]) / 2.0
    centre_b = (boxes_b[..., :2] + boxes_b[..., 2:]) / 2.0
    centre_distance = ops.sum(ops.square(centre_a - centre_b), axis=-1)
    w_a, h_a = boxes_a[..., 2] - boxes_a[..., 0], boxes_a[..., 3] - boxes_a[..., 1]
    w_b, h_b = boxes_b[..., 2] - boxes_b[..., 0], boxes_b[..., 3] - boxes_b[..., 1]
    v = (4.0 / math.pi**2) * ops.square(ops.arctan(w_b / (h_b + EPSILON)) - ops.arctan(w_a / (h_a + EPSILON)))
    # alpha is a weight, not a path for gradients (as in the paper's reference code).
    alpha = ops.stop_gradient(v / (1.0 - plain + v + EPSILON))
    return plain - centre_distance / diagonal - alpha * v


IOU_VARIANTS = {"giou": giou, "ciou": ciou, "iou": iou}
