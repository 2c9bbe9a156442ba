"""Grad-CAM finds its target layer for every backbone family and gives finite heatmaps."""

import importlib.util

import numpy as np
import pytest

from fracture.evaluation.gradcam import GradCam
from fracture.models.classifier import ModelConfig, build_model

FAMILIES = ["densenet121", "efficientnet_b0", "efficientnetv2_b0", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50", "resnet18", "mobilenet_v3_small", "small_cnn", "vgg19", "regnetx_002"]
# ViT's tokens become a 2x2 map at 32 px: Grad-CAM explains it like a CNN's last map.
NO_KERAS_HUB = importlib.util.find_spec("keras_hub") is None
HUB = [pytest.param("vit_b16", marks=pytest.mark.skipif(NO_KERAS_HUB, reason="needs the optional keras-hub extra"))]


@pytest.mark.parametrize("backbone", FAMILIES + HUB)
def test_gradcam_heatmap_shape_and_range_for_every_family(backbone):
    fm = build_model(ModelConfig(backbone=backbone, weights=None, attention_gate=backbone == "small_cnn"), 3, 32)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    cam = GradCam(fm.model)
    heatmaps, explained = cam(images, np.array([0, 2]))
    assert heatmaps.shape == (2, 32, 32) and np.isfinite(heatmaps).all()
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1 + 1e-6
    assert explained.tolist() == [0, 2]
    attention = cam.attention(images)
    assert (attention is not None) == (backbone == "small_cnn")
    if attention is not None:
        assert attention.shape == (2, 32, 32)


def test_gradcam_explains_the_predicted_class_by_default():
    fm = build_model(ModelConfig(backbone="small_cnn", weights=None), 3, 32)
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    heatmaps, explained = GradCam(fm.model)(images)
    np.testing.assert_array_equal(explained, np.asarray(fm.model(images)["class"]).argmax(axis=1))
    assert heatmaps.max() > 0
