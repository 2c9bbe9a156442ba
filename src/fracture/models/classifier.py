"""The end-to-end two-head model: raw RGB -> backbone -> heads -> {"class", "box"}."""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from fracture.models.backbones import build_backbone
from fracture.models.heads import build_heads


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


@dataclass
class FractureModel:
    """The model and its parts, which share weights.

    Attributes:
        model: images `(B, S, S, 3)` raw 0-255 -> {"class", "box"}; what gets saved.
        backbone: images -> feature map.
        heads: feature map -> {"class", "box"}; trained alone on cached features.
        weights: what the backbone weights really are ("imagenet", a path, or None = random).
    """

    model: keras.Model
    backbone: keras.Model
    heads: keras.Model
    weights: str | None


def build_model(cfg: ModelConfig, num_classes: int, image_size: int) -> FractureModel:
    """Build the backbone from the registry and put the two heads on it."""
    backbone, loaded = build_backbone(cfg.backbone, image_size, cfg.weights, cfg.strict_weights)
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
