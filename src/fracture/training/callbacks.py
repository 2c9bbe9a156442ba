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

from fracture.models.schedules import WarmupCosine
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
    detection_map: bool = True
    raw_weights_map: bool = False


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current rate to the epoch logs (so CSV and TensorBoard get it)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.model.optimizer is not None:
            logs["learning_rate"] = current_learning_rate(self.model.optimizer)


class TimeBudget(keras.callbacks.Callback):
    """Stops after the epoch that would otherwise let the next one overrun `deadline`, and
    fits a cosine schedule to the epochs that remain.

    Each epoch end judges the next epochs by the last one's duration. When fewer than the
    phase's planned epochs fit, a `WarmupCosine` learning rate is shortened (never
    lengthened) to end with the last epoch that fits: on a slower machine the phase then
    still anneals to its floor, instead of stopping halfway down the cosine at a high rate.
    (A resumed phase plans afresh, from the resumed run's own budget.)

    Args:
        deadline: `time.monotonic()` value by which training should be done.
        first_epoch: the phase's first epoch (a resumed phase starts later): the schedule
            counts steps from there.
        clock: seconds, the same clock as `deadline` (tests pass a fake one).
    """

    def __init__(self, deadline: float, first_epoch: int = 0, clock=time.monotonic):
        super().__init__()
        self.deadline, self.first_epoch, self.clock = deadline, first_epoch, clock
        self.stopped = False
        self.shortened_to_epochs: int | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self.clock()

    def on_train_batch_end(self, batch, logs=None):
        self._steps = batch + 1  # counted: a dataset of unknown length leaves params["steps"] None

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        epoch_seconds = now - self._start
        fits = int((self.deadline - now) // epoch_seconds) if epoch_seconds > 0 else 0
        if fits < 1:
            print(f"\nTime budget: stopping after epoch {epoch + 1} (the next epoch would overrun trainer.max_minutes).")
            self.stopped = True
            self.model.stop_training = True
            return
        self._fit_schedule(epoch + 1 + fits)  # past the planned end: shorten_to leaves it

    def _fit_schedule(self, last_epoch: int) -> None:
        # Keras keeps a schedule in the optimizer's (private) `_learning_rate`; `learning_rate` is its value
        schedule = getattr(self.model.optimizer, "_learning_rate", None)
        if not isinstance(schedule, WarmupCosine):
            return
        if schedule.shorten_to((last_epoch - self.first_epoch) * self._steps):
            self.shortened_to_epochs = last_epoch
            print(f"\nTime budget: the learning rate now anneals by epoch {last_epoch} (the epochs that fit).")


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
    """Each epoch, writes a few validation images to TensorBoard: true boxes green, predicted red.

    Args:
        model: the end-to-end model.
        panel: the images, their true boxes and classes (`BoxPanel`).
        predicted: end-to-end model outputs -> `(boxes (N, D, 4) normalized xyxy, captions)`:
            the single box head's one box, or the dense detector's decoded boxes.
        log_dir: TensorBoard folder (written under `val_images/`).
    """

    def __init__(self, model, panel: "BoxPanel", predicted, log_dir: Path):
        super().__init__()
        import tensorflow as tf

        self.target = model
        self.panel = panel
        self.predicted = predicted
        self.writer = tf.summary.create_file_writer(str(Path(log_dir) / "val_images"))

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        panel = self.panel
        pred_boxes, predicted_captions = self.predicted(self.target(panel.images, training=False))
        yxyx = lambda b: b[..., [1, 0, 3, 2]]  # noqa: E731 - tf.image draws y1, x1, y2, x2
        drawn = tf.image.draw_bounding_boxes(panel.images / 255.0, yxyx(panel.true_boxes), GREEN)
        drawn = tf.image.draw_bounding_boxes(drawn, yxyx(np.asarray(pred_boxes, np.float32)), RED)
        captions = [f"{i}: true {truth} | predicted {pred}" for i, (truth, pred) in enumerate(zip(panel.captions, predicted_captions))]
        with self.writer.as_default():
            tf.summary.image("val/true_green_predicted_red", drawn, step=epoch, max_outputs=len(drawn))
            tf.summary.text("val/classes", "\n\n".join(captions), step=epoch)
        self.writer.flush()


GREEN = np.array([[0.0, 1.0, 0.0, 1.0]], np.float32)
RED = np.array([[1.0, 0.0, 0.0, 1.0]], np.float32)
# The detector's panel draws at most this many predicted boxes per image, above this score
# (predict's default confidence): more would hide the image.
PANEL_MAX_BOXES = 10
PANEL_CONFIDENCE = 0.25


@dataclass
class BoxPanel:
    """The TensorBoard panel's fixed validation images.

    Attributes:
        images: float `(N, S, S, 3)` raw 0-255 model inputs.
        true_boxes: `(N, M, 4)` normalized xyxy in the model frame; zero rows draw nothing.
        captions: the true classes, in words, per image.
    """

    images: np.ndarray
    true_boxes: np.ndarray
    captions: list[str]


def single_box_predictions(class_names: Sequence[str]):
    """Outputs of the single box head -> its one box and the image-level class per image."""

    def predicted(outputs):
        probs = np.asarray(outputs["class"])
        captions = [f"{class_names[int(p.argmax())]} ({p.max():.2f})" for p in probs]
        return np.asarray(outputs["box"])[:, None], captions

    return predicted


def dense_predictions(class_names: Sequence[str], image_size: int, strides):
    """Outputs of the dense detector -> its decoded boxes over `PANEL_CONFIDENCE` (at most
    `PANEL_MAX_BOXES`) and, per image, the image-level class and the boxes' classes (the
    detection class ids are `class_names` ids; "no finding" never gets a box)."""
    from fracture.models.detection import decode_detections

    def predicted(outputs):
        boxes, scores, classes, valid = (
            np.asarray(t) for t in decode_detections(outputs["detections"], image_size, strides, PANEL_CONFIDENCE, 0.5, PANEL_MAX_BOXES)
        )
        probs = np.asarray(outputs["class"])
        shown = np.arange(boxes.shape[1])[None, :] < valid[:, None]
        captions = [
            f"{class_names[int(p.argmax())]} ({p.max():.2f}); boxes: "
            + (", ".join(f"{class_names[c]} {s:.2f}" for c, s in zip(classes[i][: valid[i]], scores[i][: valid[i]])) or "none")
            for i, p in enumerate(probs)
        ]
        return np.where(shown[..., None], boxes, 0.0), captions

    return predicted


class ValidationDetectionMAP(keras.callbacks.Callback):
    """Puts the valid split's COCO mAP50 and mAP50-95 into each epoch's logs (`val_map50`,
    `val_map50_95`), so `callbacks.monitor=val_map50` can pick best.keras and stop early on
    the detector's own figure of merit.

    Why: the valid loss is a poor stand-in for it. The joint loss also carries the
    image-level class head's, and the detection loss scores calibration as well as ranking:
    in a bone_fracture_detector run the valid detection loss rose (2.18 -> 2.25) in the
    epoch where mAP50 rose (0.111 -> 0.122).

    The boxes are compared in the model's input frame (normalized xyxy times the input
    size), not the original image's: cheaper, and for letterboxed inputs (a uniform scale
    and a shift) every IoU, so every match, is the same. The decoding is evaluation's
    (`model.detection.decode`: confidence 0.001, NMS IoU 0.7, 300 per image).
    evaluate.py's report remains the figure of record. Choosing the epoch on valid makes
    valid figures a little optimistic; a test split is untouched by it.

    Args:
        model: what `fit` trains: the end-to-end model, or the heads on cached features
            (`val` then holds the cached features: the detections are the same).
        val: the `fit` validation dataset, `(inputs, targets[, weights])` batches whose
            targets hold the padded `detections` rows (xyxy normalized, class, -1 = pad).
        detection_class_ids: the classes that have boxes ("no finding" left out).
        decode: `DecodeConfig`; ignore_class: the "no finding" id (never a box), or None.
        prefix: of the log keys; "val_raw_" names the raw weights' figures, which
            `WeightAverage` gets from `scores` before it swaps the average in.
    """

    def __init__(self, model, val, image_size: int, strides, detection_class_ids, decode, ignore_class=None, prefix="val_"):
        super().__init__()
        self.target, self.val, self.prefix = model, val, prefix
        self.image_size, self.strides = image_size, tuple(strides)
        self.class_ids, self.decode, self.ignore_class = list(detection_class_ids), decode, ignore_class

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.scores())

    def scores(self) -> dict:
        """The valid mAP50 and mAP50-95 of the model's current weights, as log entries."""
        from fracture.evaluation.detection import coco_map

        started = time.perf_counter()
        map50, map50_95, _ = coco_map(self.images(), self.class_ids)
        label = "valid" if self.prefix == "val_" else f"valid ({self.prefix.removeprefix('val_').strip('_')} weights)"
        print(f"\n{label} mAP50 {map50:.4f}, mAP50-95 {map50_95:.4f} ({time.perf_counter() - started:.0f} s)")
        return {f"{self.prefix}map50": map50, f"{self.prefix}map50_95": map50_95}

    def images(self) -> list:
        """The valid split's truth and decoded detections, per image, in input pixels."""
        from fracture.evaluation.detection import ImageEval
        from fracture.models.detection import decode_detections

        size, images = self.image_size, []
        for batch in self.val:
            rows = np.asarray(batch[1]["detections"])
            dense = self.target.predict_on_batch(batch[0])["detections"]
            boxes, scores, classes, valid = (np.asarray(t) for t in decode_detections(
                dense, size, self.strides, self.decode.confidence, self.decode.iou, self.decode.max_detections, self.ignore_class
            ))
            for i, image_rows in enumerate(rows):
                real = image_rows[:, 4] >= 0
                n = int(valid[i])
                images.append(ImageEval(size, size, image_rows[real, :4] * size, image_rows[real, 4].astype(int),
                                        boxes[i, :n] * size, scores[i, :n], classes[i, :n]))
        return images


