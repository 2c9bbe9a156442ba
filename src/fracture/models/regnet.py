"""RegNetX / RegNetY (Radosavovic et al. 2020, "Designing Network Design Spaces") in Keras 3.

The S1 seed system compares a RegNet. tf.keras 2.x shipped `keras.applications.RegNet*`,
but Keras 3 (3.15.1 here) dropped them and keras-hub has none, so the two smallest
useful sizes are written here, with the widths and depths of pycls' (and tf.keras 2's)
configs: RegNetX-200MF (`regnetx_002`) and RegNetY-800MF (`regnety_008`).

Network: 3x3/2 stem (32 channels), four stages whose first block downsamples by 2 (strides
8 and 16 after stages 2 and 3, 32 at the output). An X block is 1x1 conv, 3x3 group conv
(groups of `group_width` channels), 1x1 conv, plus the shortcut (a 1x1 projection when the
shape changes); a Y block adds squeeze-and-excitation (ratio 0.25 of the block's input
channels) after the group conv. Layer names `{name}_stage{s}_block{b}_out` give the taps.

Weights: none ship offline (the tf.keras 2 files are not Keras 3 models), so
`weights="imagenet"` raises `RegNetWeightsUnavailable`, which the registry turns into its
one loud random-init warning (or an error with `model.strict_weights=true`).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

STEM_CHANNELS = 32
SE_RATIO = 0.25
BN_EPSILON, BN_MOMENTUM = 1e-5, 0.9


@dataclass(frozen=True)
class RegNetVariant:
    """One RegNet size: blocks and output channels per stage, channels per group, SE or not."""

    depths: tuple[int, int, int, int]
    widths: tuple[int, int, int, int]
    group_width: int
    squeeze_excite: bool


VARIANTS: dict[str, RegNetVariant] = {
    "regnetx_002": RegNetVariant((1, 1, 4, 7), (24, 56, 152, 368), 8, False),
    "regnety_008": RegNetVariant((1, 3, 8, 2), (64, 128, 320, 768), 16, True),
}


class RegNetWeightsUnavailable(RuntimeError):
    """No Keras 3 ImageNet checkpoint for RegNet is available without the network."""


def _conv_bn(x, filters: int, kernel: int, name: str, stride: int = 1, groups: int = 1, relu: bool = True):
    x = keras.layers.Conv2D(
        filters, kernel, strides=stride, groups=groups, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def _squeeze_excite(x, squeeze: int, name: str):
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    s = keras.layers.Conv2D(squeeze, 1, activation="relu", name=f"{name}_se_reduce")(s)
    s = keras.layers.Conv2D(x.shape[-1], 1, activation="sigmoid", name=f"{name}_se_expand")(s)
    return keras.layers.Multiply(name=f"{name}_se")([x, s])


def regnet_block(x, filters: int, stride: int, variant: RegNetVariant, name: str):
    """X block (Y with squeeze-and-excitation): bottleneck ratio 1, group conv in the middle."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, f"{name}_skip", stride=stride, relu=False)
    y = _conv_bn(x, filters, 1, f"{name}_1")
    y = _conv_bn(y, filters, 3, f"{name}_2", stride=stride, groups=filters // variant.group_width)
    if variant.squeeze_excite:
        y = _squeeze_excite(y, int(x.shape[-1] * SE_RATIO), name)
    y = _conv_bn(y, filters, 1, f"{name}_3", relu=False)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.Activation("relu", name=f"{name}_out")(y)


def RegNet(name: str, include_top: bool = False, weights: str | None = None, input_shape=None) -> keras.Model:
    """keras.applications-style constructor for the backbone registry (no top, stride 32)."""
    if include_top:
        raise ValueError(f"{name} is built as a backbone only (include_top=False).")
    if weights == "imagenet":
        raise RegNetWeightsUnavailable(
            f"{name}: Keras 3 dropped keras.applications' RegNets and no ImageNet checkpoint for it ships offline"
        )
    if weights is not None:
        raise ValueError(f"{name} weights={weights!r}; expected 'imagenet' or None (files load in the registry).")
    variant = VARIANTS[name]
    inputs = keras.Input(input_shape or (None, None, 3))
    x = _conv_bn(inputs, STEM_CHANNELS, 3, f"{name}_stem", stride=2)
    for stage, (depth, filters) in enumerate(zip(variant.depths, variant.widths), start=1):
        for block in range(1, depth + 1):
            x = regnet_block(x, filters, 2 if block == 1 else 1, variant, f"{name}_stage{stage}_block{block}")
    return keras.Model(inputs, x, name=name)


def regnet_taps(name: str) -> tuple[str, str, None]:
    """The last block of stages 2 (stride 8) and 3 (stride 16), then the output (stride 32)."""
    depths = VARIANTS[name].depths
    return (f"{name}_stage2_block{depths[1]}_out", f"{name}_stage3_block{depths[2]}_out", None)
