"""The epoch-end commit on its own: early stopping resumes with its counter, a non-finite
epoch is never committed, a weights file is current only once state.json names it, and a
weight average resumes exactly."""

import json

import keras
import numpy as np
import pytest

from fracture.runs import RunLayout
from fracture.training.callbacks import WeightAverage
from fracture.training.resume import EpochCheckpoint, Monitor, Publisher, RunState


def _model(lr=0.0, ema_momentum=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    ema = {"use_ema": True, "ema_momentum": ema_momentum} if ema_momentum else {}
    model.compile(optimizer=keras.optimizers.SGD(lr, **ema), loss="mse")
    return model


class Crash(keras.callbacks.Callback):
    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


def _fit(model, state_dir, state, layout, extra=(), scale=1.0, epochs=10, extra_first=()):
    checkpoint = EpochCheckpoint(state_dir, state, ("only", 0), Monitor("loss", "min", patience=3), Publisher(layout, model))
    x = np.ones((8, 3), "float32") * scale
    callbacks = [*extra_first, checkpoint, *extra]
    history = model.fit(x, np.ones((8, 1), "float32"), epochs=epochs, batch_size=4, verbose=0, callbacks=callbacks)
    return history


def test_early_stopping_stops_at_the_same_epoch_after_a_resume(tmp_path):
    # lr 0: the loss never improves after epoch 1, so patience 3 stops after epoch 4
    whole = tmp_path / "whole"
    _fit(_model(), whole / "state", RunState(), RunLayout(whole / "run"))
    uninterrupted = [row["epoch"] for row in RunState.load(whole / "state").history]
    assert uninterrupted == [0, 1, 2, 3]

    state_dir, layout = tmp_path / "state", RunLayout(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        _fit(_model(), state_dir, RunState(), layout, extra=[Crash(2)])
    assert RunState.load(state_dir).wait == 1  # the counter is part of the committed state
    _fit(_model(), state_dir, RunState.load(state_dir), layout)
    assert [row["epoch"] for row in RunState.load(state_dir).history] == uninterrupted
    assert layout.history.read_text().count("\n") == len(uninterrupted) + 1


def test_a_non_finite_epoch_is_never_committed(tmp_path):
    state_dir = tmp_path / "state"
    _fit(_model(1e-2), state_dir, RunState(), RunLayout(tmp_path / "run"), scale=np.inf, epochs=1)
    assert not (state_dir / "state.json").exists() and not list(state_dir.glob("*.weights.h5"))


def test_only_weights_named_by_the_state_are_kept(tmp_path):
    state_dir = tmp_path / "state"
    _fit(_model(1e-2), state_dir, RunState(), RunLayout(tmp_path / "run"), epochs=3)
    state = json.loads((state_dir / "state.json").read_text())
    kept = sorted(p.name for p in state_dir.glob("*.weights.h5"))
    assert kept == sorted({state["weights"], state["phase_best_weights"]})
    assert state["epoch"] == 3 and state["published"] == 3


class CrashAtTrainEnd(keras.callbacks.Callback):
    """Killed after the last epoch's commit, before the phase is marked done."""

    def on_train_end(self, logs=None):
        raise KeyboardInterrupt


@pytest.mark.parametrize("crash", ["at_epoch_3", "after_the_last_commit"])
def test_a_resumed_phase_continues_the_weight_average_exactly(tmp_path, crash):
    # the committed epoch holds the average in the model and the raw weights in the
    # optimizer's slots: a resumed epoch must swap them back, as an uninterrupted one does,
    # and a resume with no epoch left must keep the average (not Keras's end-of-fit copy)
    def weights(model):
        return np.concatenate([np.ravel(v.numpy()) for v in model.trainable_variables])

    whole, layout = _model(0.05, 0.5), RunLayout(tmp_path / "whole_run")
    _fit(whole, tmp_path / "whole", RunState(), layout, extra_first=[WeightAverage(0)], epochs=4)
    uninterrupted = RunState.load(tmp_path / "whole").history

    state_dir, layout = tmp_path / "state", RunLayout(tmp_path / "run")
    crasher = Crash(2) if crash == "at_epoch_3" else CrashAtTrainEnd()
    with pytest.raises(KeyboardInterrupt):
        _fit(_model(0.05, 0.5), state_dir, RunState(), layout, extra=[crasher], extra_first=[WeightAverage(0)], epochs=4)
    assert RunState.load(state_dir).epoch == (2 if crash == "at_epoch_3" else 4)
    resumed = _model(0.05, 0.5)
    _fit(resumed, state_dir, RunState.load(state_dir), layout, extra_first=[WeightAverage(0)], epochs=4)
    np.testing.assert_allclose(weights(resumed), weights(whole), rtol=1e-6)
    assert [r["loss"] for r in RunState.load(state_dir).history] == pytest.approx([r["loss"] for r in uninterrupted])
    plain = _model(0.05)
    _fit(plain, tmp_path / "plain", RunState(), RunLayout(tmp_path / "plain_run"), epochs=4)
    assert np.abs(weights(plain) - weights(whole)).max() > 1e-4  # the average is not the raw weights