class WeightAverage(keras.callbacks.Callback):
    """Scores and keeps the optimizer's moving average of the trainable weights
    (`model.optimizer.ema_momentum`) instead of the raw weights: the epoch's validation
    (Keras's `val_*` metrics and the detector's `val_map50`), the committed epoch, best.keras
    and the phase's final weights are the average; the next epoch trains on from the raw
    weights.

    Why: CPU batches are small (16), and an epoch ends on whatever its last noisy steps left;
    an average over the last hundred or so steps (0.99 per step) is the detectors' usual
    remedy (YOLO, timm).

    How: a swap, not a copy. When the epoch's validation begins (at the epoch's end without
    validation data) the average and the raw weights trade places between the model's
    variables and the optimizer's average slots, so a committed epoch file (model weights
    and optimizer state) holds both. Every epoch of a phase after its first starts by
    swapping back, the same whether the previous epoch ran in this process or was loaded by
    a resume. Keras's `fit` ends by copying the average slots into the model
    (`finalize_variable_values`); after a swap those hold the raw weights, so that copy is
    turned off: the model already holds the average (also after a resumed `fit` that had no
    epoch left to run).

    Args:
        first_epoch: the phase's first epoch (its optimizer's average starts there).
        score_raw: optional; called just before the average is swapped in, returns figures
            of the raw weights (e.g. their valid mAP) for the epoch's logs.
    """

    def __init__(self, first_epoch: int, score_raw=None):
        super().__init__()
        self.first_epoch, self.score_raw = first_epoch, score_raw
        self.holds_average, self.raw_logs = False, {}

    def on_train_begin(self, logs=None):
        if not getattr(self._averaging_optimizer(), "use_ema", False):
            raise ValueError("WeightAverage needs an optimizer with use_ema=True (model.optimizer.ema_momentum).")
        self.model.optimizer.finalize_variable_values = lambda var_list: None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch > self.first_epoch:  # the model holds the previous epoch's average
            self._swap()
        self.holds_average, self.raw_logs = False, {}

    def on_test_begin(self, logs=None):
        self._average_in()

    def on_epoch_end(self, epoch, logs=None):
        self._average_in()
        if logs is not None:
            logs.update(self.raw_logs)

    def _average_in(self) -> None:
        if self.holds_average:
            return
        if self.score_raw is not None:
            self.raw_logs = self.score_raw()
        self._swap()
        self.holds_average = True

    def _averaging_optimizer(self):
        optimizer = self.model.optimizer
        return getattr(optimizer, "inner_optimizer", optimizer)  # mixed precision's LossScaleOptimizer

    def _swap(self) -> None:
        """Trade the model's weights with the optimizer's averages (Keras's own pairing)."""
        optimizer = self._averaging_optimizer()
        for variable, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
            if average is None:  # a variable Keras does not average (overwrite_with_gradient)
                continue
            raw = np.array(variable.numpy())
            variable.assign(average.numpy())
            average.assign(raw)


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


