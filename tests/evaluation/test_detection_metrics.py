"""Detection metrics on hand-made cases whose answers are known, and our AP50 against
pycocotools' on a random case (the bootstrap relies on it)."""

import json
import math

import numpy as np
import pytest

from fracture.evaluation.detection import (
    DetectionEvalSettings,
    ImageEval,
    ap_of,
    coco_map,
    detection_metrics,
    froc,
    matches,
)

NAMES = ["a", "b", "no finding"]
FAST = DetectionEvalSettings(bootstrap=200, seed=1)


def image(true_boxes=(), true_classes=(), boxes=(), scores=(), classes=(), size=100):
    return ImageEval(size, size, np.array(true_boxes, float).reshape(-1, 4), np.array(true_classes, int),
                     np.array(boxes, float).reshape(-1, 4), np.array(scores, float), np.array(classes, int))


BOX1, BOX2, FAR = [10, 10, 40, 40], [50, 50, 90, 90], [0, 60, 20, 80]


def test_a_perfect_detector_scores_one_everywhere():
    images = [image([BOX1], [0], [BOX1], [0.9], [0]), image([BOX2], [1], [BOX2], [0.8], [1]), image()]
    d = detection_metrics(images, NAMES, negative_id=2, settings=FAST)
    assert d["map50"] == pytest.approx(1.0) and d["map50_95"] == pytest.approx(1.0)
    assert d["one_class_ap50"] == pytest.approx(1.0)
    assert d["froc"]["0.125"] == 1.0 and d["sens_at_1fp"] == 1.0
    assert d["per_class"]["a"] == {"ap50": pytest.approx(1.0), "n_boxes": 1, "ci": [1.0, 1.0]}


def test_a_known_ranking_gives_the_101_point_value():
    # ranked TP (0.9), FP (0.8), TP (0.7) over 2 true boxes of class a:
    # recall 0.5 at precision 1, recall 1 at precision 2/3 -> 51 points at 1, 50 at 2/3
    images = [image([BOX1], [0], [BOX1, FAR], [0.9, 0.8], [0, 0]), image([BOX2], [0], [BOX2], [0.7], [0])]
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    assert ap_of(matches(images, 0)) == pytest.approx(expected)
    map50, _, per_class = coco_map(images, [0, 1])
    assert per_class[0] == pytest.approx(expected) and math.isnan(per_class[1]) and map50 == pytest.approx(expected)


def test_our_ap50_equals_pycocotools_on_a_random_case():
    rng = np.random.default_rng(0)
    images = []
    for _ in range(30):
        m = rng.integers(0, 4)
        xy = rng.uniform(0, 70, (m, 2))
        true = np.concatenate([xy, xy + rng.uniform(8, 30, (m, 2))], axis=1)
        jitter = np.concatenate([true + rng.normal(0, 4, true.shape), rng.uniform(0, 90, (5, 4))])
        det = np.concatenate([np.minimum(jitter[:, :2], jitter[:, 2:]), np.maximum(jitter[:, :2], jitter[:, 2:]) + 1], axis=1)
        images.append(image(true, rng.integers(0, 2, m), det, rng.uniform(0, 1, len(det)), rng.integers(0, 2, len(det))))
    _, _, per_class = coco_map(images, [0, 1])
    for c in (0, 1):
        assert ap_of(matches(images, c)) == pytest.approx(per_class[c], abs=1e-9)


def test_froc_counts_false_positives_per_image_over_negatives_too():
    # 2 true boxes on 4 images; detections ranked: TP 0.9, FP 0.8 (negative image), FP 0.7, TP 0.6
    images = [image([BOX1], [0], [BOX1], [0.9], [0]), image([], [], [BOX1], [0.8], [0]),
              image([], [], [BOX2], [0.7], [1]), image([BOX2], [1], [BOX2], [0.6], [1])]
    rates = froc(matches(images, None))
    assert rates[0.125] == 0.5  # 0 FP so far: 1 of 2 found
    assert rates[0.25] == 0.5   # 1 FP / 4 images = 0.25: still 1 of 2
    assert rates[0.5] == 1.0    # 2 FP / 4 images = 0.5, then the second TP


def test_the_class_of_a_box_does_not_matter_for_one_class_ap():
    images = [image([BOX1], [0], [BOX1], [0.9], [1])]  # right place, wrong fracture class
    d = detection_metrics(images, NAMES, negative_id=2, settings=FAST)
    assert d["one_class_ap50"] == pytest.approx(1.0) and d["per_class"]["a"]["ap50"] == 0.0


def test_no_true_box_is_undefined_with_reasons_and_strict_json():
    from fracture.evaluation.runner import _finite

    d = detection_metrics([image([], [], [BOX1], [0.5], [0])], NAMES, negative_id=2, settings=FAST)
    assert math.isnan(d["map50"]) and math.isnan(d["one_class_ap50"]) and math.isnan(d["sens_at_1fp"])
    assert d["undefined"]["map50"] and d["undefined"]["per_class/a/ap50"] == "no true box of a"
    text = json.dumps(_finite(d), allow_nan=False)
    assert json.loads(text)["map50"] is None


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(3)
    images = [image([BOX1], [0], [BOX1 if rng.uniform() < 0.6 else FAR], [rng.uniform()], [0]) for _ in range(40)]
    a = detection_metrics(images, NAMES, 2, FAST)
    b = detection_metrics(images, NAMES, 2, FAST)
    lo, hi = a["one_class_ap50_ci"]
    assert a["one_class_ap50_ci"] == b["one_class_ap50_ci"] and lo <= a["one_class_ap50"] <= hi and hi - lo > 0.05
    assert set(a) >= {"map50", "map50_95", "per_class", "one_class_ap50", "one_class_ap50_ci", "froc", "sens_at_1fp",
                      "sens_at_1fp_ci", "conventions", "undefined"}


@pytest.mark.parametrize("flip", [False, True])
def test_the_map_row_of_the_headline_says_when_flip_test_time_augmentation_made_it(flip):
    from dataclasses import replace

    from fracture.evaluation.report import detection_rows

    images = [image([BOX1], [0], [BOX1], [0.9], [0])]
    d = detection_metrics(images, NAMES, 2, replace(FAST, test_time_flip=flip))
    label = detection_rows(d)[0][0]
    assert label.startswith("detection mAP50 / mAP50-95") and ("flip test-time augmentation" in label) is flip
