"""Every registry backbone gives [C3, C4, C5] at strides 8, 16, 32 (symbolic shapes, no forward)."""

import pytest

from fracture.models import backbones as B

SIZE = 128


# ViT and Swin are single-scale (tests/models/test_hub_backbones.py checks they say so).
@pytest.mark.parametrize("name", sorted(n for n, spec in B.BACKBONES.items() if spec.feature_layers is not None))
def test_multiscale_taps_have_strides_8_16_32(name):
    backbone, _ = B.build_backbone(name, SIZE, weights=None, multiscale=True)
    sides = [tuple(t.shape[1:3]) for t in backbone.outputs]
    assert sides == [(SIZE // 8,) * 2, (SIZE // 16,) * 2, (SIZE // 32,) * 2]


def test_c5_is_the_single_feature_map_the_class_head_pools():
    single, _ = B.build_backbone("efficientnet_lite0", SIZE, weights=None)
    multi, _ = B.build_backbone("efficientnet_lite0", SIZE, weights=None, multiscale=True)
    assert tuple(multi.outputs[-1].shape) == tuple(single.output.shape)


def test_single_small_cnn_is_unchanged_by_the_deeper_multiscale_one():
    single, _ = B.build_backbone("small_cnn", 64, weights=None)
    assert tuple(single.output.shape[1:]) == (8, 8, 96)
    assert len(single.layers[-1].layers) == 1 + 4 * 4 - 1  # input + 4 x (conv, bn, relu, pool) - last pool


def test_single_backbone_weights_file_loads_into_the_multiscale_one(tmp_path):
    """A classifier run's backbone `.weights.h5` starts the detector: the taps share the layers."""
    import numpy as np

    single, _ = B.build_backbone("efficientnet_lite0", 64, weights=None)
    path = tmp_path / "backbone.weights.h5"
    single.save_weights(str(path))
    multi, loaded = B.build_backbone("efficientnet_lite0", 64, weights=str(path), multiscale=True)
    images = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    assert loaded == str(path)
    np.testing.assert_allclose(np.asarray(multi(images)[-1]), np.asarray(single(images)), atol=1e-5)
