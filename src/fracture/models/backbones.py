"""Backbone registry: name -> a `keras.applications` feature extractor that takes raw RGB.

Every backbone built here takes raw 0-255 RGB images: families whose keras.applications
constructor does not normalise inside the model (DenseNet, ResNet) get an
`ImageNormalization` layer in front, so a saved model needs no outside preprocessing.

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
            "caffe" (RGB -> BGR, subtract ImageNet means: ResNet50), "lite" ((x - 127) / 128:
            EfficientNet-Lite), or "unit" (scale to 0-1).
    """

    MODES = ("torch", "caffe", "lite", "unit")

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
    """

    constructor: Callable | None
    normalization: str | None = None
    constructor_kwargs: tuple = ()


def _apps(name: str) -> Callable:
    return getattr(keras.applications, name)


BACKBONES: dict[str, BackboneSpec] = {
    "densenet121": BackboneSpec(_apps("DenseNet121"), "torch"),
    "densenet169": BackboneSpec(_apps("DenseNet169"), "torch"),
    "densenet201": BackboneSpec(_apps("DenseNet201"), "torch"),
    **{f"efficientnet_b{i}": BackboneSpec(_apps(f"EfficientNetB{i}")) for i in range(8)},
    **{
        f"efficientnetv2_{v.lower()}": BackboneSpec(_apps(f"EfficientNetV2{v}"), None, (("include_preprocessing", True),))
        for v in ("B0", "B1", "B2", "B3", "S")
    },
    "resnet50": BackboneSpec(_apps("ResNet50"), "caffe"),
    "mobilenet_v3_small": BackboneSpec(_apps("MobileNetV3Small"), None, (("include_preprocessing", True),)),
    "mobilenet_v3_large": BackboneSpec(_apps("MobileNetV3Large"), None, (("include_preprocessing", True),)),
    **{name: BackboneSpec(partial(EfficientNetLite, name), "lite") for name in LITE_VARIANTS},
    "small_cnn": BackboneSpec(None, "unit"),
}


class WeightsUnavailableError(RuntimeError):
    """Requested weights could not be loaded and `strict_weights` is on."""


def small_cnn(input_shape: tuple[int, int, int], name: str = "small_cnn") -> keras.Model:
    """A four-stage conv net, fast on a CPU: for the demo and for tests."""
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((16, 32, 64, 96)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        # momentum 0.9: inference statistics settle within the few hundred steps a demo runs.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{i}")(x) if i < 3 else x
    return keras.Model(inputs, x, name=name)


def build_backbone(
    name: str, image_size: int, weights: str | None = "imagenet", strict: bool = False
) -> tuple[keras.Model, str | None]:
    """Build a feature extractor that maps raw RGB `(S, S, 3)` to a feature map.

    Args:
        name: a key of `BACKBONES`.
        image_size: input side in pixels.
        weights: "imagenet", None (random init), or a path to a `.h5`/`.weights.h5` file of
            this backbone's weights.
        strict: raise `WeightsUnavailableError` instead of falling back to random init.

    Returns:
        The backbone and what its weights really are ("imagenet", the path, or None), to
        be recorded in the run.
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}.")
    spec = BACKBONES[name]
    shape = (image_size, image_size, 3)
    inputs = keras.Input(shape, name="image")
    x = ImageNormalization(spec.normalization, name="normalization")(inputs) if spec.normalization else inputs
    if spec.constructor is None:
        core = small_cnn(shape)
        loaded = None
    else:
        core, loaded = _application(spec, name, shape, weights, strict)
    features = core(x)
    backbone = keras.Model(inputs, features, name=f"{name}_backbone")
    if weights not in (None, "imagenet"):
        loaded = _load_file(backbone, core, Path(weights), strict)
    return backbone, loaded


def _application(spec: BackboneSpec, name: str, shape, weights, strict) -> tuple[keras.Model, str | None]:
    kwargs = dict(spec.constructor_kwargs)
    if weights == "imagenet":
        try:
            return spec.constructor(include_top=False, weights="imagenet", input_shape=shape, **kwargs), "imagenet"
        except Exception as exc:  # noqa: BLE001 - keras raises a bare Exception on fetch failure
            message = (
                f"ImageNet weights for {name} could not be loaded ({str(exc).splitlines()[0][:200]}). "
                "Training starts from RANDOM INIT, which needs far more data and epochs. "
                "Offline: pass model.weights=<path to a .weights.h5 file>, or model.strict_weights=true "
                "to make this an error."
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
