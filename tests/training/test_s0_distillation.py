"""S0 end to end on small synthetic data, composed from the real conf/ tree:
experiment=s0_teacher, then experiment=s0_student teacher_run=<it>; and the teacher_run
problems that must be clear errors."""

import csv
import json
import math
import shutil

import numpy as np
import pytest

from conftest import compose_cfg
from fracture.training.trainer import train

# The experiments read data=folders (S0's own layout: <class>/* with no splits, so the
# seeded, duplicate-aware split is made), resnet18 and mobilenet_v3_small; small_cnn keeps
# the test fast.
TINY = [
    "data.images_dir=images",
    "model.backbone=small_cnn",
    "model.weights=null",
    "model.box_hidden_units=16",
    "data.image_size=48",
    "data.batch_size=8",
    "trainer.max_train_batches=3",
    "trainer.max_val_batches=2",
    "callbacks.progress=0",
    "callbacks.tensorboard.enabled=false",
    "callbacks.early_stopping.enabled=false",
]


def s0_dataset(tmp):
    """Binary `images/<fractured|not fractured>/*`, no split folders (written once per tmp)."""
    from fracture.data.synthetic import FolderSpec, generate_folders

    root = tmp / "s0_data"
    if not root.is_dir():
        generate_folders(root, FolderSpec(layout="classes", side=64, per_split={"all": (24, 24)}))
    return root


def tiny_cfg(tmp, experiment, *overrides):
    paths = [f"data.root={s0_dataset(tmp)}", f"paths.log_dir={tmp / 'logs'}", f"paths.cache_dir={tmp / 'cache'}"]
    return compose_cfg("config", [f"experiment={experiment}", *paths, *TINY, *overrides])


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s0")
    result = train(tiny_cfg(tmp, "s0_teacher", "trainer.epochs=1"), tmp / "teacher")
    assert result.status == "finished"
    return tmp, result.run_dir


@pytest.fixture(scope="module")
def student_run(teacher_run):
    """A frozen phase (the heads and the gate on cached teacher + student features), then a
    fine-tune epoch."""
    tmp, teacher_dir = teacher_run
    cfg = tiny_cfg(tmp, "s0_student", f"teacher_run={teacher_dir}", "trainer.epochs=2", "trainer.freeze_epochs=1",
                   "model.distill.temperature=2.0")
    return train(cfg, tmp / "student")


def test_the_student_distils_from_the_teacher_run(teacher_run, student_run):
    """The loss is finite, the KL term is logged and moves, the teacher is left untouched."""
    from fracture.runs import load_model_file, load_run

    _, teacher_dir = teacher_run
    result = student_run
    assert result.status == "finished"
    with (result.run_dir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    kl = [float(r["distill_kl"]) for r in rows]
    assert len(rows) == 2 and all(math.isfinite(float(r["loss"])) and math.isfinite(float(r["val_loss"])) for r in rows)
    assert all(math.isfinite(v) and v >= 0 for v in kl) and kl[0] != kl[1], kl  # it moves, epoch to epoch
    assert {"student_ce", "gate_teacher", "val_distill_kl"} <= set(rows[0])
    phases = json.loads((result.run_dir / "run.json").read_text())["phases"]
    assert [(p["name"], p["feature_cache"]) for p in phases] == [("frozen", "memory"), ("fine_tune", "off")]

    student = load_run(result.run_dir)
    assert type(student.model).__name__ == "DistillationModel" and student.model.distillation.temperature == 2.0
    teacher = load_model_file(teacher_dir / "best.keras")
    inside = student.model.get_layer("experts_backbone").get_layer("frozen_teacher").expert.weights
    assert len(inside) == len(teacher.weights)  # BatchNorm statistics included: fine-tuning left them as they were
    for a, b in zip(inside, teacher.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_the_student_run_evaluates_like_any_run(student_run, tmp_path):
    """scripts/evaluate.py's path: predictions, screening, Grad-CAM (on the student's map)."""
    from fracture.evaluation.runner import EvalConfig, evaluate_run

    metrics = evaluate_run(student_run.run_dir, "valid", out=tmp_path, cfg=EvalConfig(gradcam_random=2, gradcam_worst_boxes=0, gradcam_max_critical=0))
    assert metrics["images"] > 0 and 0.0 <= metrics["classification"]["accuracy"] <= 1.0
    assert len(metrics["explanations"]["random"]) == 2


def _unfinished_copy(teacher_dir, tmp_path):
    copy = tmp_path / "teacher_copy"
    shutil.copytree(teacher_dir, copy)
    info = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    return copy


@pytest.mark.parametrize(
    "case, message",
    [
        ("unset", "needs a teacher: pass teacher_run="),
        ("missing", "no run.json"),
        ("unfinished", "status 'interrupted', not finished"),
        ("other_classes", "the teacher predicts"),
        ("other_size", "the teacher takes 48 px images; data.image_size=64"),
    ],
)
def test_teacher_run_problems_are_clear_errors(teacher_run, tmp_path, case, message):
    from fracture.models.classifier import ModelConfig, build_model
    from fracture.models.distill import TeacherError
    from fracture.runs import load_run

    _, teacher_dir = teacher_run
    run = {"unset": None, "missing": tmp_path / "nope", "unfinished": None}.get(case, teacher_dir)
    if case == "unfinished":
        run = _unfinished_copy(teacher_dir, tmp_path)
    names = load_run(teacher_dir).classes.class_names
    names = names[::-1] if case == "other_classes" else names
    cfg = ModelConfig(backbone="small_cnn", weights=None, distill={"enabled": True, "teacher_run": run and str(run)})
    with pytest.raises(TeacherError, match=message):
        build_model(cfg, len(names), 64 if case == "other_size" else 48, names)
