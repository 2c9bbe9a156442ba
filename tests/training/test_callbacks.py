"""Callbacks that decide when training stops (the time budget, the NaN guard), the
detector's per-epoch valid mAP that can pick best.keras, and the weight average it scores."""

import time

import keras
import numpy as np
import pytest

from fracture.models.schedules import WarmupCosine
from fracture.training.callbacks import NaNGuard, TimeBudget, ValidationDetectionMAP, WeightAverage
from fracture.training.optim import OptimizerConfig, build_optimizer, current_learning_rate


def _fit(callbacks, epochs=5, scale=1.0, learning_rate=1e-2):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    x = np.ones((8, 3), "float32") * scale
    return model.fit(x, np.ones((8, 1), "float32"), epochs=epochs, batch_size=4, verbose=0, callbacks=callbacks)


def test_time_budget_stops_before_an_epoch_would_overrun():
    budget = TimeBudget(deadline=time.monotonic() + 3600)
    assert len(_fit([budget]).epoch) == 5 and not budget.stopped
    spent = TimeBudget(deadline=time.monotonic())
    assert len(_fit([spent]).epoch) == 1 and spent.stopped


class _RateLog(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(current_learning_rate(self.model.optimizer))


class _EpochClock(keras.callbacks.Callback):
    """A fake clock on which every epoch lasts `seconds` (runs before TimeBudget reads it)."""

    def __init__(self, seconds):
        super().__init__()
        self.now, self.seconds = 0.0, seconds

    def __call__(self):
        return self.now

    def on_epoch_end(self, epoch, logs=None):
        self.now += self.seconds


def test_time_budget_fits_a_cosine_schedule_to_the_epochs_that_fit():
    # 10 planned epochs of 2 steps, 10 s each, 45 s of budget: 4 epochs fit
    clock = _EpochClock(10.0)
    schedule = WarmupCosine(peak=1e-2, total_steps=20, warmup_steps=2, floor=0.0)
    rates, budget = _RateLog(), TimeBudget(deadline=45.0, clock=clock)
    history = _fit([clock, budget, rates], epochs=10, learning_rate=schedule)
    assert len(history.epoch) == 4 and budget.stopped
    assert budget.shortened_to_epochs == 4 and schedule.total_steps == 8
    # the last step (7 of 8) is near the floor; the 10-epoch plan was still near its peak there
    assert rates.rates[-1] < 0.1 * 1e-2, rates.rates
    assert float(WarmupCosine(peak=1e-2, total_steps=20, warmup_steps=2, floor=0.0)(7)) > 0.8 * 1e-2


def test_time_budget_leaves_a_schedule_alone_when_every_epoch_fits():
    schedule = WarmupCosine(peak=1e-2, total_steps=10, warmup_steps=2, floor=0.0)
    budget = TimeBudget(deadline=time.monotonic() + 3600)
    _fit([budget], epochs=5, learning_rate=schedule)
    assert budget.shortened_to_epochs is None and schedule.total_steps == 10


def test_nan_guard_stops_at_the_first_non_finite_loss():
    guard = NaNGuard()
    history = _fit([guard], scale=np.inf)
    assert guard.tripped_at == "epoch 1, batch 1" and len(history.epoch) == 1


class _DenseStub:
    """Stands in for the detector: `predict_on_batch` returns hand-made dense outputs in
    which one location per finding predicts its box, its class and its class logit; every
    other class and location is far below the 0.001 decoding confidence."""

    def __init__(self, image_size, strides, num_classes, predicted):
        from fracture.models.detection.anchors import anchor_points

        self.points = anchor_points(image_size, strides).points
        self.num_classes, self.predicted = num_classes, predicted  # per image: [(box, class, class logit)]

    def predict_on_batch(self, x):
        dense = np.full((len(self.predicted), len(self.points), 5 + self.num_classes), -30.0, "float32")
        for i, findings in enumerate(self.predicted):
            for box, cls, logit in findings:
                box = np.asarray(box, "float32")
                centre = (box[:2] + box[2:]) / 2
                j = int(np.argmin(((self.points - centre) ** 2).sum(-1)))
                dense[i, j, :4] = np.concatenate([self.points[j] - box[:2], box[2:] - self.points[j]])
                dense[i, j, 4], dense[i, j, 5 + cls] = 10.0, logit
        return {"detections": dense}


def _map_logs(predicted):
    from fracture.models.detection.config import DecodeConfig

    rows = np.full((2, 4, 5), -1.0, "float32")  # two images, padded to 4 boxes
    rows[0, 0] = [0.1, 0.1, 0.4, 0.5, 0]
    rows[1, 0] = [0.5, 0.4, 0.9, 0.8, 1]
    rows[1, 1] = [0.1, 0.6, 0.3, 0.9, 1]
    val = [(np.zeros((2, 64, 64, 3), "float32"), {"detections": rows})]
    # classes 0 and 1 have boxes; 2 is "no finding", never a detection class
    callback = ValidationDetectionMAP(_DenseStub(64, (8, 16, 32), 3, predicted), val, 64, (8, 16, 32), [0, 1], DecodeConfig(), 2)
    logs = {}
    callback.on_epoch_end(0, logs)
    return logs


def test_validation_map_is_one_for_exact_boxes_and_counts_a_wrong_class_as_a_miss():
    truth = [[([0.1, 0.1, 0.4, 0.5], 0, 10.0)], [([0.5, 0.4, 0.9, 0.8], 1, 10.0), ([0.1, 0.6, 0.3, 0.9], 1, 10.0)]]
    logs = _map_logs(truth)
    assert set(logs) == {"val_map50", "val_map50_95"}
    assert abs(logs["val_map50"] - 1.0) < 1e-6 and abs(logs["val_map50_95"] - 1.0) < 1e-6
    wrong_class = [[([0.1, 0.1, 0.4, 0.5], 1, 2.0)], truth[1]]  # class 0's only box called class 1
    logs = _map_logs(wrong_class)
    assert abs(logs["val_map50"] - 0.5) < 1e-6  # class 0: AP 0; class 1: AP 1 (its extra FP ranks last)
    one_missed = [truth[0], truth[1][:1]]
    assert abs(_map_logs(one_missed)["val_map50"] - (1.0 + 0.5) / 2) < 0.01  # class 1: recall 1/2


def _flat_weights(model):
    return np.concatenate([np.ravel(v.numpy()) for v in model.trainable_variables])


class _WeightsSeen(keras.callbacks.Callback):
    """The model's weights after every step, and at each epoch's end (placed after WeightAverage)."""

    def __init__(self):
        super().__init__()
        self.steps, self.epoch_ends = [], []

    def _weights(self):
        return _flat_weights(self.model)

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(self._weights())

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append(self._weights())


def _fit_averaged(ema_momentum, seen, score_raw=None, epochs=3):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    cfg = OptimizerConfig(schedule="constant", clipnorm=None, weight_decay=0.0, ema_momentum=ema_momentum)
    model.compile(optimizer=build_optimizer(cfg, 0.1, 2, epochs, 4), loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")
    averaging = [WeightAverage(0, score_raw)] if ema_momentum is not None else []
    history = model.fit(x, y, validation_data=(x, y), epochs=epochs, batch_size=4, shuffle=False, verbose=0,
                        callbacks=[*averaging, seen])
    return _flat_weights(model), history.history, (x, y)


def test_weight_average_is_validated_and_kept_while_training_goes_on_from_the_raw_weights():
    momentum, averaged, plain, raw_seen = 0.5, _WeightsSeen(), _WeightsSeen(), []

    def score_raw():  # what callbacks.raw_weights_map scores: the raw weights, before the swap
        raw_seen.append(averaged._weights())
        return {"val_raw_probe": float(len(raw_seen))}

    final, logs, (x, y) = _fit_averaged(momentum, averaged, score_raw)
    _fit_averaged(None, plain)
    # the swaps at the epoch boundaries leave the training itself untouched
    np.testing.assert_allclose(np.stack(averaged.steps), np.stack(plain.steps), rtol=1e-6, atol=1e-7)
    expected, average = [], None
    for step, raw in enumerate(plain.steps, 1):  # Keras's rule: the first step's weights, then the EMA
        average = raw if average is None else momentum * average + (1 - momentum) * raw
        if step % 2 == 0:  # 2 steps per epoch
            expected.append(average)
    np.testing.assert_allclose(np.stack(averaged.epoch_ends), np.stack(expected), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final, expected[-1], rtol=1e-5, atol=1e-6)  # fit's finalize does not undo it
    assert np.abs(expected[-1] - plain.steps[-1]).max() > 1e-3  # the average is not the raw weights
    # Keras's validation scores the average; score_raw saw the raw weights, and its figures are logged
    kernel_bias = [(w[:6].reshape(3, 2), w[6:]) for w in expected]
    val_loss = [float(np.mean((x @ k + b - y) ** 2)) for k, b in kernel_bias]
    np.testing.assert_allclose(logs["val_loss"], val_loss, rtol=1e-4)
    np.testing.assert_allclose(np.stack(raw_seen), np.stack(plain.steps)[1::2], rtol=1e-6, atol=1e-7)
    assert logs["val_raw_probe"] == [1.0, 2.0, 3.0]


def test_weight_average_needs_an_averaging_optimizer():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    with pytest.raises(ValueError, match="use_ema=True"):  # before any step
        model.fit(np.ones((4, 3)), np.ones((4, 1)), epochs=1, verbose=0, callbacks=[WeightAverage(0)])
