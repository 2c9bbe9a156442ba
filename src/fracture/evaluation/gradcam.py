"""Grad-CAM (Selvaraju et al. 2017) on the backbone's output feature map.

The target layer is found the same way for every backbone family: models built by
`fracture.models.classifier.build_model` are `backbone -> heads`, and the backbone's output
is its last convolutional feature map (for the dense detector, whose backbone gives
[C3, C4, C5], the image-level class head pools C5, so C5 is explained). The gradient is taken of the class *logit* (the
softmax saturates).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from fracture.models.classifier import split_saved_model
from fracture.models.heads import attention_gate_of


class GradCam:
    """Heatmaps for a saved two-head model.

    Args:
        model: a model from `build_model` (or `keras.models.load_model` of one).
    """

    def __init__(self, model: keras.Model):
        parts = split_saved_model(model)
        self.backbone = parts.backbone
        heads = parts.heads
        self.logits = keras.Model(heads.input, heads.get_layer("class_logits").output)
        self.gate = attention_gate_of(model)
        self.image_size = model.input_shape[1]

    def __call__(self, images: np.ndarray, class_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`(heatmaps (N, S, S) in [0, 1], explained class ids)`; by default the predicted class."""
        images = tf.convert_to_tensor(images, tf.float32)
        with tf.GradientTape() as tape:
            levels = self._levels(images)
            tape.watch(levels[-1])
            features = levels[-1]
            logits = tf.cast(self.logits(levels if len(levels) > 1 else features, training=False), tf.float32)
            if class_ids is None:
                class_ids = tf.argmax(logits, axis=-1)
            score = tf.gather(logits, tf.cast(class_ids, tf.int32), axis=1, batch_dims=1)
        grads = tape.gradient(score, features)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[..., None]
        cam = tf.image.resize(cam, (self.image_size, self.image_size), method="bilinear")[..., 0]
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        cam = tf.math.divide_no_nan(cam, peak)
        return cam.numpy(), np.asarray(class_ids)

    def _levels(self, images) -> list:
        """The backbone's outputs as a list of float32 maps (one, or C3/C4/C5)."""
        outputs = self.backbone(images, training=False)
        return [tf.cast(o, tf.float32) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]

    def attention(self, images: np.ndarray) -> np.ndarray | None:
        """The attention gate's mask resized to the image `(N, S, S)`, or None without a gate."""
        if self.gate is None:
            return None
        mask = self.gate.mask_of(self._levels(tf.convert_to_tensor(images, tf.float32))[-1])
        return tf.image.resize(tf.cast(mask, tf.float32), (self.image_size, self.image_size))[..., 0].numpy()
