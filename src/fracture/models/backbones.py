"""Backbone registry: name -> a `keras.applications` feature extractor that takes raw RGB.

`build_backbone(..., multiscale=True)` returns the same network with three outputs
[C3, C4, C5] at strides 8, 16, 32 (for the dense detector's neck); the layer each one is
tapped from is recorded in the registry spec (`BackboneSpec.feature_layers`).

Every backbone built here takes raw 0-255 RGB images: families whose keras.applications
constructor does not normalise inside the model (DenseNet, ResNet) get an
`ImageNormalization` layer in front, so a saved model needs no outside preprocessing.

ViT and Swin (keras-hub, `fracture.models.hub`) are single-scale: their spec has no
`feature_layers`, and `multiscale=True` on them is an error.

Weights: `"imagenet"` downloads from the internet. Offline this fails fast (keras raises a
plain `Exception("URL fetch failure ...")`), and the backbone is then built from random
init with one loud warning, unless `strict=True` makes that an error.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import keras

from fracture.models.efficientnet_lite import VARIANTS as LITE_VARIANTS
from fracture.models.efficientnet_lite import EfficientNetLite
from fracture.models import hub
from fracture.models.regnet import VARIANTS as REGNET_VARIANTS
from fracture.models.regnet import RegNet, regnet_taps
from fracture.models.resnet import ResNet18

log = logging.getLogger(__name__)

# ImageNet statistics (RGB, 0-1 scale) used by the "torch"-mode preprocessing of DenseNet.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite (TF's lite input pipeline): (rgb - 127) / 128.
LITE_MEAN, LITE_STD = 127.0, 128.0
# Caffe-mode (ResNet50) per-channel means, BGR order, 0-255 scale.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="fracture")
class ImageNormalization(keras.layers.Layer):
    """Raw 0-255 RGB -> the input a keras.applications family was trained on.

    Args:
        mode: "torch" (scale to 0-1, subtract ImageNet mean, divide by std: DenseNet),
            "caffe" (RGB -> BGR, subtract ImageNet means: ResNet50, VGG19), "lite"
            ((x - 127) / 128: EfficientNet-Lite), "tf" (scale to -1..1: ViT, whose
            checkpoints were trained with mean = std = 0.5) or "unit" (scale to 0-1).
    """

    MODES = ("torch", "caffe", "lite", "tf", "unit")

    def __init__(self, mode: str = "torch", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"ImageNormalization mode {mode!r}; expected one of {self.MODES}.")
        self.mode = mode

    def call(self, images):
        images = keras.ops.cast(images, self.compute_dtype)
        if self.mode == "torch":
            mean = keras.ops.convert_to_tensor(IMAGENET_MEAN, self.compute_dtype)
            std = keras.ops.convert_to_tensor(IMAGENET_STD, self.compute_dtype)
            return (images / 255.0 - mean) / std
        if self.mode == "caffe":
            bgr = keras.ops.flip(images, axis=-1)
            return bgr - keras.ops.convert_to_tensor(CAFFE_MEAN_BGR, self.compute_dtype)
        if self.mode == "lite":
            return (images - LITE_MEAN) / LITE_STD
        if self.mode == "tf":
            return images / 127.5 - 1.0
        return images / 255.0

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone.

    Attributes:
        constructor: `keras.applications` function (include_top=False), or None for small_cnn.
        normalization: `ImageNormalization` mode to put in front, or None when the
            keras.applications model already normalises raw 0-255 input itself.
        constructor_kwargs: extra constructor arguments.
        feature_layers: the layers whose outputs are C3, C4, C5 (strides 8, 16, 32) in the
            multi-scale backbone; `None` names the network's own output (auto-named in
            some keras.applications, and the features the single-box model pools).
            `None` for the whole tuple: single-scale only (ViT, Swin).
        loads_presets: `weights` may be a local keras-hub preset directory.
    """

    constructor: Callable | None
    normalization: str | None = None
    constructor_kwargs: tuple = ()
    feature_layers: tuple[str | None, str | None, str | None] | None = (None, None, None)
    loads_presets: bool = False


