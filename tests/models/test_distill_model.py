"""Distillation loss and mixture-of-experts head on hand-made logits; the distilled model's
frozen teacher and its .keras round trip in a fresh process (fracture.models.distill)."""

import math
import subprocess
import sys

import numpy as np
import pytest

from fracture.models.backbones import build_backbone
from fracture.models.classifier import ModelConfig, build_model, set_backbone_trainable
from fracture.models.distill import (
    DistillationLoss,
    DistillConfig,
    MixtureOfExperts,
    distillation_terms,
    mixture_of_experts,
)
from fracture.models.heads import build_heads

SIZE, CLASSES = 48, 3


def test_distillation_loss_hand_computed():
    # T = 2: teacher logits [2, 0] -> softmax([1, 0]) = [e, 1] / (e + 1); the student's [0, 0]
    # -> [1/2, 1/2] at any T. KL = sum p_t log(p_t / (1/2)); CE(label 0, [1/2, 1/2]) = ln 2.
    p = np.array([math.e, 1.0]) / (math.e + 1.0)
    kl = float(np.sum(p * np.log(p / 0.5)))  # 0.7311 * ln 1.4621 + 0.2689 * ln 0.5379 = 0.11094...
    assert kl == pytest.approx(0.110944, abs=1e-6)
    labels, teacher, student = np.array([[1.0, 0.0]]), np.array([[2.0, 0.0]]), np.array([[0.0, 0.0]])
    scaled_kl, ce = distillation_terms(labels, teacher, student, 2.0)
    assert float(scaled_kl[0]) == pytest.approx(4 * kl, rel=1e-5)  # scaled by T^2
    assert float(ce[0]) == pytest.approx(math.log(2), rel=1e-6)
    experts = np.stack([teacher, student], axis=1).astype("float32")
    loss = DistillationLoss(temperature=2.0, alpha=0.25)(labels, experts)
    assert float(loss) == pytest.approx(0.25 * 4 * kl + 0.75 * math.log(2), rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kl_vanishes_when_the_student_matches_the_teacher(temperature):
    logits = np.array([[3.0, -1.0, 0.5], [0.0, 2.0, -4.0]], np.float32)
    kl, _ = distillation_terms(np.eye(3)[:2], logits, logits, temperature)
    np.testing.assert_allclose(np.asarray(kl), 0.0, atol=1e-5)
    kl_shifted, _ = distillation_terms(np.eye(3)[:2], logits, logits + 7.0, temperature)  # softmax ignores a shift
    np.testing.assert_allclose(np.asarray(kl_shifted), 0.0, atol=1e-5)


def test_mixture_of_experts_gives_the_log_of_the_gated_mixture():
    # gate softmax([0, ln 3]) = [1/4, 3/4]; teacher softmax([0, ln 3]) = [1/4, 3/4]; student [1/2, 1/2]
    gate = np.array([[0.0, math.log(3)]], np.float32)
    teacher, student = np.array([[0.0, math.log(3)]], np.float32), np.zeros((1, 2), np.float32)
    log_p = np.asarray(MixtureOfExperts()([gate, teacher, student]))
    np.testing.assert_allclose(np.exp(log_p), [[0.25 * 0.25 + 0.75 * 0.5, 0.25 * 0.75 + 0.75 * 0.5]], rtol=1e-6)
    # a logit far out must not round a probability to 0 before the log (log-softmax throughout)
    far = np.asarray(MixtureOfExperts()([gate, np.array([[0.0, 200.0]], np.float32), student]))
    assert np.isfinite(far).all()


def tiny_mixture():
    """A distilled model on a random-init small_cnn teacher (no run folder needed here)."""
    teacher = build_model(ModelConfig(backbone="small_cnn", weights=None, box_hidden_units=8), CLASSES, SIZE).model
    student, _ = build_backbone("small_cnn", SIZE, None)
    heads = build_heads(tuple(student.output.shape[1:]), CLASSES, box_hidden_units=8)
    config = DistillConfig(enabled=True, temperature=3.0, alpha=0.7, gate_hidden_units=8)
    return (teacher, *mixture_of_experts(teacher, student, heads, config, SIZE))


def batch(n=6):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")
    y = {"class": np.eye(CLASSES, dtype="float32")[np.arange(n) % CLASSES], "box": np.tile(np.float32([[0.1, 0.2, 0.6, 0.7]]), (n, 1))}
    w = {"class": np.ones(n, "float32"), "box": np.ones(n, "float32")}
    return x, y, w


def test_unfreezing_the_backbone_never_reaches_the_teacher():
    """The fine-tune phase sets `trainable` recursively on the backbone that holds the teacher
    (that training leaves its weights as they were is checked end to end in tests/training)."""
    teacher, model, backbone, _ = tiny_mixture()
    set_backbone_trainable(backbone, "all")
    teacher_ids = {id(v) for v in teacher.weights}
    trainable_ids = {id(v) for v in model.trainable_weights}
    assert teacher_ids and not teacher_ids & trainable_ids
    assert {id(v) for v in backbone.get_layer("small_cnn_backbone").weights if v.trainable} <= trainable_ids


def test_distilled_model_reloads_in_a_fresh_process_with_identical_predictions(tmp_path):
    """One .keras file (teacher inside), loaded with `load_model_file` alone, as evaluate,
    predict, export and serve load it."""
    _, model, _, _ = tiny_mixture()
    x, _, _ = batch()
    model.save(tmp_path / "best.keras")
    np.save(tmp_path / "x.npy", x)
    expected = model.predict(x, verbose=0)
    code = f"""
import numpy as np
from fracture.models.classifier import split_saved_model
from fracture.runs import load_model_file
m = load_model_file({str(tmp_path / 'best.keras')!r})
out = m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)
np.savez({str(tmp_path / 'out.npz')!r}, **out)
parts = split_saved_model(m)
teacher = parts.backbone.get_layer("frozen_teacher")
print(type(m).__name__, m.distillation.temperature, m.distillation.alpha, parts.backbone.name, parts.heads.name,
      type(teacher).__name__, teacher.trainable, sorted(m.output))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-11:] == [
        "DistillationModel", "3.0", "0.7", "experts_backbone", "heads", "FrozenExpert", "False",
        "['box',", "'class',", "'expert_logits',", "'gate']",
    ]
    reloaded = np.load(tmp_path / "out.npz")
    for key in ("class", "box", "expert_logits", "gate"):
        np.testing.assert_allclose(reloaded[key], expected[key], rtol=0, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(expected["class"].sum(axis=1), 1.0, atol=1e-5)


def test_exports_keep_the_contract_outputs_only():
    from fracture.export import named_outputs

    _, model, _, _ = tiny_mixture()
    x, _, _ = batch(2)
    assert set(named_outputs(model(x, training=False))) == {"class_probabilities", "box"}


def test_model_config_types_the_distill_section():
    cfg = ModelConfig(distill={"enabled": True, "teacher_run": "/runs/t", "temperature": 2.0})
    assert isinstance(cfg.distill, DistillConfig) and cfg.distill.alpha == 0.5
    with pytest.raises(ValueError, match="model.distill.tempreature"):
        ModelConfig(distill={"tempreature": 2.0})
    with pytest.raises(ValueError, match="alpha"):
        DistillConfig(alpha=1.5)
    with pytest.raises(ValueError, match="enabled is false"):
        DistillConfig(teacher_run="/runs/t")
    with pytest.raises(ValueError, match="box_head=single"):
        ModelConfig(box_head="dense", distill={"enabled": True})

