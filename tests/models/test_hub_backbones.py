"""ViT and Swin from keras-hub: feature maps for the heads, the offline fallback, local presets."""

import sys

import numpy as np
import pytest

from fracture.models import backbones as B
from fracture.models import hub

keras_hub = pytest.importorskip("keras_hub", reason="ViT/Swin need the optional keras-hub extra (pip install -e '.[hub]')")

# Swin-T's windows (7 tokens of 32 px at the last stage) need a side that is a multiple of 224.
SIDES = {"vit_b16": 32, "swin_tiny": 224}


def images(side: int, n: int = 1) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, side, side, 3)).astype("float32")


@pytest.mark.parametrize("name, side, grid, channels", [("vit_b16", 32, 2, 768), ("swin_tiny", 224, 7, 768)])
def test_hub_backbones_give_a_feature_map_the_heads_can_pool(name, side, grid, channels):
    backbone, loaded = B.build_backbone(name, side, weights=None)
    features = np.asarray(backbone(images(side)))
    assert loaded is None
    assert features.shape == (1, grid, grid, channels) and np.isfinite(features).all()


def test_offline_preset_download_falls_back_loudly_or_fails_in_strict_mode(recwarn):
    """The network is unreachable in tests: keras-hub's Kaggle download fails fast."""
    _, loaded = B.build_backbone("vit_b16", 32, weights="imagenet")
    messages = [str(w.message) for w in recwarn.list if "vit_b16" in str(w.message)]
    assert loaded is None and len(messages) == 1
    assert "RANDOM INIT" in messages[0] and "preset directory" in messages[0]
    with pytest.raises(B.WeightsUnavailableError, match="vit_b16"):
        B.build_backbone("vit_b16", 32, weights="imagenet", strict=True)


def test_a_local_preset_directory_loads_its_weights(tmp_path):
    """What a user who has a preset passes: model.weights=<preset dir>. The preset's own
    config gives the architecture, so a two-layer ViT/16 keeps the test small."""
    saved = keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=16, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128)
    saved.save_to_preset(str(tmp_path / "preset"))
    backbone, loaded = B.build_backbone("vit_b16", 32, weights=str(tmp_path / "preset"))
    assert loaded == str(tmp_path / "preset")
    normalized = np.asarray(B.ImageNormalization("tf")(images(32)))
    expected = np.asarray(saved(normalized))[:, 1:].reshape(1, 2, 2, 64)
    np.testing.assert_allclose(np.asarray(backbone(images(32))), expected, atol=1e-4)


@pytest.mark.parametrize("name", sorted(SIDES))
def test_hub_backbones_are_single_scale(name):
    with pytest.raises(ValueError, match="single-scale"):
        B.build_backbone(name, SIDES[name], weights=None, multiscale=True)


def test_swin_says_which_image_sizes_it_takes():
    with pytest.raises(hub.UnsupportedInputSize, match="multiple of 224"):
        B.build_backbone("swin_tiny", 64, weights=None)


def test_missing_keras_hub_is_a_one_line_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # import keras_hub -> ImportError
    with pytest.raises(hub.KerasHubMissing, match=r"pip install"):
        B.build_backbone("vit_b16", 32, weights="imagenet")