# Multi-scale taps, by family. Each is the last (post-activation where the family has one)
# layer at its stride; the names do not depend on the depth within a family.
DENSENET_TAPS = ("pool3_relu", "pool4_relu", None)
EFFICIENTNET_TAPS = ("block4a_expand_activation", "block6a_expand_activation", None)
RESNET50_TAPS = ("conv3_block4_out", "conv4_block6_out", None)
RESNET18_TAPS = ("conv3_block2_out", "conv4_block2_out", None)
MOBILENET_V3_SMALL_TAPS = ("expanded_conv_2_add", "expanded_conv_7_add", None)
MOBILENET_V3_LARGE_TAPS = ("expanded_conv_5_add", "expanded_conv_11_add", None)
SMALL_CNN_TAPS = ("relu3", "relu4", "relu5")
VGG_TAPS = ("block3_pool", "block4_pool", None)
# EfficientNet-Lite stages 2 and 4 end at strides 8 and 16 (stage 6 and the head at 32).
LITE_TAP_STAGES = (2, 4)


def lite_taps(name: str) -> tuple[str | None, str | None, str | None]:
    """The last block of Lite stages 2 and 4 (their residual add), then the head output."""
    ends = [sum(LITE_VARIANTS[name].repeats[: stage + 1]) - 1 for stage in LITE_TAP_STAGES]
    return (*(f"blocks_{block}_add" for block in ends), None)


def _apps(name: str) -> Callable:
    return getattr(keras.applications, name)


PREPROCESSING_INSIDE = (("include_preprocessing", True),)

BACKBONES: dict[str, BackboneSpec] = {
    **{f"densenet{d}": BackboneSpec(_apps(f"DenseNet{d}"), "torch", (), DENSENET_TAPS) for d in (121, 169, 201)},
    **{f"efficientnet_b{i}": BackboneSpec(_apps(f"EfficientNetB{i}"), None, (), EFFICIENTNET_TAPS) for i in range(8)},
    **{
        f"efficientnetv2_{v.lower()}": BackboneSpec(_apps(f"EfficientNetV2{v}"), None, PREPROCESSING_INSIDE, EFFICIENTNET_TAPS)
        for v in ("B0", "B1", "B2", "B3", "S")
    },
    "resnet50": BackboneSpec(_apps("ResNet50"), "caffe", (), RESNET50_TAPS),
    # Not in keras.applications (fracture.models.resnet): random init, said loudly. "torch"
    # normalization: torchvision's ResNet18, whose converted weights a user may pass.
    "resnet18": BackboneSpec(ResNet18, "torch", (), RESNET18_TAPS),
    "mobilenet_v3_small": BackboneSpec(_apps("MobileNetV3Small"), None, PREPROCESSING_INSIDE, MOBILENET_V3_SMALL_TAPS),
    "mobilenet_v3_large": BackboneSpec(_apps("MobileNetV3Large"), None, PREPROCESSING_INSIDE, MOBILENET_V3_LARGE_TAPS),
    **{name: BackboneSpec(partial(EfficientNetLite, name), "lite", (), lite_taps(name)) for name in LITE_VARIANTS},
    "small_cnn": BackboneSpec(None, "unit", (), SMALL_CNN_TAPS),
    "vgg19": BackboneSpec(_apps("VGG19"), "caffe", (), VGG_TAPS),
    # Keras 3 has no keras.applications RegNet: fracture.models.regnet (random init, loudly).
    # "torch": tf.keras 2's RegNets normalised inside with ImageNet mean and std.
    **{name: BackboneSpec(partial(RegNet, name), "torch", (), regnet_taps(name)) for name in REGNET_VARIANTS},
    # keras-hub (optional extra): single-scale. ViT presets were converted from checkpoints
    # trained on (x - 0.5) / 0.5 ("tf"); Swin's on ImageNet mean and std ("torch").
    "vit_b16": BackboneSpec(partial(hub.hub_backbone, "vit_b16"), "tf", (), None, loads_presets=True),
    "swin_tiny": BackboneSpec(partial(hub.hub_backbone, "swin_tiny"), "torch", (), None, loads_presets=True),
}


class WeightsUnavailableError(RuntimeError):
    """Requested weights could not be loaded and `strict_weights` is on."""


SMALL_CNN_WIDTHS = (16, 32, 64, 96)
# Two more stages give the multi-scale version its stride-16 and stride-32 taps; the first
# four keep their names, so the single-box small_cnn is unchanged.
SMALL_CNN_DEEP_WIDTHS = (*SMALL_CNN_WIDTHS, 128, 128)


def small_cnn(input_shape: tuple[int, int, int], name: str = "small_cnn", widths: tuple[int, ...] = SMALL_CNN_WIDTHS) -> keras.Model:
    """A conv net of `len(widths)` stages (each but the last halves the map), fast on a CPU:
    for the demo and for tests. Four stages end at stride 8; six at stride 32."""
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate(widths):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        # momentum 0.9: inference statistics settle within the few hundred steps a demo runs.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{i}")(x) if i < len(widths) - 1 else x
    return keras.Model(inputs, x, name=name)


