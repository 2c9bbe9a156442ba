"""report.md and the figures show undefined metrics as n/a, with the reason, NaN or null alike."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from fracture.evaluation import figures
from fracture.evaluation import metrics as m
from fracture.evaluation.boxes import ImageBoxes, box_metrics
from fracture.evaluation.report import render_report

NAMES = ["a", "b", "no finding"]


def _as_json_nulls(value):
    """What metrics.json holds: NaN written as null."""
    if isinstance(value, dict):
        return {k: _as_json_nulls(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json_nulls(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


@pytest.fixture
def one_class_result():
    """Two images, both of class a: AUC, b's precision, box AP of b are all undefined."""
    y_true = np.array([0, 0])
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1]])
    y_pred = probs.argmax(axis=1)
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6]])
    result = {
        "run": "run", "model_file": "best.keras", "split": "valid", "data_root": "data", "images": 2,
        "classification": m.classification_report(y_true, y_pred, NAMES),
        "auc": m.one_vs_rest_auc(y_true, probs, NAMES),
        "calibration": m.expected_calibration_error(probs.max(axis=1), y_true == y_pred),
        "boxes": box_metrics(ImageBoxes(y_true, boxes, [True, True], probs, boxes), NAMES, negative_id=2),
        "critical_errors": m.critical_errors(y_true, y_pred, probs.max(axis=1), [], NAMES),
        "leakage": None,
        "explanations": {},
    }
    samples = [SimpleNamespace(image_path=f"img{i}.jpg") for i in range(2)]
    preds = SimpleNamespace(y_true=y_true, y_pred=y_pred, probs=probs, samples=samples)
    return result, preds


@pytest.mark.parametrize("as_json", [False, True])
def test_report_shows_n_a_and_why(one_class_result, as_json):
    result, preds = one_class_result
    if as_json:
        result = _as_json_nulls(result)
    text = render_report(result, NAMES, preds, worst_cases=3)
    assert "| macro one-vs-rest ROC-AUC | n/a |" in text
    assert "`auc/macro`: no class has both positive and negative images" in text
    assert "`auc/per_class/a`: every image is a" in text
    assert "`boxes/per_class/b/ap50`: no true box of b" in text
    assert "nan" not in text.lower()


def test_roc_figure_with_undefined_macro_auc_draws(one_class_result, tmp_path):
    result, preds = one_class_result
    for auc in (result["auc"], _as_json_nulls(result["auc"])):
        path = figures.roc_figure(preds.y_true, preds.probs, NAMES, auc, tmp_path / "roc.png")
        assert path.stat().st_size > 0


def test_reliability_figure_of_no_images_draws_n_a(tmp_path):
    for calibration in (m.expected_calibration_error([], []), _as_json_nulls(m.expected_calibration_error([], []))):
        fig = figures.reliability_plot(calibration)
        assert fig.axes[0].get_title() == "reliability, ECE n/a"
        assert figures.reliability_figure(calibration, tmp_path / "rel.png").stat().st_size > 0
