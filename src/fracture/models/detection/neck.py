"""A light FPN + PAN neck: C3, C4, C5 -> P3, P4, P5 of one width.

Top-down (FPN) brings C5's semantics to the fine stride-8 map that small fractures need;
bottom-up (PAN) brings the fine localisation back to the coarse levels. GroupNorm, not
BatchNorm: CPU batches are a handful of images.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class NeckSpec:
    """width: channels of every neck (and head) map; norm_groups: GroupNorm groups."""

    width: int = 64
    norm_groups: int = 16

    def __post_init__(self):
        if self.width % self.norm_groups:
            raise ValueError(f"model.neck_width={self.width} is not divisible by model.detection.norm_groups={self.norm_groups}.")


def conv_norm_act(x, spec: NeckSpec, name: str, kernel: int = 3, strides: int = 1):
    """Conv (no bias: GroupNorm follows) -> GroupNorm -> SiLU."""
    x = keras.layers.Conv2D(spec.width, kernel, strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.GroupNormalization(spec.norm_groups, name=f"{name}_gn")(x)
    return keras.layers.Activation("silu", name=f"{name}_act")(x)


def fpn_pan(features: list, spec: NeckSpec) -> list:
    """[C3, C4, C5] (strides 8, 16, 32; any widths) -> [P3, P4, P5] (`spec.width` each).

    Each map must be exactly twice the next one's side (image sizes divisible by 32).
    """
    laterals = [conv_norm_act(c, spec, f"neck_lateral{i}", kernel=1) for i, c in enumerate(features)]
    top_down = [laterals[-1]]
    for i in range(len(laterals) - 2, -1, -1):
        upsampled = keras.layers.UpSampling2D(2, name=f"neck_up{i}")(top_down[0])
        merged = keras.layers.Add(name=f"neck_td_add{i}")([laterals[i], upsampled])
        top_down.insert(0, conv_norm_act(merged, spec, f"neck_td{i}"))
    bottom_up = [top_down[0]]
    for i in range(1, len(top_down)):
        downsampled = conv_norm_act(bottom_up[-1], spec, f"neck_down{i}", strides=2)
        merged = keras.layers.Add(name=f"neck_bu_add{i}")([top_down[i], downsampled])
        bottom_up.append(conv_norm_act(merged, spec, f"neck_bu{i}"))
    return bottom_up
