"""The end-to-end two-head model: raw RGB -> backbone -> heads -> {"class", "box"}.

With `box_head: dense` the box head is the multi-scale anchor-free detector
(`fracture.models.detection`): raw RGB -> backbone [C3, C4, C5] -> heads -> {"class",
"detections"}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import keras

from fracture.config import typed
from fracture.models.backbones import build_backbone
from fracture.models.detection import (
    STRIDES,
    ClassHeadSpec,
    DenseHeadSpec,
    DetectionConfig,
    NeckSpec,
    build_dense_heads,
)
from fracture.models.detection.loss import build_detection_losses
from fracture.models.distill import DistillConfig, load_teacher, mixture_of_experts
from fracture.models.losses import LossConfig, build_losses
from fracture.models.heads import build_heads

BOX_HEADS = ("single", "dense")


@dataclass
class ModelConfig:
    """The `model` config group (see conf/model/default.yaml for each key)."""

    backbone: str = "densenet121"
    weights: str | None = "imagenet"
    strict_weights: bool = False
    dropout: float = 0.3
    box_hidden_units: int = 256
    attention_gate: bool = False
    attention_hidden_units: int = 0
    loss: dict = field(default_factory=dict)
    class_weights: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    optimizer: dict = field(default_factory=dict)
    box_head: str = "single"
    neck_width: int = 64
    head_convs: int = 2
    strides: list = field(default_factory=lambda: list(STRIDES))
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self):
        if self.box_head not in BOX_HEADS:
            raise ValueError(f"model.box_head={self.box_head!r}; expected one of {BOX_HEADS}.")
        if isinstance(self.detection, dict):
            self.detection = typed(DetectionConfig, self.detection, "model.detection")
        if isinstance(self.distill, dict):
            self.distill = typed(DistillConfig, self.distill, "model.distill")
        if self.distill.enabled and self.box_head != "single":
            raise ValueError("model.distill.enabled needs model.box_head=single (the teacher and student are classifiers).")
        if tuple(self.strides) != STRIDES:
            # The backbone registry taps exactly these three levels.
            raise ValueError(f"model.strides={list(self.strides)}; the backbones provide {list(STRIDES)}.")

    def dense_head_spec(self, num_classes: int, image_size: int) -> DenseHeadSpec:
        """The detector head's shape from these keys."""
        neck = NeckSpec(self.neck_width, self.detection.norm_groups)
        return DenseHeadSpec(num_classes, image_size, tuple(self.strides), neck, self.head_convs, self.detection.prior_probability)

    def class_head_spec(self, num_classes: int) -> ClassHeadSpec:
        return ClassHeadSpec(num_classes, self.dropout, self.attention_gate, self.attention_hidden_units)


@dataclass
class FractureModel:
    """The model and its parts, which share weights.

    Attributes:
        model: images `(B, S, S, 3)` raw 0-255 -> {"class", "box"} (single) or
            {"class", "detections"} (dense); what gets saved.
        backbone: images -> feature map (single) or [C3, C4, C5] (dense).
        heads: the backbone's output -> the model's outputs; trained alone on cached features.
        weights: what the backbone weights really are ("imagenet", a path, or None = random).
    """

    model: keras.Model
    backbone: keras.Model
    heads: keras.Model
    weights: str | None


def build_model(cfg: ModelConfig, num_classes: int, image_size: int, class_names: Sequence[str] | None = None) -> FractureModel:
    """Build the backbone from the registry and put the two heads on it.

    Args:
        class_names: the classes in output order, when known: a distilled model checks its
            teacher's against them (else only their number).
    """
    if cfg.box_head == "dense":
        return _build_dense_model(cfg, num_classes, image_size)
    backbone, loaded = build_backbone(cfg.backbone, image_size, cfg.weights, cfg.strict_weights)
    if cfg.distill.enabled:
        return _build_distilled_model(cfg, backbone, loaded, num_classes, image_size, class_names)
    heads = build_heads(
        tuple(backbone.output.shape[1:]),
        num_classes,
        dropout=cfg.dropout,
        box_hidden_units=cfg.box_hidden_units,
        attention_gate=cfg.attention_gate,
        attention_hidden_units=cfg.attention_hidden_units,
    )
    images = keras.Input((image_size, image_size, 3), name="image")
    outputs = heads(backbone(images))
    model = keras.Model(images, outputs, name=f"fracture_{cfg.backbone}")
    return FractureModel(model, backbone, heads, loaded)


