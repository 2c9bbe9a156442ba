"""evaluate.py, predict.py and export.py on a tiny run trained on synthetic data
(train/valid/test), end to end through the library functions the scripts call."""

import csv
import json
import os
import shutil
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PROJECT_ROOT, compose_cfg
from fracture.evaluation.runner import EvalConfig, evaluate_run
from fracture.runs import load_run
from fracture.export import export_run
from fracture.inference import list_inputs, predict_files, write_predictions
from fracture.training.trainer import train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval_run")
    cfg = compose_cfg("config", [
        "experiment=demo", f"data.root={tmp / 'synthetic'}", "data.synthetic.per_class=12",
        "+data.synthetic.splits.test=0.5", "data.synthetic.min_side=96",
        "data.synthetic.max_side=128", "data.image_size=48", "data.batch_size=16", "trainer.epochs=3",
        f"paths.log_dir={tmp / 'logs'}", f"paths.cache_dir={tmp / 'cache'}", "callbacks.progress=0",
        "callbacks.tensorboard.enabled=false",
    ])
    return train(cfg, tmp / "run").run_dir


def test_evaluate_locks_the_threshold_on_valid_and_applies_it_to_test(trained_run):
    cfg = EvalConfig(gradcam_random=2, gradcam_worst_boxes=1, critical_pairs=[["wrist fracture", "no finding"], ["nope", "no finding"]])
    valid = evaluate_run(trained_run, "valid", cfg=cfg)
    out = trained_run / "eval" / "valid"
    for name in ("metrics.json", "report.md", "predictions.csv", "confusion_matrix.png", "roc.png", "reliability.png"):
        assert (out / name).is_file(), name
    assert len(list((out / "gradcam").glob("random_*.png"))) == 2
    locked = json.loads((trained_run / "screening_threshold.json").read_text())
    assert locked["chosen_on"] == "valid" and valid["screening"]["threshold"] == locked["threshold"]
    assert valid["screening"]["sensitivity"]["value"] >= 0.9

    before = (trained_run / "screening_threshold.json").read_bytes()
    test = evaluate_run(trained_run, "test", cfg=cfg)
    assert (trained_run / "screening_threshold.json").read_bytes() == before
    assert test["screening"]["threshold"] == locked["threshold"]

    # box IoU is computed in the original image frame; it must equal the training metric,
    # which works on the letterboxed model input (IoU is invariant to the letterbox)
    assert test["boxes"]["mean_iou"] == pytest.approx(_training_time_box_iou(trained_run, "test"), abs=1e-4)

    rows = list(csv.DictReader((trained_run / "eval" / "test" / "predictions.csv").open()))
    assert len(rows) == test["images"]
    accuracy = np.mean([r["true_class"] == r["predicted_class"] for r in rows])
    assert test["classification"]["accuracy"] == pytest.approx(accuracy)
    assert test["critical_errors"]["unknown_pairs"] == [["nope", "no finding"]]
    report = (trained_run / "eval" / "test" / "report.md").read_text()
    assert "95% CI" in report and "![confusion matrix](confusion_matrix.png)" in report
    assert "Evaluated split: **test** of" in report and "Leakage across test and train:" in report
    assert set(test["leakage"]) == {"groups", "duplicates"}
    assert test["leakage"]["duplicates"]["counts"]["exact"] == {"test-train": 0}  # index order: split, then train
    json.loads((trained_run / "eval" / "test" / "metrics.json").read_text())  # strict JSON, no NaN


def test_last_keras_is_evaluated_with_its_own_threshold_and_folder(trained_run, tmp_path):
    """model_file=last.keras scores that model, locks its own threshold and leaves best.keras's
    files alone. last.keras is made to differ from best.keras (its "no finding" logit pushed
    up), so a run that quietly scored best.keras would show best.keras's figures."""
    from fracture.runs import load_model_file, save_model

    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("eval", "predictions", "export"))
    best = evaluate_run(run, "valid", cfg=EvalConfig(gradcam_random=0, gradcam_worst_boxes=0))
    best_threshold = (run / "screening_threshold.json").read_bytes()
    model = load_model_file(run / "best.keras")
    logits = model.get_layer("heads").get_layer("class_logits")
    kernel, bias = logits.get_weights()
    bias[load_run(run).classes.negative_id] += 4.0
    logits.set_weights([kernel, bias])
    save_model(model, run / "last.keras")

    last = evaluate_run(run, "valid", cfg=EvalConfig(gradcam_random=0, gradcam_worst_boxes=0), model_file="last.keras")
    assert (run / "screening_threshold.json").read_bytes() == best_threshold
    locked = json.loads((run / "screening_threshold.last.json").read_text())
    assert locked["model_file"] == "last.keras" and last["screening"]["threshold"] == locked["threshold"]
    assert locked["threshold"] != json.loads(best_threshold)["threshold"]
    assert last["model_file"] == "last.keras" and best["model_file"] == "best.keras"
    rows = list(csv.DictReader((run / "eval" / "valid.last" / "predictions.csv").open()))
    assert sum(r["predicted_class"] == "no finding" for r in rows) > sum(
        r["predicted_class"] == "no finding" for r in csv.DictReader((run / "eval" / "valid" / "predictions.csv").open()))
    assert "(last.keras)" in (run / "eval" / "valid.last" / "report.md").read_text()
    for bad in ("../best.keras", "best.h5"):
        with pytest.raises(ValueError, match="name a .keras file in the run folder"):
            load_run(run, model_file=bad)