def build_callbacks(phase: "Phase", session: "Session", fit_model: keras.Model, val=None, augmenter=None) -> tuple[list, NaNGuard]:
    """One phase's callbacks, in the order they must run at an epoch's end: the weight
    average (when on) is swapped in first; the learning rate, the augmentation drops and the
    detector's valid mAP (from `val`, the phase's validation data) are logged before
    ReduceLROnPlateau reads them and the checkpoint commits the epoch's row."""
    cfg: CallbacksConfig = session.settings.callbacks
    opt_cfg = session.settings.optimizer
    layout, fm = session.layout, session.fm
    nan_guard = NaNGuard()
    callbacks: list = [LearningRateLogger()]
    dense_map = cfg.detection_map and session.settings.model.box_head == "dense"
    if opt_cfg.ema_momentum is not None:  # before all that read the weights: they see the average
        raw_map = _validation_map(session, fit_model, val, prefix="val_raw_") if cfg.raw_weights_map else None
        callbacks.append(WeightAverage(phase.start, raw_map.scores if raw_map else None))
    if augmenter is not None and session.data.multi_object_rule == "all":
        callbacks.append(AugmentationDrops(augmenter))
    if cfg.terminate_on_nan:
        callbacks.append(nan_guard)
    if dense_map:
        callbacks.append(_validation_map(session, fit_model, val))
    if opt_cfg.schedule == "plateau":  # after the valid mAP, which it may monitor
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
        n = int(tb.get("images", 4))
        if n:
            panel = _panel(session, n)
            callbacks.append(BoxImageLogger(fm.model, panel, _panel_predictions(session), layout.tensorboard))
    if session.tracker is not None:  # logger=wandb: beside TensorBoard, not instead of it
        callbacks.append(session.tracker.callback())
    if session.deadline is not None:
        callbacks.append(TimeBudget(session.deadline, phase.start))
    return callbacks, nan_guard


