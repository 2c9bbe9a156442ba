"""Dense output -> final detections: boxes, scores, class-wise NMS.

Score = sqrt(sigmoid(class logit) * sigmoid(quality logit)): the class says what, the
quality how well this location's box fits, and the geometric mean keeps the score on the
class probability's scale. Class-wise NMS is `tf.image.combined_non_max_suppression`
(the TF serving graph has it; IoU is symmetric in x/y, so xyxy order is fine).
"""

from __future__ import annotations

import tensorflow as tf
from keras import ops

from fracture.models.detection.anchors import STRIDES, anchor_points, check_locations
from fracture.models.detection.config import DecodeConfig
from fracture.models.detection.layout import distances_to_boxes, split_dense

DEFAULTS = DecodeConfig()


def dense_boxes_and_scores(dense, image_size: int, strides=STRIDES, ignore_class: int | None = None):
    """`(boxes (B, N, 4) normalized xyxy clipped to the image, scores (B, N, K))`.

    `ignore_class` (e.g. the "no finding" class id) gets score 0 everywhere.
    """
    dense = ops.cast(dense, "float32")
    check_locations(dense.shape[1], image_size, strides)
    distances, quality_logits, class_logits = split_dense(dense)
    points = ops.convert_to_tensor(anchor_points(image_size, strides).points)
    boxes = ops.clip(distances_to_boxes(points, distances), 0.0, 1.0)
    scores = ops.sqrt(ops.sigmoid(class_logits) * ops.sigmoid(quality_logits)[..., None])
    if ignore_class is not None:
        keep = 1.0 - ops.one_hot(ignore_class, ops.shape(scores)[-1])
        scores = scores * keep
    return boxes, scores


def decode_detections(
    dense,
    image_size: int,
    strides=STRIDES,
    conf: float = DEFAULTS.confidence,
    iou: float = DEFAULTS.iou,
    max_det: int = DEFAULTS.max_detections,
    ignore_class: int | None = None,
):
    """Dense `(B, N, 4 + 1 + K)` -> `(boxes (B, D, 4), scores (B, D), classes (B, D) int32,
    valid (B,) int32)`, D = max_det, best first; rows past `valid` are zero padding.

    Boxes are normalized xyxy in the model input frame; classes are the class ids 0..K-1.
    """
    boxes, scores = dense_boxes_and_scores(dense, image_size, strides, ignore_class)
    nms = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :],
        scores,
        max_output_size_per_class=max_det,
        max_total_size=max_det,
        iou_threshold=iou,
        score_threshold=conf,
        pad_per_class=False,
        clip_boxes=False,
    )
    return nms.nmsed_boxes, nms.nmsed_scores, tf.cast(nms.nmsed_classes, tf.int32), nms.valid_detections