def test_export_of_last_keras_goes_to_its_own_folder(trained_run, tmp_path):
    """model_file=last.keras exports that model into export.last/, beside (never over)
    best.keras's export/; a damaged last.keras is named even when best.keras is fine."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("eval", "predictions", "export"))
    (run / "last.keras").write_bytes(b"")
    command = [sys.executable, "scripts/export.py", f"run={run}", "model_file=last.keras", "format=saved_model"]
    out = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and str(run / "last.keras") in out.stderr, out.stderr[-2000:]
    shutil.copy(run / "best.keras", run / "last.keras")
    out = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "last.keras checked on" in out.stdout
    assert (run / "export.last" / "saved_model" / "saved_model.pb").is_file() and not (run / "export").exists()


def _training_time_box_iou(run_dir, split):
    from fracture.data.pipeline import make_dataset
    from fracture.evaluation.runner import split_samples
    from fracture.models.metrics import BoxMeanIoU

    run = load_run(run_dir)
    samples, _ = split_samples(run, split, None)
    metric = BoxMeanIoU()
    for images, targets, weights in make_dataset(samples, run.classes.num_classes, run.data, False, cache=None):
        metric.update_state(targets["box"], run.model(images)["box"], weights["box"])
    return float(metric.result())


def test_predict_on_a_folder_skips_and_lists_a_corrupt_file(trained_run, tmp_path):
    source = trained_run.parent / "synthetic" / "test" / "images"
    folder = tmp_path / "in"
    folder.mkdir()
    for image in sorted(source.glob("*.jpg"))[:3]:
        shutil.copy(image, folder)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (folder / "scan.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    Image.fromarray(np.full((40, 40, 3), 80, np.uint8)).save(folder / "scan.tif")
    files, is_folder = list_inputs(folder)
    run = load_run(trained_run)
    result = predict_files(run, files, tmp_path / "out" / "overlays")
    path = write_predictions(result, tmp_path / "out", is_folder)
    skipped = {Path(s["image"]).name: s["reason"] for s in result.skipped}
    assert sorted(skipped) == ["corrupt.jpg", "scan.dcm", "scan.tif"]  # listed, then skipped with a reason
    assert "DICOM" in skipped["scan.dcm"] and "TIFF" in skipped["scan.tif"].upper()
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 3 and path.name == "predictions.csv"
    assert len(list((tmp_path / "out" / "overlays").glob("*_pred.png"))) == 3
    assert len(json.loads((tmp_path / "out" / "skipped.json").read_text())) == 3
    for r in result.predictions:
        x1, y1, x2, y2 = r["box"]
        assert 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("fmt, expected", [("saved_model", ["saved_model"]), ("tflite", ["saved_model", "tflite_fp32", "tflite_fp16", "tflite_int8"])])
def test_exports_round_trip_within_tolerance(trained_run, tmp_path, fmt, expected):
    run = load_run(trained_run)
    images = np.random.default_rng(0).uniform(0, 255, (3, 48, 48, 3)).astype("float32")
    checks = export_run(run.model, tmp_path, fmt, images)
    assert [c.name for c in checks] == expected
    assert all(c.ok for c in checks), [c.as_dict() for c in checks]
    assert checks[0].max_abs_diff < 1e-5


def test_onnx_export_round_trip(trained_run, tmp_path):
    pytest.importorskip("tf2onnx", reason="ONNX export needs the export extras: pip install -e '.[export]'")
    pytest.importorskip("onnxruntime", reason="needs onnxruntime (export extras)")
    images = np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 3)).astype("float32")
    checks = export_run(load_run(trained_run).model, tmp_path, "onnx", images)
    assert checks[0].ok, checks[0].as_dict()


def test_evaluate_script_prints_the_headline_and_a_bad_run_is_a_clear_error(trained_run, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    root = trained_run.parent / "synthetic"  # data.root= works as documented, without '+'
    ok = subprocess.run([sys.executable, "scripts/evaluate.py", f"run={trained_run}", "split=valid", f"out={tmp_path / 'e'}",
                         f"data.root={root}", "eval.gradcam_random=1", "eval.gradcam_worst_boxes=0"],
                        cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "accuracy:" in ok.stdout and "95% CI" in ok.stdout
    assert "split" in ok.stdout and "used" in ok.stdout  # the data accounting table comes first
    for bad_key in ("+data.batchsize=8", "+data.image_size=64"):
        refused = subprocess.run([sys.executable, "scripts/evaluate.py", f"run={trained_run}", bad_key],
                                 cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=120)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
        assert "data.root" in refused.stderr  # the refusal names the valid keys
    bad = subprocess.run([sys.executable, "scripts/evaluate.py", f"run={tmp_path / 'missing'}"], cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode != 0 and "is" in bad.stderr and "config.yaml" in bad.stderr and "Traceback" not in bad.stderr


def _copy_run_with_model(trained_run, tmp_path, content: bytes):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "classes.json"):
        shutil.copy(trained_run / name, run)
    (run / "best.keras").write_bytes(content)
    return run


@pytest.mark.parametrize("script, content", [
    ("evaluate", "truncated"),
    ("predict", b"this is a text file, not a model\n"),
    ("export", b""),
])
def test_a_damaged_model_file_is_one_line_naming_it_and_exit_2(trained_run, tmp_path, script, content):
    if content == "truncated":
        whole = (trained_run / "best.keras").read_bytes()
        content = whole[: len(whole) // 2]
    run = _copy_run_with_model(trained_run, tmp_path, content)
    args = {"evaluate": [], "predict": [f"input={tmp_path}"], "export": []}[script]
    out = subprocess.run([sys.executable, f"scripts/{script}.py", f"run={run}", *args], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(run / "best.keras") in errors[0], out.stderr[-2000:]


def test_model_file_problems_are_named(trained_run, tmp_path):
    import zipfile

    from fracture.runs import RunError, load_model_file

    whole = (trained_run / "best.keras").read_bytes()
    cases = {
        "empty.keras": (b"", "empty file"),
        "text.keras": (b"hello", "not a zip"),
        "half.keras": (whole[: len(whole) // 2], "not a zip"),
        "model.h5": (whole, "not a .keras file"),
    }
    for name, (content, why) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(RunError, match=why):
            load_model_file(tmp_path / name)
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as z:
        z.writestr("readme.txt", "a zip, but no model")
    with pytest.raises(RunError, match="no config.json"):
        load_model_file(tmp_path / "other.keras")
    with pytest.raises(RunError, match="file not found"):
        load_model_file(tmp_path / "missing.keras")


def test_predict_keeps_each_input_folder_apart_and_uses_the_locked_threshold(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("eval", "predictions", "export"))
    (run / "screening_threshold.json").write_text(json.dumps({"threshold": 0.42, "target_sensitivity": 0.9, "chosen_on": "valid"}))
    data = trained_run.parent / "synthetic"
    outs = {}
    for split, extra in (("train", []), ("valid", ["threshold=0.99"])):
        out = subprocess.run([sys.executable, "scripts/predict.py", f"run={run}", f"input={data / split / 'images'}",
                              "overlays=false", *extra], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        outs[split] = out.stdout
    assert "screening threshold: 0.42 (locked on valid" in outs["train"]
    assert "screening threshold: 0.99 (threshold=0.99 given on the command line)" in outs["valid"]
    folders = sorted(p.name for p in (run / "predictions").iterdir())
    assert len(folders) == 2 and folders[0].startswith("train_images_") and folders[1].startswith("valid_images_")
    for folder, threshold in zip(folders, (0.42, 0.99)):
        rows = list(csv.DictReader((run / "predictions" / folder / "predictions.csv").open()))
        assert rows and all((float(r["screening_score"]) < threshold) == (r["no_finding"] == "True") for r in rows)


def test_test_time_flip_is_refused_for_a_single_box_run(trained_run):
    from fracture.runs import load_run

    with pytest.raises(ValueError, match=r"test_time_flip=true: .* is not a dense detector run \(model.box_head='single'\)"):
        load_run(trained_run, test_time_flip=True)
    assert load_run(trained_run, test_time_flip=False).model_config.get("box_head") == "single"
