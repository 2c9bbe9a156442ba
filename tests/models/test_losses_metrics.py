"""Losses, class weights, box geometry, the box IoU metric and the LR schedule, on hand-sized inputs."""

import keras
import numpy as np
import pytest

from fracture.models.box_ops import ciou, giou, iou
from fracture.models.losses import (
    BoxLoss,
    ClassificationLoss,
    ClassWeightConfig,
    class_counts,
    compute_class_weights,
)
from fracture.models.metrics import BoxMeanIoU
from fracture.models.schedules import WarmupCosine

A = np.array([[0.0, 0.0, 0.5, 0.5]], np.float32)
B = np.array([[0.25, 0.25, 0.75, 0.75]], np.float32)
FAR = np.array([[0.6, 0.6, 0.8, 0.8]], np.float32)


def f(x):
    return np.asarray(x, np.float64)


def test_iou_giou_ciou_hand_computed():
    # overlap 0.0625, union 0.4375
    assert f(iou(A, B))[0] == pytest.approx(1 / 7, rel=1e-5)
    # hull 0.5625: giou = 1/7 - (0.5625 - 0.4375) / 0.5625
    assert f(giou(A, B))[0] == pytest.approx(1 / 7 - 0.125 / 0.5625, rel=1e-5)
    # disjoint: iou 0, giou = -(hull - union)/hull with hull 0.64, union 0.29
    assert f(giou(A, FAR))[0] == pytest.approx(-(0.64 - 0.29) / 0.64, rel=1e-5)
    # same aspect ratio: ciou = iou - centre distance^2 / diagonal^2 = 1/7 - 0.125 / 1.125
    assert f(ciou(A, B))[0] == pytest.approx(1 / 7 - 0.125 / 1.125, rel=1e-4)
    for fn in (iou, giou, ciou):
        assert f(fn(A, A))[0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kind", ["giou", "ciou"])
def test_masked_box_loss_ignores_negatives(kind):
    loss = BoxLoss(kind)
    y_true = np.concatenate([A, np.zeros((1, 4), np.float32)])
    mask = np.array([1.0, 0.0], np.float32)
    with_negative = lambda neg_pred: float(loss(y_true, np.concatenate([B, neg_pred]), sample_weight=mask))  # noqa: E731
    a, b = with_negative(np.zeros((1, 4), np.float32)), with_negative(FAR)
    assert a == pytest.approx(b)  # whatever the model predicts for a negative, no loss
    positive_only = float(loss(A, B))
    assert a == pytest.approx(positive_only / 2)  # sum over the batch / batch size
    grads_from_negative = np.abs(_grad(loss, y_true, mask)[1]).sum()
    assert grads_from_negative == 0.0


def _grad(loss, y_true, mask):
    import tensorflow as tf

    pred = tf.Variable(np.concatenate([B, FAR]))
    with tf.GradientTape() as tape:
        value = loss(y_true, pred, sample_weight=mask)
    return tape.gradient(value, pred).numpy()


def test_class_weights_scale_each_images_loss():
    loss = ClassificationLoss("ce")
    y_true = np.eye(3, dtype=np.float32)[[0, 1]]
    y_pred = np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]], np.float32)
    per_image = -np.log([0.7, 0.3])
    assert float(loss(y_true, y_pred)) == pytest.approx(per_image.mean(), rel=1e-5)
    weighted = float(loss(y_true, y_pred, sample_weight=np.array([3.0, 1.0], np.float32)))
    assert weighted == pytest.approx((3 * per_image[0] + per_image[1]) / 2, rel=1e-5)


def test_focal_is_smaller_on_easy_examples_and_hybrid_mixes():
    y_true = np.eye(2, dtype=np.float32)[[0]]
    easy = np.array([[0.95, 0.05]], np.float32)
    ce, focal = ClassificationLoss("ce")(y_true, easy), ClassificationLoss("focal", focal_alpha=1.0)(y_true, easy)
    assert float(focal) == pytest.approx(float(ce) * 0.05**2, rel=1e-4)
    hybrid = ClassificationLoss("hybrid", focal_alpha=1.0, hybrid_focal_weight=0.25)(y_true, easy)
    assert float(hybrid) == pytest.approx(0.75 * float(ce) + 0.25 * float(focal), rel=1e-5)
    smoothed = ClassificationLoss("ce", label_smoothing=0.1)(y_true, easy)
    assert float(smoothed) > float(ce)


def test_balanced_class_weights_with_multipliers_and_cap():
    names = ["a", "b", "none", "empty"]
    counts = class_counts([0] * 10 + [1] * 30 + [2] * 60, 4)
    assert counts.tolist() == [10, 30, 60, 0]
    w = compute_class_weights(counts, names, ClassWeightConfig())
    np.testing.assert_allclose(w, [100 / 30, 100 / 90, 100 / 180, 1.0], rtol=1e-6)
    assert (w[:3] * counts[:3]).std() < 1e-4  # each present class contributes equally
    w = compute_class_weights(counts, names, ClassWeightConfig(multipliers={"a": 2.0}, max_weight=5.0))
    assert w[0] == pytest.approx(5.0) and w[1] == pytest.approx(100 / 90, rel=1e-6)
    assert compute_class_weights(counts, names, ClassWeightConfig(mode="none")).tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="unknown classes"):
        compute_class_weights(counts, names, ClassWeightConfig(multipliers={"elbow": 2.0}))


def test_box_mean_iou_averages_positives_only():
    metric = BoxMeanIoU()
    y_true = np.concatenate([A, B, np.zeros((1, 4), np.float32)])
    y_pred = np.concatenate([A, A, FAR])
    metric.update_state(y_true, y_pred, sample_weight=np.array([1.0, 1.0, 0.0], np.float32))
    assert float(metric.result()) == pytest.approx((1.0 + 1 / 7) / 2, rel=1e-5)


def test_warmup_cosine_schedule_shape_and_config_roundtrip():
    schedule = WarmupCosine(peak=1e-3, total_steps=100, warmup_steps=10, floor=1e-5)
    rates = [float(schedule(s)) for s in (0, 4, 9, 10, 55, 99, 500)]
    assert rates[0] == pytest.approx(1e-4) and rates[1] == pytest.approx(5e-4) and rates[2] == pytest.approx(1e-3)
    assert rates[3] == pytest.approx(1e-3)
    assert rates[4] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5), rel=1e-3)
    assert rates[5] == pytest.approx(1e-5, rel=0.05) and rates[6] == pytest.approx(1e-5)
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert float(clone(37)) == pytest.approx(float(schedule(37)))


def test_warmup_cosine_shortened_ends_at_its_floor_by_the_new_end_and_never_lengthens():
    schedule = WarmupCosine(peak=1e-3, total_steps=100, warmup_steps=10, floor=1e-5)
    assert not schedule.shorten_to(200) and schedule.total_steps == 100
    assert schedule.shorten_to(40)
    assert float(schedule(25)) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5), rel=1e-3)  # halfway from 10 to 40
    assert float(schedule(40)) == pytest.approx(1e-5) and float(schedule(60)) == pytest.approx(1e-5)
    assert float(schedule(5)) == pytest.approx(6e-4)  # warm-up untouched
    assert schedule.shorten_to(3) and schedule.total_steps == 11  # never ends inside the warm-up
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert clone.total_steps == 11 and float(clone(10)) == pytest.approx(float(schedule(10)))
