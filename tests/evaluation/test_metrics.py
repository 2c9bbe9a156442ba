"""Evaluation metrics against hand-computed answers."""

import math

import numpy as np
import pytest

from fracture.evaluation import metrics as m
from fracture.evaluation.boxes import ImageBoxes, box_average_precision, box_metrics


def test_wilson_interval_matches_the_textbook_values():
    # 8/10: Wilson 95% interval (0.4902, 0.9433) (Newcombe 1998 style worked example)
    lo, hi = m.wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = m.wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    assert all(math.isnan(v) for v in m.wilson_interval(0, 0))


def test_class_without_support_is_listed_not_averaged():
    names = ["a", "b", "c"]
    y_true = [0, 0, 1, 1]
    y_pred = [0, 1, 1, 2]  # "c" is predicted once but has no true instance
    report = m.classification_report(y_true, y_pred, names)
    assert report["no_support"] == ["c"] and set(report["per_class"]) == {"a", "b"}
    # a: P=1, R=0.5, F1=2/3; b: P=0.5, R=0.5, F1=0.5
    assert report["f1"]["macro"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert report["recall"]["macro"] == pytest.approx(0.5)
    assert report["accuracy"] == 0.5 and report["accuracy_ci95"] == pytest.approx(m.wilson_interval(2, 4))
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]


def test_auc_hand_cases_and_undefined_class():
    assert m.roc_auc([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0]) == 1.0
    assert m.roc_auc([0.9, 0.8, 0.3, 0.1], [0, 1, 1, 0]) == 0.5
    assert m.roc_auc([0.5, 0.5], [1, 0]) == 0.5  # a tie counts half
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0]])
    result = m.one_vs_rest_auc([0, 1, 0], probs, ["a", "b", "c"])
    assert math.isnan(result["per_class"]["c"]) and result["macro"] == pytest.approx(1.0)
    fpr, tpr, _ = m.roc_curve(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0]))
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1] and tpr.tolist() == [0, 0.5, 0.5, 1, 1]


def test_expected_calibration_error_by_hand():
    # bin (0.6, 0.667]: confidences 0.65, 0.65 with 1 of 2 right -> |0.5 - 0.65| * 2/4
    # bin (0.933, 1]:   confidences 0.95, 0.95 both right        -> |1 - 0.95| * 2/4
    result = m.expected_calibration_error([0.65, 0.65, 0.95, 0.95], [True, False, True, True], bins=15)
    assert result["ece"] == pytest.approx(0.15 * 0.5 + 0.05 * 0.5)
    assert [b["count"] for b in result["bins"]] == [2, 2]


def test_threshold_is_locked_on_valid_and_applied_unchanged_to_test():
    valid_scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    valid_pos = np.array([1, 1, 1, 0, 1, 0, 0, 1, 0, 0], bool)
    t = m.threshold_for_sensitivity(valid_scores, valid_pos, 0.8)  # 4 of 5 positives -> 0.5
    assert t == 0.5
    assert m.screening_metrics(valid_scores, valid_pos, t)["sensitivity"]["value"] == 0.8
    test_scores = np.array([0.55, 0.45, 0.2, 0.9])
    test_pos = np.array([1, 1, 0, 0], bool)
    s = m.screening_metrics(test_scores, test_pos, t)
    assert s["threshold"] == 0.5  # not re-tuned on test
    assert (s["tp"], s["fn"], s["tn"], s["fp"]) == (1, 1, 1, 1)
    assert s["ppv"]["value"] == 0.5 and s["npv"]["value"] == 0.5
    assert s["sensitivity"]["ci95"] == pytest.approx(m.wilson_interval(1, 2))