def build_backbone(
    name: str, image_size: int, weights: str | None = "imagenet", strict: bool = False, multiscale: bool = False
) -> tuple[keras.Model, str | None]:
    """Build a feature extractor that maps raw RGB `(S, S, 3)` to a feature map.

    Args:
        name: a key of `BACKBONES`.
        image_size: input side in pixels.
        weights: "imagenet", None (random init), or a path to a `.h5`/`.weights.h5` file of
            this backbone's weights.
        strict: raise `WeightsUnavailableError` instead of falling back to random init.
        multiscale: output the list [C3, C4, C5] (strides 8, 16, 32) tapped at the spec's
            `feature_layers` instead of the one final feature map.

    Returns:
        The backbone and what its weights really are ("imagenet", the path, or None), to
        be recorded in the run.
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}.")
    spec = BACKBONES[name]
    if multiscale and spec.feature_layers is None:
        raise ValueError(
            f"Backbone {name} is single-scale (no stride 8/16/32 taps for the dense detector): "
            "use model.box_head=single, or a CNN backbone for the detector."
        )
    shape = (image_size, image_size, 3)
    inputs = keras.Input(shape, name="image")
    x = ImageNormalization(spec.normalization, name="normalization")(inputs) if spec.normalization else inputs
    if spec.constructor is None:
        core = small_cnn(shape, widths=SMALL_CNN_DEEP_WIDTHS if multiscale else SMALL_CNN_WIDTHS)
        loaded = None
    else:
        core, loaded = _application(spec, name, shape, weights, strict)
    features = feature_taps(core, spec.feature_layers)(x) if multiscale else core(x)
    backbone = keras.Model(inputs, features, name=f"{name}_backbone")
    if weights not in (None, "imagenet") and loaded != weights:
        loaded = _load_file(backbone, core, Path(weights), strict)
    return backbone, loaded


def feature_taps(core: keras.Model, layer_names: tuple[str | None, ...]) -> keras.Model:
    """`core` with its outputs replaced by the named layers' outputs (None: its own output).

    It shares every layer with `core` and keeps its name, so weights loaded into `core`
    (legacy `.h5`) or saved under the backbone (`.weights.h5`) land in the same variables.
    """
    outputs = [core.output if layer is None else core.get_layer(layer).output for layer in layer_names]
    return keras.Model(core.inputs, outputs, name=core.name)


def _application(spec: BackboneSpec, name: str, shape, weights, strict) -> tuple[keras.Model, str | None]:
    kwargs = dict(spec.constructor_kwargs)
    if weights == "imagenet" or (spec.loads_presets and hub.is_preset_dir(weights)):
        what = "ImageNet weights" if weights == "imagenet" else f"The keras-hub preset {weights}"
        try:
            return spec.constructor(include_top=False, weights=weights, input_shape=shape, **kwargs), weights
        except (hub.KerasHubMissing, hub.UnsupportedInputSize):
            raise  # a missing optional package or a bad input size: not a weights problem
        except Exception as exc:  # noqa: BLE001 - keras raises a bare Exception on fetch failure
            message = (
                f"{what} for {name} could not be loaded ({str(exc).splitlines()[0][:200]}). "
                "Training starts from RANDOM INIT, which needs far more data and epochs. "
                f"Offline: pass model.weights=<path to a .weights.h5 file{' or a local keras-hub preset directory' if spec.loads_presets else ''}>, "
                "or model.strict_weights=true to make this an error."
            )
            if strict:
                raise WeightsUnavailableError(message) from exc
            warnings.warn(message, stacklevel=3)
            log.warning(message)
    return spec.constructor(include_top=False, weights=None, input_shape=shape, **kwargs), None


def _load_file(backbone: keras.Model, core: keras.Model, path: Path, strict: bool) -> str | None:
    if not path.is_file():
        message = f"Backbone weights file {path} does not exist."
        if strict:
            raise WeightsUnavailableError(message)
        warnings.warn(message + " Using random init.", stacklevel=3)
        return None
    # Keras 3 `.weights.h5` files (what this project saves) hold the whole backbone; legacy
    # `.h5` files (keras.applications downloads) hold the bare application model.
    target = backbone if path.name.endswith(".weights.h5") else core
    target.load_weights(str(path))
    return str(path)
