"""ViT and Swin backbones from keras-hub (an optional extra: pip install -e ".[hub]").

The S1 seed system compares a ViT and a Swin Transformer with CNNs; keras.applications has
neither, keras-hub has both. Each registry entry is a keras-hub backbone architecture plus
the keras-hub preset of the same architecture that `weights="imagenet"` loads:

- `vit_b16`: ViT-Base/16, preset `vit_base_patch16_224_imagenet`;
- `swin_tiny`: Swin-T (patch 4, window 7), preset `swin_tiny_patch4_window7_224`.

Presets download from Kaggle; offline that fails and the registry falls back to random init
with its one loud warning (or an error with `model.strict_weights=true`). A preset the user
already has loads from its local directory: `model.weights=<preset dir>` (what keras-hub's
`save_to_preset` or a Kaggle download leaves: config.json, model.weights.h5, ...).

The token outputs are reshaped into a feature map `(S/p, S/p, C)` (ViT without its class
token; Swin after its last stage, stride 32), so the pooled heads, the attention gate and
Grad-CAM work on them as on a CNN. They are single-scale: no stride 8/16/32 taps for the
dense detector.
"""

from __future__ import annotations

import importlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras

INSTALL_HINT = 'pip install -e ".[hub]" (keras-hub)'


class KerasHubMissing(ImportError):
    """A ViT/Swin backbone was asked for and keras-hub is not installed."""


class UnsupportedInputSize(ValueError):
    """The image size does not split into whole patches (ViT) or windows (Swin)."""


@dataclass(frozen=True)
class HubArchitecture:
    """A keras-hub backbone class, its constructor arguments, and the preset of that shape.

    Attributes:
        backbone_class: name in `keras_hub.models`.
        preset: the keras-hub preset `weights="imagenet"` loads.
        kwargs: the architecture (the preset's own config), for random init.
        stride: input pixels per output token (ViT: the patch; Swin: patch x 2^3 merges).
        size_multiple: the input side must be a multiple of this (ViT: the patch; Swin:
            stride x window, so every stage's token grid splits into whole windows).
        class_token: the first token is ViT's class token, dropped from the feature map.
    """

    backbone_class: str
    preset: str
    kwargs: tuple
    stride: int
    size_multiple: int
    class_token: bool


ARCHITECTURES: dict[str, HubArchitecture] = {
    "vit_b16": HubArchitecture(
        "ViTBackbone",
        "vit_base_patch16_224_imagenet",
        (("patch_size", 16), ("num_layers", 12), ("num_heads", 12), ("hidden_dim", 768), ("mlp_dim", 3072)),
        16,
        16,
        True,
    ),
    "swin_tiny": HubArchitecture(
        "SwinTransformerBackbone",
        "swin_tiny_patch4_window7_224",
        (("embed_dim", 96), ("depths", (2, 2, 6, 2)), ("num_heads", (3, 6, 12, 24)), ("window_size", 7)),
        32,
        224,
        False,
    ),
}


def keras_hub_module():
    """`import keras_hub`, or a one-line error saying how to install it."""
    try:
        return importlib.import_module("keras_hub")
    except ImportError as exc:
        raise KerasHubMissing(f"ViT/Swin backbones need keras-hub, which is not installed: {INSTALL_HINT}.") from exc


@keras.saving.register_keras_serializable(package="fracture")
class TokensToGrid(keras.layers.Layer):
    """Tokens `(B, [1 +] h*w, C)` -> feature map `(B, h, w, C)`, dropping a class token."""

    def __init__(self, grid: int, class_token: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.grid = grid
        self.class_token = class_token

    def call(self, tokens):
        tokens = tokens[:, 1:] if self.class_token else tokens
        return keras.ops.reshape(tokens, (-1, self.grid, self.grid, tokens.shape[-1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.grid, self.grid, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "grid": self.grid, "class_token": self.class_token}


def hub_backbone(name: str, include_top: bool = False, weights: str | None = None, input_shape=None) -> keras.Model:
    """keras.applications-style constructor for the registry: raw-normalized RGB -> (h, w, C).

    Args:
        weights: None (random init), "imagenet" (the architecture's keras-hub preset,
            downloaded: fails offline) or a local preset directory.
    """
    if include_top:
        raise ValueError(f"{name} is built as a backbone only (include_top=False).")
    arch = ARCHITECTURES[name]
    side = int(input_shape[0])
    if side % arch.size_multiple or input_shape[0] != input_shape[1]:
        raise UnsupportedInputSize(
            f"Backbone {name} needs a square input whose side is a multiple of {arch.size_multiple} "
            f"(data.image_size={side}); e.g. {max(arch.size_multiple, round(side / arch.size_multiple) * arch.size_multiple)}."
        )
    cls = getattr(keras_hub_module().models, arch.backbone_class)
    if weights is None:
        hub = cls(image_shape=tuple(input_shape), **dict(arch.kwargs))
    else:
        preset = arch.preset if weights == "imagenet" else str(weights)
        hub = cls.from_preset(preset, image_shape=tuple(input_shape))
    inputs = keras.Input(tuple(input_shape))
    grid = TokensToGrid(side // arch.stride, arch.class_token, name="tokens_to_grid")(hub(inputs))
    return keras.Model(inputs, grid, name=name)


def is_preset_dir(weights: str | None) -> bool:
    """A local keras-hub preset: a directory holding the preset's config.json."""
    return weights not in (None, "imagenet") and (Path(weights) / "config.json").is_file()


def import_if_archive_needs_it(path: Path) -> None:
    """Register keras-hub's classes before loading a `.keras` archive that holds a ViT/Swin.

    keras-hub registers its layers when imported; importing it for every model would add
    seconds (and an optional dependency) to loading any CNN run.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            config = archive.read("config.json").decode()
    except (OSError, KeyError, zipfile.BadZipFile):
        return  # the loader reports what is wrong with the file
    if "keras_hub" in config:  # module paths and registered names of keras-hub classes
        keras_hub_module()