def _panel(session: "Session", n: int) -> BoxPanel:
    """The first `n` validation images with a box (then negatives), with all their boxes."""
    from fracture.inference import load_samples_targets

    chosen = [s for s in session.val_samples if s.has_box][:n]
    chosen += [s for s in session.val_samples if not s.has_box][: n - len(chosen)]
    names = session.classes.class_names
    images, targets = load_samples_targets(chosen, session.classes.num_classes, session.data)
    if "box" in targets:
        return BoxPanel(images, targets["box"][:, None], [names[s.class_id] for s in chosen])
    rows = targets["detections"]
    real = rows[..., 4:5] >= 0
    captions = [", ".join(names[c] for c in s.box_classes) or names[s.class_id] for s in chosen]
    return BoxPanel(images, np.where(real, rows[..., :4], 0.0), captions)


def _validation_map(session: "Session", fit_model: keras.Model, val, prefix: str = "val_") -> ValidationDetectionMAP:
    from fracture.evaluation.detection import detection_class_ids

    model_cfg, negative = session.settings.model, session.classes.negative_id
    decode = model_cfg.detection.decode  # evaluation's decoding, as evaluate.py reads it
    class_ids = detection_class_ids(session.classes.num_classes, negative)
    return ValidationDetectionMAP(
        fit_model, val, session.data.image_size, model_cfg.strides, class_ids, decode, negative, prefix
    )


def _panel_predictions(session: "Session"):
    names, model_cfg = session.classes.class_names, session.settings.model
    if model_cfg.box_head == "dense":
        return dense_predictions(names, session.data.image_size, model_cfg.strides)
    return single_box_predictions(names)