def test_box_ap_toy_set_with_known_answer():
    names = ["a", "b", "no finding"]
    true_classes = [0, 0, 2]
    true_boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9], [0, 0, 0, 0]])
    has_box = [True, True, False]
    # image 0: perfect box, score 0.9; image 1: box elsewhere (IoU 0), score 0.8;
    # image 2 (no finding): a low-scored detection of class a, score 0.3
    probs = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.3, 0.1, 0.6]])
    pred_boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 0.2, 0.2], [0.3, 0.3, 0.6, 0.6]])
    ap = box_average_precision(ImageBoxes(true_classes, true_boxes, has_box, probs, pred_boxes), names, negative_id=2)
    # ranked: TP (P=1, R=.5), FP, FP -> precision 1 for recall 0..0.5: 51 of 101 recall points
    assert ap["per_class"]["a"]["ap50"] == pytest.approx(51 / 101)
    assert ap["no_ground_truth"] == ["b"] and ap["ap50"] == pytest.approx(51 / 101)
    assert ap["per_class"]["a"]["ap50_95"] == pytest.approx(51 / 101)  # exact box: TP at every IoU threshold


def test_critical_errors_counted_most_confident_first():
    names = ["comminuted", "transverse", "no finding"]
    result = m.critical_errors([0, 0, 0, 1], [1, 1, 0, 0], [0.6, 0.9, 0.8, 0.7], [["comminuted", "transverse"], ["x", "y"]], names)
    assert result["pairs"][0]["count"] == 2 and result["pairs"][0]["indices"] == [1, 0]
    assert result["unknown_pairs"] == [["x", "y"]] and result["total"] == 2


def test_box_iou_rows():
    a = np.array([[0, 0, 0.5, 0.5], [0, 0, 0, 0], [0, 0, 0, 0]])
    b = np.array([[0.25, 0.25, 0.75, 0.75], [0.1, 0.1, 0.2, 0.2], [0, 0, 0, 0]])
    # an empty box against a real one: no overlap (0); two empty boxes: nothing to measure
    np.testing.assert_allclose(m.box_iou(a, b), [1 / 7, 0.0, np.nan])


def test_critical_error_wildcard_counts_every_missed_class():
    names = ["a", "b", "no finding"]
    result = m.critical_errors([0, 1, 1, 2], [2, 2, 1, 2], [0.9, 0.8, 0.7, 0.6], [["*", "no finding"]], names)
    assert [(p["true"], p["count"]) for p in result["pairs"]] == [("a", 1), ("b", 1)]
    assert result["total"] == 2


def test_every_confusion_pair_most_frequent_first_each_most_confident_first():
    """["*", "*"]: the S2 seed's critical-error pairs, only those that occur."""
    names = ["a", "b", "no finding"]
    y_true, y_pred = [0, 0, 0, 1, 2, 2], [1, 1, 0, 2, 2, 0]
    result = m.critical_errors(y_true, y_pred, [0.6, 0.9, 0.8, 0.7, 0.5, 0.4], [["*", "*"]], names)
    assert [(p["true"], p["predicted"], p["count"], p["indices"]) for p in result["pairs"]] == [
        ("a", "b", 2, [1, 0]), ("b", "no finding", 1, [3]), ("no finding", "a", 1, [5])]
    assert result["total"] == 4 and result["unknown_pairs"] == []
    assert m.critical_errors(y_true, y_pred, [0.5] * 6, [["x", "*"]], names)["unknown_pairs"] == [["x", "*"]]


def test_interleave_shows_every_group_before_any_second_item():
    assert m.interleave([[1, 0], [3], [5, 6, 7]]) == [1, 3, 5, 0, 6, 7]
    assert m.interleave([]) == []


# Undefined metrics: NaN (null in metrics.json) with the reason under `undefined`, never 0 or 1.


def _assert_every_nan_has_a_reason(block):
    assert sorted(m.nan_paths(block)) == sorted(block["undefined"])
    assert all(isinstance(r, str) and r for r in block["undefined"].values())


