"""Heads: float32 outputs under mixed precision, canonical boxes, the attention gate, and
.keras save -> reload (safe_mode) with identical outputs."""

import keras
import numpy as np
import pytest

from fracture.models.classifier import ModelConfig, build_model, set_backbone_trainable, split_saved_model
from fracture.models.heads import attention_gate_of


@pytest.fixture
def images():
    return np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")


@pytest.mark.parametrize("attention_gate", [False, True])
def test_saved_model_reloads_in_safe_mode_with_identical_outputs(tmp_path, images, attention_gate):
    fm = build_model(ModelConfig(backbone="small_cnn", weights=None, attention_gate=attention_gate), 5, 32)
    before = fm.model(images, training=False)
    fm.model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    after = reloaded(images, training=False)
    for key in ("class", "box"):
        np.testing.assert_array_equal(np.asarray(before[key]), np.asarray(after[key]))
    assert (attention_gate_of(reloaded) is not None) == attention_gate
    parts = split_saved_model(reloaded)
    assert parts.heads.name == "heads" and parts.backbone.name == "small_cnn_backbone"


def test_heads_output_float32_probabilities_and_ordered_boxes_under_mixed_precision(images):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        fm = build_model(ModelConfig(backbone="small_cnn", weights=None, attention_gate=True), 4, 32)
        out = fm.model(images, training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert fm.backbone.compute_dtype == "float16"
    assert {keras.backend.standardize_dtype(out[k].dtype) for k in out} == {"float32"}
    np.testing.assert_allclose(np.asarray(out["class"]).sum(axis=1), 1.0, atol=1e-5)
    box = np.asarray(out["box"])
    assert ((box >= 0) & (box <= 1)).all()
    assert (box[:, 0] <= box[:, 2]).all() and (box[:, 1] <= box[:, 3]).all()


def test_attention_mask_is_a_spatial_probability_map(images):
    fm = build_model(ModelConfig(backbone="small_cnn", weights=None, attention_gate=True), 4, 32)
    gate = attention_gate_of(fm.model)
    mask = np.asarray(gate.mask_of(fm.backbone(images)))
    assert mask.shape == (3, 4, 4, 1) and ((mask >= 0) & (mask <= 1)).all()


def test_fine_tuning_pretrained_weights_can_keep_batchnorm_frozen():
    fm = build_model(ModelConfig(backbone="small_cnn", weights=None), 4, 32)
    set_backbone_trainable(fm.backbone, "all", freeze_batchnorm=True)
    layers = fm.backbone.layers[-1].layers
    assert all(not l.trainable for l in layers if isinstance(l, keras.layers.BatchNormalization))
    assert all(l.trainable for l in layers if isinstance(l, keras.layers.Conv2D))
    set_backbone_trainable(fm.backbone, "all")
    assert all(l.trainable for l in layers if l.weights)


@pytest.mark.parametrize("unfreeze, expect_trainable", [(0, 0), ("all", None), (2, 2)])
def test_backbone_freezing(unfreeze, expect_trainable):
    fm = build_model(ModelConfig(backbone="small_cnn", weights=None), 4, 32)
    set_backbone_trainable(fm.backbone, unfreeze)
    trainable_layers = [l for l in fm.backbone.layers[-1].layers if l.trainable and l.weights] if fm.backbone.trainable else []
    if expect_trainable is None:
        assert fm.backbone.trainable and len(fm.backbone.trainable_weights) == len(
            [w for w in fm.backbone.weights if "moving" not in w.path]
        )
    else:
        # the top N layers with weights, BatchNorm excluded (it stays frozen when fine-tuning partly)
        assert len(trainable_layers) == expect_trainable
        assert not any(isinstance(l, keras.layers.BatchNormalization) for l in trainable_layers)
