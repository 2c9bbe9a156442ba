"""Callbacks that decide when training stops (the time budget, the NaN guard) and the
detector's per-epoch valid mAP that can pick best.keras."""

import time

import keras
import numpy as np

from fracture.training.callbacks import NaNGuard, TimeBudget, ValidationDetectionMAP


def _fit(callbacks, epochs=5, scale=1.0):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1e-2), loss="mse")
    x = np.ones((8, 3), "float32") * scale
    return model.fit(x, np.ones((8, 1), "float32"), epochs=epochs, batch_size=4, verbose=0, callbacks=callbacks)


def test_time_budget_stops_before_an_epoch_would_overrun():
    budget = TimeBudget(deadline=time.monotonic() + 3600)
    assert len(_fit([budget]).epoch) == 5 and not budget.stopped
    spent = TimeBudget(deadline=time.monotonic())
    assert len(_fit([spent]).epoch) == 1 and spent.stopped


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
        self.num_classes, self.predicted = num_classes, predicted  # per image: [(box, class)]

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
