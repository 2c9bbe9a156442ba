"""Losses for the two heads and the class weights that go with them.

* Class head: categorical cross-entropy with label smoothing, focal, or a "hybrid" mix.
* Box head: L1 + (1 - GIoU) or (1 - CIoU). The pipeline's box sample weight is 0 for "no
  finding" negatives, so they add nothing to the box loss and never pull the boxes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import keras
import numpy as np
from keras import ops

from fracture.models.box_ops import IOU_VARIANTS

CLASSIFICATION_LOSSES = ("ce", "focal", "hybrid")
BOX_LOSSES = ("giou", "ciou", "iou")


@dataclass
class LossConfig:
    """`model.loss` (documented in conf/model/default.yaml)."""

    classification: str = "ce"
    label_smoothing: float = 0.05
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    hybrid_focal_weight: float = 0.5
    box: str = "giou"
    box_l1_weight: float = 1.0
    box_iou_weight: float = 1.0
    class_loss_weight: float = 1.0
    box_loss_weight: float = 1.0

    def __post_init__(self):
        if self.classification not in CLASSIFICATION_LOSSES:
            raise ValueError(f"model.loss.classification={self.classification!r}; expected one of {CLASSIFICATION_LOSSES}.")
        if self.box not in BOX_LOSSES:
            raise ValueError(f"model.loss.box={self.box!r}; expected one of {BOX_LOSSES}.")


@dataclass
class ClassWeightConfig:
    """`model.class_weights`: "balanced" (n / (C * n_c), from the train split) or "none",
    times optional per-class multipliers by class name (critical classes x1.5-3)."""

    mode: str = "balanced"
    multipliers: dict = field(default_factory=dict)
    max_weight: float = 10.0


@keras.saving.register_keras_serializable(package="fracture")
class ClassificationLoss(keras.losses.Loss):
    """Cross-entropy, focal, or `(1 - w) * CE + w * focal` on softmax probabilities.

    Args:
        kind: "ce", "focal" or "hybrid".
        label_smoothing: smoothing applied to the one-hot targets (all kinds).
        focal_gamma, focal_alpha: focal-loss focusing and balance parameters.
        hybrid_focal_weight: w in the hybrid mix.
    """

    def __init__(
        self,
        kind: str = "ce",
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
        focal_alpha: float = 0.25,
        hybrid_focal_weight: float = 0.5,
        name: str = "classification_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if kind not in CLASSIFICATION_LOSSES:
            raise ValueError(f"classification loss {kind!r}; expected one of {CLASSIFICATION_LOSSES}.")
        self.kind = kind
        self.label_smoothing = label_smoothing
        self.focal_gamma = focal_gamma
        self.focal_alpha = focal_alpha
        self.hybrid_focal_weight = hybrid_focal_weight

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "float32")
        ce = keras.losses.categorical_crossentropy(y_true, y_pred, label_smoothing=self.label_smoothing)
        if self.kind == "ce":
            return ce
        focal = keras.losses.categorical_focal_crossentropy(
            y_true, y_pred, alpha=self.focal_alpha, gamma=self.focal_gamma, label_smoothing=self.label_smoothing
        )
        if self.kind == "focal":
            return focal
        return (1.0 - self.hybrid_focal_weight) * ce + self.hybrid_focal_weight * focal

    def get_config(self):
        return {
            **super().get_config(),
            "kind": self.kind,
            "label_smoothing": self.label_smoothing,
            "focal_gamma": self.focal_gamma,
            "focal_alpha": self.focal_alpha,
            "hybrid_focal_weight": self.hybrid_focal_weight,
        }


@keras.saving.register_keras_serializable(package="fracture")
class BoxLoss(keras.losses.Loss):
    """Per-image `l1_weight * mean|pred - true| + iou_weight * (1 - (G|C)IoU)`.

    Mask negatives with the sample weight (the pipeline does): Keras multiplies each
    image's loss by it before averaging over the batch.
    """

    def __init__(self, iou: str = "giou", l1_weight: float = 1.0, iou_weight: float = 1.0, name: str = "box_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if iou not in BOX_LOSSES:
            raise ValueError(f"box loss {iou!r}; expected one of {BOX_LOSSES}.")
        self.iou = iou
        self.l1_weight = l1_weight
        self.iou_weight = iou_weight

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        l1 = ops.mean(ops.abs(y_pred - y_true), axis=-1)
        overlap = IOU_VARIANTS[self.iou](y_pred, y_true)
        return self.l1_weight * l1 + self.iou_weight * (1.0 - overlap)

    def get_config(self):
        return {**super().get_config(), "iou": self.iou, "l1_weight": self.l1_weight, "iou_weight": self.iou_weight}


def build_losses(cfg: LossConfig, box_output: str = "box", box_loss: keras.losses.Loss | None = None) -> tuple[dict, dict]:
    """`(losses, loss_weights)` dicts keyed by output name, for `model.compile`.

    Args:
        box_output: the name of the box output ("detections" for the dense detector).
        box_loss: its loss; default the single-box `BoxLoss` from `cfg`.
    """
    losses = {
        "class": ClassificationLoss(
            cfg.classification, cfg.label_smoothing, cfg.focal_gamma, cfg.focal_alpha, cfg.hybrid_focal_weight
        ),
        box_output: box_loss if box_loss is not None else BoxLoss(cfg.box, cfg.box_l1_weight, cfg.box_iou_weight),
    }
    return losses, {"class": cfg.class_loss_weight, box_output: cfg.box_loss_weight}


def compute_class_weights(
    counts: Sequence[int], class_names: Sequence[str], cfg: ClassWeightConfig
) -> np.ndarray:
    """Per-class weights from train-split sample counts.

    "balanced" gives `n / (C * n_c)` (sklearn's definition), so the weighted classes
    contribute equally; multipliers (by class name) scale on top; the result is capped at
    `max_weight` so a class with a handful of images cannot dominate. Classes with no train
    samples get weight 1 (they never occur, so it does not matter, but it stays finite).
    """
    counts = np.asarray(counts, np.float64)
    if cfg.mode == "none":
        weights = np.ones_like(counts)
    elif cfg.mode == "balanced":
        total, present = counts.sum(), np.count_nonzero(counts)
        weights = np.where(counts > 0, total / (max(present, 1) * np.maximum(counts, 1)), 1.0)
    else:
        raise ValueError(f"model.class_weights.mode={cfg.mode!r}; expected balanced or none.")
    unknown = set(cfg.multipliers) - set(class_names)
    if unknown:
        raise ValueError(f"model.class_weights.multipliers names unknown classes {sorted(unknown)}; classes: {list(class_names)}.")
    for name, multiplier in cfg.multipliers.items():
        weights[list(class_names).index(name)] *= float(multiplier)
    return np.minimum(weights, cfg.max_weight).astype(np.float32)


def class_counts(class_ids: Sequence[int], num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(class_ids, np.int64), minlength=num_classes)


