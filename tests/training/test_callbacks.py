"""Callbacks that decide when training stops: the time budget and the NaN guard."""

import time

import keras
import numpy as np

from fracture.training.callbacks import NaNGuard, TimeBudget


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