def _build_dense_model(cfg: ModelConfig, num_classes: int, image_size: int) -> FractureModel:
    """Multi-scale backbone -> {"class" (pooled C5), "detections" (FPN + PAN + dense head)}."""
    backbone, loaded = build_backbone(cfg.backbone, image_size, cfg.weights, cfg.strict_weights, multiscale=True)
    feature_shapes = [tuple(t.shape[1:]) for t in backbone.outputs]
    heads = build_dense_heads(feature_shapes, cfg.dense_head_spec(num_classes, image_size), cfg.class_head_spec(num_classes))
    images = keras.Input((image_size, image_size, 3), name="image")
    model = keras.Model(images, heads(backbone(images)), name=f"fracture_{cfg.backbone}_detector")
    return FractureModel(model, backbone, heads, loaded)


def _build_distilled_model(cfg: ModelConfig, backbone, loaded, num_classes: int, image_size: int, class_names) -> FractureModel:
    """The teacher run's frozen model + this backbone as the student + a gate
    (`fracture.models.distill`); `weights` are the student's."""
    teacher = load_teacher(cfg.distill.teacher_run, image_size, class_names, num_classes)
    student_heads = build_heads(
        tuple(backbone.output.shape[1:]), num_classes, dropout=cfg.dropout, box_hidden_units=cfg.box_hidden_units,
        attention_gate=cfg.attention_gate, attention_hidden_units=cfg.attention_hidden_units,
    )
    model, experts_backbone, heads = mixture_of_experts(teacher, backbone, student_heads, cfg.distill, image_size)
    return FractureModel(model, experts_backbone, heads, loaded)


def build_model_losses(cfg: ModelConfig, loss: LossConfig, image_size: int) -> tuple[dict, dict]:
    """`(losses, loss_weights)` for the outputs `build_model(cfg, ...)` gives."""
    if cfg.box_head == "dense":
        return build_detection_losses(loss, cfg.detection, image_size, cfg.strides)
    return build_losses(loss)


def split_saved_model(model: keras.Model) -> FractureModel:
    """The parts of a model built by `build_model` (after `keras.models.load_model`)."""
    backbone = next(layer for layer in model.layers if layer.name.endswith("_backbone"))
    return FractureModel(model, backbone, model.get_layer("heads"), None)


def set_backbone_trainable(backbone: keras.Model, trainable_layers: int | str, freeze_batchnorm: bool = False) -> None:
    """Freeze or unfreeze the backbone.

    Args:
        trainable_layers: "all", 0 (frozen), or N: only the top N layers with weights
            train, BatchNormalization not counted.
        freeze_batchnorm: keep every BatchNormalization layer frozen (inference mode) while
            the rest trains: keras' transfer-learning guide's advice when fine-tuning
            *pretrained* weights, so small batches do not wreck their statistics. Partial
            fine-tuning (N) always freezes them. A random-init backbone needs them training.
    """
    n = None if trainable_layers == "all" else int(trainable_layers)
    backbone.trainable = n is None or n > 0
    if n is not None and n <= 0:
        return
    layers = [l for l in _flat_layers(backbone) if l.weights]
    tunable = [l for l in layers if not isinstance(l, keras.layers.BatchNormalization)]
    top = {id(l) for l in (tunable if n is None else tunable[-n:])}
    for layer in layers:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = (not (freeze_batchnorm or n is not None)) if is_bn else id(layer) in top


def _flat_layers(model: keras.Model) -> list:
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_flat_layers(layer))
        else:
            out.append(layer)
    return out
