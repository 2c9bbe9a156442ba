"""The dense model: outputs, prior bias, mixed precision, config keys, .keras round trip."""

from pathlib import Path

import keras
import numpy as np
import pytest

from fracture.config import typed
from fracture.models.classifier import ModelConfig, build_model, split_saved_model
from fracture.models.detection import DetectionConfig, num_locations, prior_bias

TINY = {"backbone": "small_cnn", "weights": None, "box_head": "dense", "neck_width": 16, "head_convs": 1, "detection": {"norm_groups": 4}}
MODEL_SECTIONS = ("loss", "class_weights", "optimizer", "class_metric")


@pytest.fixture
def images():
    return np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")


def test_dense_model_outputs_class_probabilities_and_the_dense_tensor(images):
    fm = build_model(ModelConfig(**TINY), 4, 64)
    out = fm.model(images, training=False)
    assert set(out) == {"class", "detections"}
    assert out["detections"].shape == (2, num_locations(64, (8, 16, 32)), 4 + 1 + 4)
    np.testing.assert_allclose(np.asarray(out["class"]).sum(axis=1), 1.0, atol=1e-5)
    assert (np.asarray(out["detections"])[..., :4] >= 0).all()
    assert len(fm.backbone.outputs) == 3 and fm.heads.name == "heads"


def test_class_logit_bias_starts_at_the_prior_and_the_box_branch_does_not():
    fm = build_model(ModelConfig(**TINY), 4, 64)
    np.testing.assert_allclose(np.asarray(fm.heads.get_layer("head_class_logits").bias), prior_bias(0.01), rtol=1e-6)
    assert np.allclose(np.asarray(fm.heads.get_layer("head_box_distances").bias), 0.0)
    assert np.allclose(np.asarray(fm.heads.get_layer("head_quality_logit").bias), 0.0)


def test_dense_outputs_are_float32_under_mixed_precision(images):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        fm = build_model(ModelConfig(**TINY), 3, 64)
        out = fm.model(images, training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert fm.backbone.compute_dtype == "float16"
    assert {keras.backend.standardize_dtype(v.dtype) for v in out.values()} == {"float32"}


def test_saved_dense_model_reloads_with_identical_outputs_and_splits(tmp_path, images):
    fm = build_model(ModelConfig(**TINY), 3, 64)
    before = fm.model(images, training=False)
    fm.model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    after = reloaded(images, training=False)
    for key in ("class", "detections"):
        np.testing.assert_array_equal(np.asarray(before[key]), np.asarray(after[key]))
    parts = split_saved_model(reloaded)
    assert parts.backbone.name == "small_cnn_backbone" and len(parts.backbone.outputs) == 3
    features = parts.backbone(images, training=False)
    np.testing.assert_array_equal(np.asarray(parts.heads(features, training=False)["detections"]), np.asarray(after["detections"]))


def test_default_config_keeps_the_single_box_model():
    fm = build_model(ModelConfig(backbone="small_cnn", weights=None), 3, 32)
    assert set(fm.model.output) == {"class", "box"}


def test_config_keys_are_typed_and_unknown_ones_rejected():
    cfg = typed(ModelConfig, {"box_head": "dense", "detection": {"assigner": {"center_radius": 1.5}}}, "model")
    assert isinstance(cfg.detection, DetectionConfig) and cfg.detection.assigner.center_radius == 1.5
    with pytest.raises(ValueError, match="model.detection.assigner.radius"):
        typed(ModelConfig, {"detection": {"assigner": {"radius": 1.5}}}, "model")
    with pytest.raises(ValueError, match="box_head"):
        ModelConfig(box_head="yolo")
    with pytest.raises(ValueError, match="box"):
        typed(ModelConfig, {"detection": {"loss": {"box": "l1"}}}, "model")
    with pytest.raises(ValueError, match="divisible"):
        build_model(ModelConfig(**{**TINY, "neck_width": 10}), 3, 64)


@pytest.mark.parametrize("name", ["default", "efficientnet_lite0_detector", "small_cnn_detector"])
def test_model_yaml_files_type_check(name):
    """Every documented key of conf/model/*.yaml is a typed key (typos fail here, not in a run)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[3] / "conf" / "model"), version_base="1.3"):
        model = typed(ModelConfig, compose(config_name=name), "model", ignore=MODEL_SECTIONS)
    assert model.box_head == ("single" if name == "default" else "dense")
    assert isinstance(model.detection, DetectionConfig)


def test_a_saved_detector_loads_in_a_fresh_process_through_the_run_loader(tmp_path):
    """evaluate/predict/export/serve load with `fracture.runs.load_model_file` alone: it must
    register the detection layers itself (a process that built the model hid this)."""
    import subprocess
    import sys

    from fracture.models.classifier import ModelConfig, build_model, build_model_losses
    from fracture.models.losses import LossConfig

    cfg = ModelConfig(backbone="small_cnn", weights=None, box_head="dense", neck_width=16, detection={"norm_groups": 8})
    fm = build_model(cfg, 3, 64)
    losses, weights = build_model_losses(cfg, LossConfig(), 64)
    # the frozen phase compiles the heads (on cached features); the saved model then holds
    # the heads' compile config, DetectionLoss included, inside its own config
    fm.heads.compile(optimizer="adam", loss=losses, loss_weights=weights)
    fm.model.save(tmp_path / "best.keras")
    code = f"from fracture.runs import load_model_file; print(sorted(load_model_file({str(tmp_path / 'best.keras')!r}).output))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "['class', 'detections']" in out.stdout, out.stderr[-2000:]