def test_precision_of_a_class_never_predicted_is_undefined_not_zero():
    report = m.classification_report([0, 0, 1, 1], [0, 0, 0, 0], ["a", "b"])
    b = report["per_class"]["b"]
    assert math.isnan(b["precision"])
    assert report["undefined"] == {"per_class/b/precision": "no image was predicted as b"}
    assert report["never_predicted"] == ["b"]
    assert b["recall"] == 0.0 and b["f1"] == 0.0  # both defined: every b image was missed
    assert report["precision"]["macro"] == pytest.approx(0.5)  # a only (2 of 4 right), b left out
    assert report["f1"]["macro"] == pytest.approx((2 / 3 + 0) / 2)
    _assert_every_nan_has_a_reason(report)
    # where precision is defined, F1 = 2TP / (2TP + FP + FN) is the harmonic mean, as before
    report = m.classification_report([0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 0, 2], ["a", "b", "c"])
    for stats in report["per_class"].values():
        p, r = stats["precision"], stats["recall"]
        assert stats["f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)


def test_an_empty_split_has_no_accuracy_and_says_so():
    report = m.classification_report([], [], ["a", "b"])
    assert math.isnan(report["accuracy"]) and report["undefined"]["accuracy"] == "no images"
    assert report["undefined"]["accuracy_ci95"] == "no images"
    assert report["undefined"]["recall/macro"] == "no class has instances in this split"
    _assert_every_nan_has_a_reason(report)


def test_auc_with_one_class_present_is_undefined_with_reasons():
    probs = np.array([[0.9, 0.1], [0.7, 0.3]])
    auc = m.one_vs_rest_auc([0, 0], probs, ["a", "b"])
    assert math.isnan(auc["per_class"]["a"]) and math.isnan(auc["per_class"]["b"]) and math.isnan(auc["macro"])
    assert "every image is a" in auc["undefined"]["per_class/a"]
    assert "no b image" in auc["undefined"]["per_class/b"]
    assert auc["undefined"]["macro"] == "no class has both positive and negative images"
    _assert_every_nan_has_a_reason(auc)
    assert m.auc_undefined_reason([True, False]) is None


def test_ece_of_no_images_is_undefined_not_zero():
    result = m.expected_calibration_error([], [], bins=15)
    assert math.isnan(result["ece"]) and result["bins"] == []
    assert result["undefined"] == {"ece": "no images"}
    defined = m.expected_calibration_error([0.7, 0.9], [True, True])
    assert defined["undefined"] == {} and defined["images"] == 2


def test_screening_rates_with_a_zero_denominator_are_undefined():
    # no negatives, and a threshold above every score: nothing is flagged
    s = m.screening_metrics([0.2, 0.4], [True, True], threshold=0.5)
    assert s["sensitivity"]["value"] == 0.0  # defined: 0 of 2 positives flagged
    assert math.isnan(s["specificity"]["value"]) and math.isnan(s["ppv"]["value"])
    assert s["undefined"]["specificity/value"] == "no negative image"
    assert s["undefined"]["ppv/ci95"] == "no image flagged at this threshold"
    assert s["npv"]["value"] == 0.0  # 0 of 2 images below the threshold are negative
    _assert_every_nan_has_a_reason(s)


def test_wilson_ci_with_n_zero_is_undefined_with_reason_where_it_is_used():
    s = m.screening_metrics([0.9], [False], threshold=0.5)
    assert all(math.isnan(v) for v in s["sensitivity"]["ci95"])
    assert s["undefined"]["sensitivity/ci95"] == "no positive image"


def test_box_metrics_without_positives_and_ap_without_ground_truth_say_why():
    names = ["a", "b", "no finding"]
    probs = np.array([[0.2, 0.1, 0.7], [0.1, 0.2, 0.7]])
    boxes = np.array([[0.1, 0.1, 0.4, 0.4], [0.2, 0.2, 0.5, 0.5]])
    result = box_metrics(ImageBoxes([2, 2], np.zeros((2, 4)), [False, False], probs, boxes), names, negative_id=2)
    assert result["positives"] == 0 and math.isnan(result["mean_iou"]) and math.isnan(result["ap50"])
    assert result["undefined"]["mean_iou"] == "no image with a true box"
    assert result["undefined"]["per_class/a/ap50"] == "no true box of a"
    _assert_every_nan_has_a_reason(result)


def test_box_metrics_with_positives_keep_both_parts_reasons():
    names = ["a", "b", "no finding"]
    true_boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0, 0, 0, 0]])
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.1, 0.8]])
    pred = np.array([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.3, 0.3]])
    result = box_metrics(ImageBoxes([0, 2], true_boxes, [True, False], probs, pred), names, negative_id=2)
    assert result["mean_iou"] == pytest.approx(1.0) and result["iou_at_least_0_5"] == 1.0
    assert set(result["undefined"]) == {"per_class/b/ap50", "per_class/b/ap50_95"}
    _assert_every_nan_has_a_reason(result)
