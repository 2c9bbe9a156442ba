"""The detector end to end on synthetic data: `experiment=demo_detector` as the README runs
it, then evaluate and predict. The figure is asserted (mAP50 >= 0.5 on the synthetic
valid split); nothing is timed."""

import csv
import json

import pytest

from conftest import compose_cfg


@pytest.fixture(scope="module")
def detector_run(tmp_path_factory):
    from fracture.training.trainer import train

    tmp = tmp_path_factory.mktemp("demo_detector")
    cfg = compose_cfg("config", [
        "experiment=demo_detector", f"paths.data_dir={tmp / 'data'}", f"paths.log_dir={tmp / 'logs'}",
        f"paths.cache_dir={tmp / 'cache'}", "callbacks.progress=0",
    ])
    result = train(cfg)
    assert result.status == "finished"
    return result.run_dir


@pytest.mark.slow
def test_demo_detector_reaches_map50_of_one_half_on_its_valid_split(detector_run):
    from fracture.evaluation.runner import EvalConfig, evaluate_run

    result = evaluate_run(detector_run, "valid", cfg=EvalConfig(bootstrap=200, gradcam_random=1, gradcam_worst_boxes=1))
    d = result["detection"]
    assert d["map50"] >= 0.5 and d["test_time_flip"] is False, d
    assert d["one_class_ap50"] >= 0.5 and d["sens_at_1fp"] >= 0.5, d
    assert d["one_class_ap50_ci"][0] <= d["one_class_ap50"] <= d["one_class_ap50_ci"][1]
    # best.keras is the epoch of the best per-epoch valid mAP50 (callbacks.monitor=val_map50),
    # computed in the model frame; evaluate.py's, in the original frame, is the same figure up
    # to the few IoUs near 0.5 that the frame change moves across it (seen: 0.0085 apart in
    # one CI run, under 0.005 in others), so 0.015: a model from an early epoch still fails it
    history = list(csv.DictReader((detector_run / "history.csv").open()))
    assert abs(max(float(r["val_map50"]) for r in history) - d["map50"]) < 0.015, (history[-1], d["map50"])
    saved = json.loads((detector_run / "eval" / "valid" / "metrics.json").read_text())["detection"]
    assert set(saved) >= {"map50", "map50_95", "per_class", "one_class_ap50", "one_class_ap50_ci", "froc", "sens_at_1fp"}
    assert all(set(v) >= {"ap50", "n_boxes", "ci"} for v in saved["per_class"].values())
    assert list(saved["froc"]) == ["0.125", "0.25", "0.5", "1", "2", "4", "8"]
    report = (detector_run / "eval" / "valid" / "report.md").read_text()
    assert "## Detection" in report and "froc.png" in report
    from fracture.evaluation.report import headline_rows

    headline = {name: value for name, value, _ in headline_rows(result)}  # what evaluate.py prints
    assert headline["detection mAP50 / mAP50-95 (every box, pycocotools)"].startswith(f"{d['map50']:.3f} / ")
    assert "top box per image: AP50 / AP50:95 (pycocotools)" in headline
    for name in ("detection_pr.png", "froc.png"):
        assert (detector_run / "eval" / "valid" / name).stat().st_size > 0


@pytest.mark.slow
def test_flip_test_time_augmentation_is_evaluated_and_recorded(detector_run, tmp_path):
    """eval.test_time_flip=true on a run trained without it: the mirror pass must land on
    the right locations (a wrong mapping averages each box with an unrelated one, and the
    synthetic findings, placed anywhere, stop matching), and the report says it was on."""
    from fracture.evaluation.runner import EvalConfig, evaluate_run

    cfg = EvalConfig(bootstrap=50, gradcam_random=1, gradcam_worst_boxes=1, test_time_flip=True)
    d = evaluate_run(detector_run, "valid", out=tmp_path / "flip", cfg=cfg)["detection"]
    assert d["test_time_flip"] is True and d["conventions"]["test_time_flip"].startswith("on:")
    assert d["map50"] >= 0.5 and d["one_class_ap50"] >= 0.5, d
    report = (tmp_path / "flip" / "report.md").read_text()
    assert "**test_time_flip**: on:" in report
    assert "pycocotools, flip test-time augmentation) |" in report  # the headline row says it too


@pytest.mark.slow
def test_predict_draws_every_box_with_one_csv_row_per_box(detector_run, tmp_path):
    from fracture.inference import predict_files, screening_for, write_predictions
    from fracture.runs import load_run

    run = load_run(detector_run)
    images = sorted((detector_run.parents[2] / "data" / "synthetic_detection" / "valid" / "images").glob("*"))[:12]
    result = predict_files(run, images, tmp_path / "overlays", screening=screening_for(run, box_confidence=0.3))
    path = write_predictions(result, tmp_path, folder=True)
    rows = list(csv.DictReader(path.open()))
    boxes = sum(len(r["boxes"]) for r in result.predictions)
    assert boxes > len(images) // 2  # findings are found ...
    assert any(len(r["boxes"]) >= 2 for r in result.predictions)  # ... several on one image
    assert len(rows) == sum(max(len(r["boxes"]), 1) for r in result.predictions)
    assert all(float(r["box_score"]) >= 0.3 for r in rows if r["box_score"])
    assert len(list((tmp_path / "overlays").glob("*.png"))) == len(images)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_detector_exports_match_keras_boxes_and_scores(detector_run, tmp_path, fmt):
    import numpy as np

    from fracture.export import export_run
    from fracture.runs import load_run

    run = load_run(detector_run)
    images = np.random.default_rng(0).uniform(0, 255, (8, 128, 128, 3)).astype("float32")
    checks = export_run(run.model, tmp_path, fmt, images)
    assert all(c.ok for c in checks), [c.as_dict() for c in checks]
    assert all(np.isfinite(c.latency_ms) and c.latency_ms > 0 for c in checks)


@pytest.mark.slow
def test_tensorboard_panel_draws_true_and_predicted_boxes(detector_run):
    import numpy as np
    import tensorflow as tf

    events = sorted((detector_run / "tensorboard" / "val_images").glob("events.out.tfevents.*"))
    images, texts = [], []
    for event in tf.compat.v1.train.summary_iterator(str(events[-1])):
        for value in event.summary.value:
            if value.tag == "val/true_green_predicted_red":
                images.append(value)
            elif value.tag == "val/classes":
                texts.append(tf.make_ndarray(value.tensor).item().decode())
    assert images and texts
    assert "boxes:" in texts[-1] and "boxes: none" not in texts[-1].split("\n\n")[0], texts[-1]
    # the last epoch's first image: pure green (truth) and pure red (prediction) lines
    pixels = tf.io.decode_png(tf.make_ndarray(images[-1].tensor)[2]).numpy()
    pure = lambda rgb: np.all(pixels[..., :3] == rgb, axis=-1).sum()  # noqa: E731
    assert pure([0, 255, 0]) > 20 and pure([255, 0, 0]) > 20
