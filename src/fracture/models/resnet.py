"""ResNet18 (He et al. 2015, basic blocks [2, 2, 2, 2]) in Keras 3.

keras.applications ships ResNet50/101/152 (bottleneck blocks) but no ResNet18, which the
S0 seed system uses as its teacher. This is the torchvision architecture: 7x7/2 stem conv,
3x3/2 max pool, four stages of two basic blocks (64, 128, 256, 512 channels; stages 3-5
downsample in their first block with a 1x1/2 projection shortcut), no top.

Layer names follow keras.applications' ResNet50 (`conv{stage}_block{n}_out`), so the
multi-scale taps read like ResNet50's: C3 = `conv3_block2_out` (stride 8), C4 =
`conv4_block2_out` (stride 16), C5 = the output (stride 32).

Weights: none ship offline. `weights="imagenet"` raises `ResNet18WeightsUnavailable`, which
the backbone registry turns into its one loud random-init warning (or an error with
`model.strict_weights=true`); a converted `.weights.h5` file can still be passed as
`model.weights=<path>`.
"""

from __future__ import annotations

import keras

STAGE_WIDTHS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = (2, 2, 2, 2)
# torchvision's BatchNorm epsilon and momentum (0.1 in torch's convention = 0.9 in Keras').
BN_EPSILON, BN_MOMENTUM = 1e-5, 0.9


class ResNet18WeightsUnavailable(RuntimeError):
    """No ImageNet checkpoint for ResNet18 is available without the network."""


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, relu: bool = True):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def basic_block(x, filters: int, stride: int, name: str):
    """Two 3x3 convs plus the shortcut (a 1x1 projection when the shape changes)."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, f"{name}_0", relu=False)
    y = _conv_bn(x, filters, 3, stride, f"{name}_1")
    y = _conv_bn(y, filters, 3, 1, f"{name}_2", relu=False)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.Activation("relu", name=f"{name}_out")(y)


def ResNet18(include_top: bool = False, weights: str | None = None, input_shape=None) -> keras.Model:
    """keras.applications-style constructor for the backbone registry (no top, stride 32)."""
    if include_top:
        raise ValueError("ResNet18 is built as a backbone only (include_top=False).")
    if weights == "imagenet":
        raise ResNet18WeightsUnavailable(
            "resnet18 is not in keras.applications and no ImageNet checkpoint for it ships offline"
        )
    if weights is not None:
        raise ValueError(f"ResNet18 weights={weights!r}; expected 'imagenet' or None (files load in the registry).")
    inputs = keras.Input(input_shape or (None, None, 3))
    x = _conv_bn(inputs, STAGE_WIDTHS[0], 7, 2, "conv1")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
    for stage, (filters, blocks) in enumerate(zip(STAGE_WIDTHS, BLOCKS_PER_STAGE), start=2):
        for block in range(1, blocks + 1):
            stride = 2 if block == 1 and stage > 2 else 1
            x = basic_block(x, filters, stride, f"conv{stage}_block{block}")
    return keras.Model(inputs, x, name="resnet18")
