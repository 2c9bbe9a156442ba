"""Anchor points: the centre of every feature-map cell, level after level.

The dense output's location order is this one: level by level (strides ascending), each
level row-major (y, then x), as `(B, H, W, C) -> (B, H * W, C)` reshapes flatten it.
Coordinates are normalized to the model input side, like the boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The levels every registry backbone taps (C3, C4, C5); `model.strides` accepts only these.
STRIDES = (8, 16, 32)


def feature_sizes(image_size: int, strides) -> list[int]:
    """Side of each level's map ("same" padding: ceil(S / stride))."""
    return [math.ceil(image_size / s) for s in strides]


def num_locations(image_size: int, strides) -> int:
    return sum(n * n for n in feature_sizes(image_size, strides))


@dataclass(frozen=True)
class AnchorPoints:
    """Per-location constants, numpy `(N, ...)` float32.

    Attributes:
        points: `(N, 2)` cell centres (x, y), normalized.
        strides: `(N,)` the location's stride, normalized (stride / image side).
        levels: `(N,)` int32 level index.
    """

    points: np.ndarray
    strides: np.ndarray
    levels: np.ndarray


def anchor_points(image_size: int, strides) -> AnchorPoints:
    points, location_strides, levels = [], [], []
    for level, (stride, size) in enumerate(zip(strides, feature_sizes(image_size, strides), strict=True)):
        centres = (np.arange(size, dtype=np.float32) + 0.5) * stride / image_size
        ys, xs = np.meshgrid(centres, centres, indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()], axis=-1))
        location_strides.append(np.full(size * size, stride / image_size, np.float32))
        levels.append(np.full(size * size, level, np.int32))
    return AnchorPoints(np.concatenate(points).astype(np.float32), np.concatenate(location_strides), np.concatenate(levels))


def check_locations(num: int | None, image_size: int, strides) -> None:
    """Fail loudly when a dense tensor does not have this image size's location count."""
    expected = num_locations(image_size, strides)
    if num is not None and num != expected:
        raise ValueError(f"dense output has {num} locations; image_size={image_size}, strides={list(strides)} give {expected}.")
