"""The two heads (class, box) and the layers they are built from.

The heads are their own `keras.Model` (`feature map -> {"class", "box"}`), so the same
weights can be trained on cached backbone features and used inside the end-to-end model.
Both heads compute in float32 whatever the global dtype policy: softmax/sigmoid outputs
and the losses on them lose too much in float16.
"""

from __future__ import annotations

import keras

from fracture.models.box_ops import canonical_xyxy


@keras.saving.register_keras_serializable(package="fracture")
class AttentionGate(keras.layers.Layer):
    """Spatial attention before pooling: a 1x1 conv -> sigmoid mask that multiplies the map.

    As in the EfficientNet-B4 seed system. The mask is also returned by `mask_of` so
    explanations can show where the model looked.

    Args:
        hidden_units: channels of the intermediate 1x1 conv (0 = a single 1x1 conv to the mask).
    """

    def __init__(self, hidden_units: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = hidden_units
        self.hidden = (
            keras.layers.Conv2D(hidden_units, 1, activation="relu", name="hidden") if hidden_units else None
        )
        self.to_mask = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")

    def build(self, input_shape):
        shape = input_shape
        if self.hidden is not None:
            self.hidden.build(shape)
            shape = (*shape[:-1], self.hidden_units)
        self.to_mask.build(shape)

    def mask_of(self, features):
        """The `(B, H, W, 1)` attention mask in [0, 1]."""
        x = self.hidden(features) if self.hidden is not None else features
        return self.to_mask(x)

    def call(self, features):
        return features * self.mask_of(features)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units}


@keras.saving.register_keras_serializable(package="fracture")
class CanonicalBox(keras.layers.Layer):
    """Sigmoid box outputs -> valid xyxy (x1 <= x2, y1 <= y2), so IoU losses are well defined."""

    def call(self, boxes):
        return canonical_xyxy(boxes)

    def compute_output_shape(self, input_shape):
        return input_shape


def class_head(features, num_classes: int, dropout: float = 0.3, attention_gate: bool = False, attention_hidden_units: int = 0):
    """Feature map -> `(softmax (B, C), pooled features after dropout)`: the image-level
    class head, shared by the single-box heads and the dense detector's heads (which pool C5).
    """
    x = features
    if attention_gate:
        x = AttentionGate(attention_hidden_units, name="attention_gate")(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    pooled = keras.layers.Dropout(dropout, name="dropout")(pooled)
    class_logits = keras.layers.Dense(num_classes, dtype="float32", name="class_logits")(pooled)
    return keras.layers.Activation("softmax", dtype="float32", name="class")(class_logits), pooled


def build_heads(
    feature_shape: tuple[int, int, int],
    num_classes: int,
    dropout: float = 0.3,
    box_hidden_units: int = 256,
    attention_gate: bool = False,
    attention_hidden_units: int = 0,
) -> keras.Model:
    """Feature map -> `{"class": softmax (B, C), "box": normalized xyxy (B, 4)}`.

    Args:
        feature_shape: the backbone's output shape `(H, W, channels)`.
        num_classes: width of the softmax.
        dropout: dropout rate on the pooled features (shared by both heads).
        box_hidden_units: width of the box head's hidden dense layer (0 = none).
        attention_gate: put an `AttentionGate` before pooling.
        attention_hidden_units: see `AttentionGate`.
    """
    features = keras.Input(feature_shape, name="features")
    class_probs, pooled = class_head(features, num_classes, dropout, attention_gate, attention_hidden_units)
    b = pooled
    if box_hidden_units:
        b = keras.layers.Dense(box_hidden_units, activation="relu", name="box_hidden")(b)
    box = keras.layers.Dense(4, activation="sigmoid", dtype="float32", name="box_sigmoid")(b)
    box = CanonicalBox(dtype="float32", name="box")(box)
    return keras.Model(features, {"class": class_probs, "box": box}, name="heads")


def attention_gate_of(model: keras.Model) -> AttentionGate | None:
    """The model's attention gate layer, if it has one (searched inside the heads)."""
    heads = model.get_layer("heads") if any(l.name == "heads" for l in model.layers) else model
    for layer in heads.layers:
        if isinstance(layer, AttentionGate):
            return layer
    return None
