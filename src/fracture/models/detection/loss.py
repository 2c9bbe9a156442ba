"""`DetectionLoss`: the dense head's loss, a plain Keras Loss on the "detections" output.

A Keras Loss (not a custom train_step) so the generic trainer compiles the detector like any
two-output model. Targets are assigned in-graph (`detection.assigner`; the task-aligned
kind reads the detached predictions) from padded ground truth, y_true `(B, M, 5)` rows
`[x1, y1, x2, y2, class_id]`, boxes normalized xyxy in the model input frame, padding rows
all -1 (M >= 1; an image without boxes is all padding).

Terms, each summed over the batch and divided by its number of positive locations (at
least 1, so an all-background batch still gets a class loss > 0):
  * class: sigmoid focal loss on every location's K class logits, with target 1 at a
    positive's class ("focal") or that location's detached box IoU ("quality_focal");
  * box: 1 - GIoU (or CIoU) of the positives' decoded boxes with their matched boxes;
  * quality: BCE of the quality logit against the (stop-gradient) IoU of the positives.
`call` returns per-image values scaled so Keras' mean over the batch is that total.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from fracture.models.box_ops import IOU_VARIANTS, iou
from fracture.models.detection.anchors import STRIDES, anchor_points, check_locations
from fracture.models.detection.assigner import Assignment, Predictions, assign
from fracture.models.detection.config import (
    AssignerConfig,
    DetectionConfig,
    DetectionLossConfig,
)
from fracture.models.detection.layout import distances_to_boxes, split_dense
from fracture.models.losses import LossConfig, build_losses


def bce_with_logits(targets, logits):
    """Element-wise binary cross-entropy from logits (soft targets allowed), stable for any logit."""
    return ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))


def sigmoid_focal_loss(targets, logits, gamma: float, alpha: float):
    """Element-wise focal loss (Lin et al. 2017) from logits."""
    probabilities = ops.sigmoid(logits)
    cross_entropy = bce_with_logits(targets, logits)
    p_t = targets * probabilities + (1.0 - targets) * (1.0 - probabilities)
    alpha_t = targets * alpha + (1.0 - targets) * (1.0 - alpha)
    return alpha_t * ops.power(1.0 - p_t, gamma) * cross_entropy


def quality_focal_loss(targets, logits, beta: float):
    """Element-wise quality focal loss (Li et al. 2020, GFL) from logits: BCE against a soft
    target (the IoU at a positive, 0 elsewhere), modulated by |target - p|^beta."""
    return ops.power(ops.abs(targets - ops.sigmoid(logits)), beta) * bce_with_logits(targets, logits)


def _as(cls, value):
    """A config dataclass from itself, a dict (get_config round trip) or None (defaults)."""
    if value is None:
        return cls()
    return value if isinstance(value, cls) else cls(**value)


@keras.saving.register_keras_serializable(package="fracture")
class DetectionLoss(keras.losses.Loss):
    """Focal class + GIoU/CIoU box + BCE quality loss with in-graph target assignment.

    Args:
        image_size: model input side (the anchor points depend on it).
        strides: the dense output's level strides, ascending.
        assigner: `AssignerConfig` or its dict.
        terms: `DetectionLossConfig` or its dict.
    """

    def __init__(self, image_size: int, strides=STRIDES, assigner=None, terms=None, name: str = "detection_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.image_size = int(image_size)
        self.strides = tuple(int(s) for s in strides)
        self.assigner = _as(AssignerConfig, assigner)
        self.terms = _as(DetectionLossConfig, terms)
        self.anchors = anchor_points(self.image_size, self.strides)

    def components(self, y_true, y_pred) -> dict:
        """The three weighted terms, each `(B,)` normalised as `call` is (their sum is `call`)."""
        y_pred = ops.cast(y_pred, "float32")
        check_locations(y_pred.shape[1], self.image_size, self.strides)
        distances, quality_logits, class_logits = split_dense(y_pred)
        pred_boxes = distances_to_boxes(ops.convert_to_tensor(self.anchors.points), distances)
        current = Predictions(boxes=pred_boxes, class_scores=ops.sigmoid(class_logits))
        target = assign(y_true, self.anchors, self.image_size, self.assigner, current)
        batch = ops.cast(ops.shape(y_pred)[0], "float32")
        scale = batch / ops.maximum(ops.sum(target.positive), 1.0)
        matched_iou = _detached_iou(pred_boxes, target.boxes)  # a target of the class and quality terms
        terms = self.terms
        return {
            "class": terms.class_weight * scale * self._class_term(target, matched_iou, class_logits),
            "box": terms.box_weight * scale * self._box_term(target, pred_boxes),
            "quality": terms.quality_weight * scale * self._quality_term(target, matched_iou, quality_logits),
        }

    def _class_term(self, target: Assignment, matched_iou, class_logits):
        one_hot = ops.one_hot(target.classes, ops.shape(class_logits)[-1]) * target.positive[..., None]
        terms = self.terms
        if terms.class_loss == "quality_focal":
            soft = one_hot * matched_iou[..., None]
            per_logit = quality_focal_loss(soft, class_logits, terms.quality_focal_beta)
        else:
            per_logit = sigmoid_focal_loss(one_hot, class_logits, terms.focal_gamma, terms.focal_alpha)
        return ops.sum(per_logit, axis=(1, 2))

    def _box_term(self, target: Assignment, pred_boxes):
        overlap = IOU_VARIANTS[self.terms.box](pred_boxes, target.boxes)
        return ops.sum(target.positive * (1.0 - overlap), axis=1)

    def _quality_term(self, target: Assignment, matched_iou, quality_logits):
        return ops.sum(target.positive * bce_with_logits(matched_iou, quality_logits), axis=1)

    def call(self, y_true, y_pred):
        parts = self.components(y_true, y_pred)
        return parts["class"] + parts["box"] + parts["quality"]

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "strides": list(self.strides),
            "assigner": dataclasses.asdict(self.assigner),
            "terms": dataclasses.asdict(self.terms),
        }


def _detached_iou(pred_boxes, matched_boxes):
    """`(B, N)` IoU in [0, 1] as a target: no gradient flows into the boxes through it."""
    return ops.stop_gradient(ops.clip(iou(pred_boxes, matched_boxes), 0.0, 1.0))


def build_detection_losses(loss: LossConfig, detection: DetectionConfig, image_size: int, strides) -> tuple[dict, dict]:
    """`(losses, loss_weights)` for a dense model's outputs {"class", "detections"}.

    The class head's loss and both weights come from `model.loss` as for the single-box
    model (`box_loss_weight` weights the whole detection loss); the detection loss from
    `model.detection`.
    """
    dense = DetectionLoss(image_size, strides, detection.assigner, detection.loss)
    return build_losses(loss, box_output="detections", box_loss=dense)
