"""Horizontal-flip test-time augmentation of the dense output (`decode.test_time_flip`).

The detector also sees the mirror image of each input; its dense output is mapped back to
the original image's locations and averaged with the plain pass, location by location,
before NMS. Averaging dense predictions (rather than pooling two sets of boxes through
NMS) keeps one candidate per location, so the decode and NMS that follow are unchanged.

Why it maps exactly: the anchor points are cell centres `(j + 0.5) * stride`, so cell `j`
of a level with `n` cells mirrors onto cell `n - 1 - j` when `n * stride` is the input side
(`check_flippable`). A mirrored box keeps its top and bottom distances and swaps its left
and right ones. Training augments with horizontal flips (`data.augment.horizontal_flip`),
so the mirror image is a view the model has learnt; vertical flips are not used.

Plain numpy: this runs on predicted arrays, outside the model graph (the exports stay the
single pass, and the training-time valid mAP does not pay for the second one).
"""

from __future__ import annotations

import numpy as np

from fracture.models.detection.anchors import STRIDES, check_locations, feature_sizes
from fracture.models.detection.layout import BOX_CHANNELS

# Logits of averaged probabilities are clipped here so a saturated 0 or 1 stays finite.
_PROBABILITY_EPS = 1e-7


def check_flippable(image_size: int, strides=STRIDES) -> None:
    """A location's mirror is a location only when every level tiles the input exactly."""
    ragged = [s for s in strides if image_size % s]
    if ragged:
        raise ValueError(
            f"test_time_flip needs data.image_size divisible by every stride; {image_size} is not "
            f"divisible by {ragged} (the mirrored cell centres would fall between locations)."
        )


def mirror_dense(dense: np.ndarray, image_size: int, strides=STRIDES) -> np.ndarray:
    """Dense `(B, N, C)` predicted on mirrored inputs -> the same predictions at the
    original inputs' locations: each level's columns reversed, left/right distances swapped.

    Its own inverse: `mirror_dense(mirror_dense(d)) == d`.
    """
    dense = np.asarray(dense)
    check_flippable(image_size, strides)
    check_locations(dense.shape[1], image_size, strides)
    levels, start = [], 0
    for n in feature_sizes(image_size, strides):
        level = dense[:, start : start + n * n].reshape(dense.shape[0], n, n, dense.shape[-1])
        levels.append(level[:, :, ::-1].reshape(dense.shape[0], n * n, dense.shape[-1]))
        start += n * n
    mirrored = np.concatenate(levels, axis=1)
    left, right = 0, 2  # ltrb: x distances are channels 0 and 2
    mirrored[..., [left, right]] = mirrored[..., [right, left]]
    return mirrored


def merge_flip(dense: np.ndarray, dense_of_mirror: np.ndarray, image_size: int, strides=STRIDES) -> np.ndarray:
    """The plain pass and the mirror pass, averaged per location: box distances as they are,
    quality and class scores as probabilities (an ensemble's mean), returned as logits so
    the result keeps the dense layout `decode_detections` reads."""
    dense = np.asarray(dense, np.float32)
    mirrored = mirror_dense(np.asarray(dense_of_mirror, np.float32), image_size, strides)
    merged = np.empty_like(dense)
    merged[..., :BOX_CHANNELS] = (dense[..., :BOX_CHANNELS] + mirrored[..., :BOX_CHANNELS]) / 2.0
    probability = (_sigmoid(dense[..., BOX_CHANNELS:]) + _sigmoid(mirrored[..., BOX_CHANNELS:])) / 2.0
    probability = np.clip(probability, _PROBABILITY_EPS, 1.0 - _PROBABILITY_EPS)
    merged[..., BOX_CHANNELS:] = np.log(probability) - np.log1p(-probability)
    return merged


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))  # overflow-free for large |logits|
