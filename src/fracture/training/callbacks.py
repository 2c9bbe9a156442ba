"""Callbacks (`conf/callbacks/`): checkpoints, resume, logging, early stopping, NaN guard.

`build_callbacks` assembles one phase's list. Checkpoints, history and early stopping are
one callback, `fracture.training.resume.EpochCheckpoint`, so that they commit together.
The best/last checkpoints and the TensorBoard image panel always use the *end-to-end*
model, also in the phase that trains the heads alone on cached features.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import keras
import numpy as np

from fracture.training.optim import current_learning_rate
from fracture.training.resume import EpochCheckpoint, Monitor, Publisher

if TYPE_CHECKING:
    from fracture.training.trainer import Phase, Session

log = logging.getLogger(__name__)


@dataclass
class CallbacksConfig:
    """The `callbacks` config group (documented in conf/callbacks/default.yaml)."""

    monitor: str = "val_loss"
    mode: str = "min"
    early_stopping: dict = field(default_factory=lambda: {"enabled": True, "patience": 8, "min_delta": 0.0})
    tensorboard: dict = field(default_factory=lambda: {"enabled": True, "images": 4})
    terminate_on_nan: bool = True
    progress: str | int = "auto"


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current rate to the epoch logs (so CSV and TensorBoard get it)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.model.optimizer is not None:
            logs["learning_rate"] = current_learning_rate(self.model.optimizer)


class TimeBudget(keras.callbacks.Callback):
    """Stops after the epoch that would otherwise let the next one overrun `deadline`.

    Args:
        deadline: `time.monotonic()` value by which training should be done.
    """

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline
        self.stopped = False

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        if now + (now - self._start) > self.deadline:
            print(f"\nTime budget: stopping after epoch {epoch + 1} (the next epoch would overrun trainer.max_minutes).")
            self.stopped = True
            self.model.stop_training = True


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss, saying why and what to try."""

    def __init__(self):
        super().__init__()
        self.tripped_at: str | None = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.tripped_at = f"epoch {self._epoch + 1}, batch {batch + 1}"
            log.error(
                "Loss became %s at %s; training stopped. Usual causes: a learning rate too high "
                "(lower model.optimizer.learning_rate), float16 overflow (try trainer.precision=float32), "
                "or bad targets (run scripts/inspect_data.py).",
                loss,
                self.tripped_at,
            )
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch


class BoxImageLogger(keras.callbacks.Callback):
    """Each epoch, writes a few validation images to TensorBoard: true box green, predicted red.

    Args:
        model: the end-to-end model.
        images: float `(N, S, S, 3)` raw 0-255 validation images.
        boxes: their true normalized xyxy boxes (all-zero for "no finding").
        class_ids: their true class ids.
        class_names: for the caption.
        log_dir: TensorBoard folder (written under `val_images/`).
    """

    def __init__(self, model, images, boxes, class_ids, class_names: Sequence[str], log_dir: Path):
        super().__init__()
        import tensorflow as tf

        self.target = model
        self.images = np.asarray(images, np.float32)
        self.boxes = np.asarray(boxes, np.float32)
        self.class_ids = list(class_ids)
        self.class_names = list(class_names)
        self.writer = tf.summary.create_file_writer(str(Path(log_dir) / "val_images"))

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        outputs = self.target(self.images, training=False)
        probs, pred_boxes = np.asarray(outputs["class"]), np.asarray(outputs["box"])
        yxyx = lambda b: b[:, [1, 0, 3, 2]]  # noqa: E731 - tf.image draws y1, x1, y2, x2
        boxes = np.stack([yxyx(self.boxes), yxyx(pred_boxes)], axis=1)
        colors = np.array([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0]], np.float32)
        drawn = tf.image.draw_bounding_boxes(self.images / 255.0, boxes, colors)
        captions = [
            f"{i}: true {self.class_names[t]} | predicted {self.class_names[int(p.argmax())]} ({p.max():.2f})"
            for i, (t, p) in enumerate(zip(self.class_ids, probs))
        ]
        with self.writer.as_default():
            tf.summary.image("val/true_green_predicted_red", drawn, step=epoch, max_outputs=len(drawn))
            tf.summary.text("val/classes", "\n\n".join(captions), step=epoch)
        self.writer.flush()


class AugmentationDrops(keras.callbacks.Callback):
    """Puts the boxes that train-time augmentation dropped this epoch (moved out of the image,
    or cut to a sliver) into the epoch's logs, so history.csv and TensorBoard say it.

    The pipeline prefetches ahead, so an epoch's count can include a few batches of the next.
    """

    def __init__(self, augmenter):
        super().__init__()
        self.augmenter = augmenter
        self.dropped, self.seen = augmenter.dropped_boxes, augmenter.augmented_boxes

    def on_epoch_end(self, epoch, logs=None):
        dropped, seen = self.augmenter.dropped_boxes, self.augmenter.augmented_boxes
        if logs is not None:
            logs["augment_dropped_boxes"] = float(dropped - self.dropped)
            logs["augment_boxes"] = float(seen - self.seen)
        self.dropped, self.seen = dropped, seen


def build_callbacks(phase: "Phase", session: "Session", fit_model: keras.Model, augmenter=None) -> tuple[list, NaNGuard]:
    """One phase's callbacks, in the order they must run at an epoch's end: the learning
    rate and the augmentation drops are logged before the checkpoint commits the epoch's row."""
    cfg: CallbacksConfig = session.settings.callbacks
    opt_cfg = session.settings.optimizer
    layout, fm = session.layout, session.fm
    nan_guard = NaNGuard()
    callbacks: list = [LearningRateLogger()]
    if augmenter is not None and session.data.multi_object_rule == "all":
        callbacks.append(AugmentationDrops(augmenter))
    if cfg.terminate_on_nan:
        callbacks.append(nan_guard)
    if opt_cfg.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                cfg.monitor, factor=opt_cfg.plateau_factor, patience=opt_cfg.plateau_patience,
                mode=cfg.mode, min_lr=opt_cfg.min_learning_rate,
            )
        )
    es = cfg.early_stopping
    monitor = Monitor(
        cfg.monitor, cfg.mode, int(es.get("patience", 8)) if es.get("enabled", True) else None, float(es.get("min_delta", 0.0))
    )
    callbacks.append(
        EpochCheckpoint(session.claim.state_dir, session.state, (phase.name, phase.start), monitor, Publisher(layout, fm.model))
    )
    tb = cfg.tensorboard
    if tb.get("enabled", True):
        callbacks.append(keras.callbacks.TensorBoard(str(layout.tensorboard), write_graph=False, update_freq="epoch"))
        n = int(tb.get("images", 4)) if "box" in fm.model.output else 0  # the dense detector: no panel yet
        if n:
            images, boxes, ids = _panel(session.val_samples, n, session.classes.num_classes, session.data)
            callbacks.append(BoxImageLogger(fm.model, images, boxes, ids, session.classes.class_names, layout.tensorboard))
    if session.tracker is not None:  # logger=wandb: beside TensorBoard, not instead of it
        callbacks.append(session.tracker.callback())
    if session.deadline is not None:
        callbacks.append(TimeBudget(session.deadline))
    return callbacks, nan_guard


def _panel(val_samples, n, num_classes, data_cfg):
    """The first `n` validation images with a box (then negatives), for the TensorBoard panel."""
    from fracture.inference import load_samples_batch

    chosen = [s for s in val_samples if s.has_box][:n]
    chosen += [s for s in val_samples if not s.has_box][: n - len(chosen)]
    images, boxes = load_samples_batch(chosen, num_classes, data_cfg)
    return images, boxes, [s.class_id for s in chosen]
