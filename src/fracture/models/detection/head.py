"""The anchor-free dense head and the detector's `heads` model.

FCOS-style: one head shared by every level (the same objects are at every scale, only
bigger), two GroupNorm conv towers (class; box + quality), per-location outputs laid out
as `detection.layout` says. The class-logit bias starts at the focal-loss prior, so the
thousands of background locations do not swamp the first steps. Prediction convs and
everything after them are float32 whatever the global policy (mixed-precision safe).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from fracture.models.detection.anchors import STRIDES, feature_sizes
from fracture.models.detection.config import PRIOR_PROBABILITY, prior_bias
from fracture.models.detection.layout import dense_channels
from fracture.models.detection.neck import NeckSpec, fpn_pan
from fracture.models.heads import class_head


@dataclass(frozen=True)
class DenseHeadSpec:
    """Shape of the dense detector's heads.

    Attributes:
        num_classes: K detection classes (the dataset's class ids; a "no finding" class
            simply never gets a positive location).
        image_size: model input side (distances are fractions of it).
        strides: the levels' strides, ascending.
        neck: width and GroupNorm groups of the neck and the head towers.
        convs: conv layers in each head tower.
        prior_probability: initial sigmoid of the class logits.
    """

    num_classes: int
    image_size: int
    strides: tuple[int, ...] = STRIDES
    neck: NeckSpec = field(default_factory=NeckSpec)
    convs: int = 2
    prior_probability: float = PRIOR_PROBABILITY


@dataclass(frozen=True)
class ClassHeadSpec:
    """The image-level softmax head on pooled C5 (see `fracture.models.heads.class_head`)."""

    num_classes: int
    dropout: float = 0.3
    attention_gate: bool = False
    attention_hidden_units: int = 0


class SharedDenseHead:
    """Builds the head's layers once and applies them to every level (weights shared)."""

    def __init__(self, spec: DenseHeadSpec):
        self.spec = spec
        self.class_tower = self._tower("head_class")
        self.box_tower = self._tower("head_box")
        self.class_logits = keras.layers.Conv2D(
            spec.num_classes, 3, padding="same", dtype="float32", name="head_class_logits",
            bias_initializer=keras.initializers.Constant(prior_bias(spec.prior_probability)),
        )
        self.box_distances = keras.layers.Conv2D(4, 3, padding="same", dtype="float32", name="head_box_distances")
        self.quality_logit = keras.layers.Conv2D(1, 3, padding="same", dtype="float32", name="head_quality_logit")
        self.positive = keras.layers.Activation("softplus", dtype="float32", name="head_distance_softplus")

    def _tower(self, name: str) -> list:
        spec = self.spec
        layers = []
        for i in range(spec.convs):
            layers += [
                keras.layers.Conv2D(spec.neck.width, 3, padding="same", use_bias=False, name=f"{name}{i}_conv"),
                keras.layers.GroupNormalization(spec.neck.norm_groups, name=f"{name}{i}_gn"),
                keras.layers.Activation("silu", name=f"{name}{i}_act"),
            ]
        return layers

    @staticmethod
    def _run(layers, x):
        for layer in layers:
            x = layer(x)
        return x

    def level(self, features, level: int):
        """One level's map -> `(B, H * W, 4 + 1 + K)`."""
        spec = self.spec
        box_features = self._run(self.box_tower, features)
        # softplus keeps distances positive; x stride makes the raw output scale-free per level.
        scale = spec.strides[level] / spec.image_size
        distances = keras.layers.Rescaling(scale, dtype="float32", name=f"head_distance_scale{level}")(
            self.positive(self.box_distances(box_features))
        )
        outputs = keras.layers.Concatenate(dtype="float32", name=f"head_outputs{level}")(
            [distances, self.quality_logit(box_features), self.class_logits(self._run(self.class_tower, features))]
        )
        side = feature_sizes(spec.image_size, spec.strides)[level]
        return keras.layers.Reshape((side * side, dense_channels(spec.num_classes)), dtype="float32", name=f"head_flat{level}")(outputs)

    def __call__(self, levels: list):
        per_level = [self.level(features, i) for i, features in enumerate(levels)]
        return keras.layers.Concatenate(axis=1, dtype="float32", name="detections")(per_level)


def build_dense_heads(feature_shapes: list[tuple], head: DenseHeadSpec, classes: ClassHeadSpec) -> keras.Model:
    """[C3, C4, C5] -> `{"class": softmax (B, C), "detections": (B, N, 4 + 1 + K)}`.

    One Keras model named "heads" (like the single-box heads), so the trainer can fit it
    alone on cached backbone features and `split_saved_model` finds it after a reload.
    """
    if head.image_size % max(head.strides):
        raise ValueError(f"image_size={head.image_size} must be divisible by the largest stride {max(head.strides)} (FPN upsampling).")
    inputs = [keras.Input(shape, name=f"features_stride{s}") for shape, s in zip(feature_shapes, head.strides, strict=True)]
    class_probs, _ = class_head(inputs[-1], classes.num_classes, classes.dropout, classes.attention_gate, classes.attention_hidden_units)
    detections = SharedDenseHead(head)(fpn_pan(inputs, head.neck))
    return keras.Model(inputs, {"class": class_probs, "detections": detections}, name="heads")
