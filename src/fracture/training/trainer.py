"""The training task: data -> two-head model -> (frozen phase, fine-tune phase) -> run folder.

The run folder's files are those of `fracture.runs.RunLayout`. A run is exclusive and
resumable (`fracture.training.resume`): rerunning the same command continues an
interrupted run in its original folder, and a second copy of a running command stops at
once. Ctrl-C and SIGTERM end a run as `interrupted` (exit 130 / 143 from train.py); an
error ends it as `failed`, with the error in run.json. Everything printed goes to
train.log too.

Every config section is typed once (`TrainSettings`), before any folder is created, so a
misspelt key costs nothing; the loop itself reads no raw config.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from fracture.config import typed
from fracture.data.classes import ClassMapping
from fracture.data.config import DataConfig
from fracture.models.classifier import FractureModel, ModelConfig, build_model, build_model_losses, set_backbone_trainable
from fracture.models.losses import ClassWeightConfig, LossConfig, class_counts, compute_class_weights
from fracture.models.metrics import build_metrics
from fracture.runs import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    RunLayout,
    console_log,
    load_model_file,
    new_run_dir,
    read_run_info,
    update_run_info,
    write_json,
    write_text,
)
from fracture.training import callbacks as cb
from fracture.training import cluster, loggers
from fracture.training.distribute import make_strategy
from fracture.training.feature_cache import choose_cache_mode, compute_features, feature_bytes, feature_dataset
from fracture.training.loggers import LoggerConfig, Tracker
from fracture.training.optim import OptimizerConfig, build_optimizer
from fracture.training.precision import apply_precision
from fracture.training.resume import RunClaim, RunState, claim_run, config_fingerprint

MODEL_SECTIONS = ("loss", "class_weights", "optimizer", "class_metric")


@dataclass
class TrainerConfig:
    """The `trainer` config group (documented in conf/trainer/default.yaml)."""

    epochs: int = 30
    freeze_epochs: int = 5
    unfreeze: str | int = "all"
    freeze_batchnorm: str | bool = "auto"
    augment_frozen_phase: bool = False
    feature_cache: str = "auto"
    feature_cache_max_memory_gb: float = 4.0
    precision: str = "auto"
    strategy: str = "auto"
    data_sharding: str = "data"
    sync_batchnorm: bool = True
    deterministic: bool = False
    jit_compile: str | bool = "auto"
    resume: bool = True
    max_minutes: float | None = None
    max_train_batches: int | None = None
    max_val_batches: int | None = None

    def __post_init__(self):
        if self.jit_compile not in ("auto", True, False):
            raise ValueError(f"trainer.jit_compile={self.jit_compile!r}; expected auto, true or false.")


@dataclass
class TrainSettings:
    """Every config section training reads, typed (unknown keys are errors naming them)."""

    trainer: TrainerConfig
    model: ModelConfig
    loss: LossConfig
    class_weights: ClassWeightConfig
    optimizer: OptimizerConfig
    callbacks: cb.CallbacksConfig
    class_metric: str
    seed: int
    log_dir: Path
    cache_dir: Path
    task_name: str
    logger: LoggerConfig

    def __post_init__(self):
        if self.callbacks.raw_weights_map and (
            self.optimizer.ema_momentum is None or not self.callbacks.detection_map or self.model.box_head != "dense"
        ):
            raise ValueError(
                "callbacks.raw_weights_map=true scores the raw weights beside their average: it needs "
                "model.optimizer.ema_momentum, model.box_head=dense and callbacks.detection_map=true "
                f"(got {self.optimizer.ema_momentum}, {self.model.box_head}, {self.callbacks.detection_map})."
            )

    @classmethod
    def from_config(cls, cfg) -> "TrainSettings":
        model = cfg.model
        return cls(
            trainer=typed(TrainerConfig, cfg.trainer, "trainer"),
            model=typed(ModelConfig, model, "model", ignore=MODEL_SECTIONS),
            loss=typed(LossConfig, model.get("loss"), "model.loss"),
            class_weights=typed(ClassWeightConfig, model.get("class_weights"), "model.class_weights"),
            optimizer=typed(OptimizerConfig, model.get("optimizer"), "model.optimizer"),
            callbacks=typed(cb.CallbacksConfig, cfg.callbacks, "callbacks"),
            class_metric=str(model.get("class_metric", "f1")),
            seed=int(cfg.seed),
            log_dir=Path(cfg.paths.log_dir),
            cache_dir=Path(cfg.paths.cache_dir),
            task_name=str(cfg.task_name),
            logger=typed(LoggerConfig, cfg.get("logger"), "logger"),
        )


@dataclass
class Phase:
    """One `fit` call: epochs [start, end) with the backbone frozen or (partly) trainable."""

    name: str
    start: int
    end: int
    trainable_layers: str | int
    learning_rate: float
    augment: bool
    warmup_epochs: float

    @property
    def frozen(self) -> bool:
        return self.trainable_layers == 0


@dataclass
class TrainResult:
    run_dir: Path
    status: str
    metrics: dict = field(default_factory=dict)
    epochs_run: int = 0


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the run stops as `interrupted` (a KeyboardInterrupt, so no generic
    `except Exception` swallows it)."""

    def __init__(self, signum: int = signal.SIGINT, epoch: int | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.epoch = signum, epoch

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def plan_phases(trainer: TrainerConfig, optimizer: OptimizerConfig, augment: bool) -> list[Phase]:
    """The frozen phase (`freeze_epochs`) then fine-tuning, each with its own LR."""
    freeze = min(max(trainer.freeze_epochs, 0), trainer.epochs)
    phases = []
    if freeze:
        lr, warmup = optimizer.phase_rate(after_frozen_phase=False)
        phases.append(Phase("frozen", 0, freeze, 0, lr, augment and trainer.augment_frozen_phase, warmup))
    if trainer.epochs > freeze:
        lr, warmup = optimizer.phase_rate(after_frozen_phase=bool(freeze))
        phases.append(Phase("fine_tune", freeze, trainer.epochs, trainer.unfreeze, lr, augment, warmup))
    return phases


@dataclass
class Session:
    """What every phase of one run shares, built once by `train`."""

    settings: TrainSettings
    data: DataConfig
    fm: FractureModel
    classes: ClassMapping
    train_samples: list
    val_samples: list
    class_weights: np.ndarray
    losses: dict
    loss_weights: dict
    strategy: object
    layout: RunLayout
    claim: RunClaim
    state: RunState
    extra_callbacks: list
    deadline: float | None
    tracker: Tracker | None = None


def train(cfg, run_dir: str | Path | None = None, extra_callbacks: list | None = None) -> TrainResult:
    """Train from a composed Hydra config (conf/config.yaml); see the module docstring.

    Args:
        cfg: the composed config.
        run_dir: the folder for a new run (default `<paths.log_dir>/<task_name>/<time>`);
            an interrupted run of the same config is resumed in its own folder instead.
        extra_callbacks: more Keras callbacks for every phase (tests use one to crash a run).

    Raises:
        RunLockedError: the same config is being trained by another live process.
        RunInterrupted: Ctrl-C or SIGTERM; run.json says `interrupted`.
    """
    from omegaconf import OmegaConf

    from fracture.data.config import data_config_from_hydra

    settings = TrainSettings.from_config(cfg)
    loggers.check_available(settings.logger)
    # multi-worker: only the chief writes the run folder; see fracture.training.cluster
    task = cluster.task_from_env(settings.trainer.strategy, settings.trainer.data_sharding)
    data_cfg = cluster.worker_data_config(data_config_from_hydra(cfg.data), task)  # a bad key fails here, before any folder
    state_dir = settings.log_dir / settings.task_name / ".in_progress" / config_fingerprint(cfg)
    fresh = Path(run_dir) if run_dir else new_run_dir(settings.log_dir, settings.task_name)
    fresh, state_dir = cluster.worker_dirs(fresh, state_dir, task)
    claim = claim_run(state_dir, fresh, settings.trainer.resume, temporary_folder=not task.is_chief)
    layout = RunLayout(claim.run_dir)
    state = RunState.load(state_dir) if claim.resumed else RunState()
    with console_log(layout.train_log) as log, SignalGuard() as signals:
        print(f"run folder: {layout.root}")
        print(f"TensorBoard: tensorboard --logdir {layout.tensorboard}")
        if claim.note:
            print(f"note: {claim.note}")
        if claim.resumed:
            print(f"Resuming the interrupted run {layout.root} after epoch {state.epoch} (state {state_dir}).")
        write_text(layout.config, OmegaConf.to_yaml(cfg, resolve=True))
        attempts = read_run_info(layout.root).get("attempts", 0) + 1
        update_run_info(layout.root, status=RUNNING, started=time.strftime("%Y-%m-%dT%H:%M:%S"), attempts=attempts,
                        resumed=claim.resumed, error=None, interrupted_at_epoch=None, signal=None)
        try:
            session = _session(cfg, settings, data_cfg, layout, claim, state, [*(extra_callbacks or []), signals])
            result = _run(session)
        except KeyboardInterrupt as exc:  # RunInterrupted (a signal) or a plain Ctrl-C
            interrupted = exc if isinstance(exc, RunInterrupted) else RunInterrupted()
            interrupted.epoch = state.epoch + 1
            update_run_info(layout.root, status=INTERRUPTED, interrupted_at_epoch=interrupted.epoch, signal=str(interrupted))
            print(f"interrupted at epoch {interrupted.epoch}; rerun the same command to resume")
            claim.lock.release()
            if interrupted is exc:
                raise
            raise interrupted from exc
        except BaseException as exc:
            update_run_info(layout.root, status=FAILED, error=f"{type(exc).__name__}: {exc}")
            log.write(f"error: {type(exc).__name__}: {exc}\n")  # the console gets it from the caller
            claim.lock.release()
            raise
    return result


def _session(cfg, settings: TrainSettings, data_cfg: DataConfig, layout: RunLayout, claim, state, extra_callbacks) -> Session:
    """Seeds, precision, strategy, the indexed data, the model and losses: everything phases share."""
    from fracture.data.accounting import (
        check_shrink,
        data_accounting,
        format_accounting,
    )
    from fracture.data.index import build_index

    # the strategy first: MultiWorkerMirroredStrategy must be built before anything starts
    # the TF runtime (apply_precision's device query does)
    strategy = make_strategy(settings.trainer.strategy)
    keras.utils.set_random_seed(settings.seed)
    if settings.trainer.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    policy = apply_precision(settings.trainer.precision)
    index = build_index(data_cfg, splits=[data_cfg.train_split, data_cfg.val_split], cache_dir=settings.cache_dir)
    accounting = data_accounting(index)
    print(format_accounting(accounting))
    update_run_info(layout.root, data=accounting)
    check_shrink(accounting, data_cfg.allow_shrink)
    classes = index.classes
    classes.save(layout.classes)
    train_samples = index.split(data_cfg.train_split).samples
    val_samples = index.split(data_cfg.val_split).samples
    counts = class_counts([s.class_id for s in train_samples], classes.num_classes)
    class_weights = compute_class_weights(counts, classes.class_names, settings.class_weights)
    print(f"classes: {dict(zip(classes.class_names, counts.tolist()))}")
    print(f"class weights: {dict(zip(classes.class_names, (round(float(w), 3) for w in class_weights)))}")
    with strategy.scope():
        fm = build_model(settings.model, classes.num_classes, data_cfg.image_size, classes.class_names)
        if settings.trainer.sync_batchnorm:
            cluster.sync_batchnorm(fm.model, strategy)
    losses, loss_weights = _losses(settings, data_cfg)
    update_run_info(
        layout.root,
        backbone=settings.model.backbone,
        weights_requested=settings.model.weights,
        weights_used=fm.weights,
        precision=policy,
        strategy=type(strategy).__name__,
        replicas=strategy.num_replicas_in_sync,
        global_batch_size=data_cfg.batch_size,
        num_classes=classes.num_classes,
        class_names=classes.class_names,
        train_images=len(train_samples),
        val_images=len(val_samples),
        class_weights=class_weights.tolist(),
    )
    max_minutes = settings.trainer.max_minutes
    from omegaconf import OmegaConf

    tracker = loggers.start(settings.logger, layout.root, settings.task_name, OmegaConf.to_container(cfg, resolve=True))
    return Session(
        settings, data_cfg, fm, classes, train_samples, val_samples, class_weights, losses, loss_weights, strategy,
        layout, claim, state, list(extra_callbacks or []), time.monotonic() + 60 * max_minutes if max_minutes else None,
        tracker,
    )


def _run(session: Session) -> TrainResult:
    """Every phase, then best.keras's validation metrics; the run ends `finished` or `failed`."""
    settings, layout, state = session.settings, session.layout, session.state
    start_time, status, error, epochs_before = time.time(), FINISHED, None, state.epoch
    phase_reports = list(read_run_info(layout.root).get("phases", []))
    for phase in plan_phases(settings.trainer, settings.optimizer, session.data.augment.enabled):
        if phase.name in state.phases_done:
            print(f"Phase {phase.name} already completed in the interrupted run; loading its weights.")
            session.fm.model.load_weights(session.claim.state_dir / state.phases_done[phase.name])
            continue
        if session.deadline is not None and time.monotonic() > session.deadline:
            print(f"Time budget spent; skipping phase {phase.name}.")
            update_run_info(layout.root, stopped_by_time_budget=True)
            break
        report, nan_at = _run_phase(phase, session)
        phase_reports.append(report)
        update_run_info(layout.root, phases=phase_reports)
        if nan_at:
            status, error = FAILED, f"loss became non-finite at {nan_at}"
            break
        _mark_phase_done(phase, session)
    metrics = {}
    if status == FINISHED:
        metrics = evaluate_best(session)
        write_json(layout.metrics, metrics)
    update_run_info(layout.root, status=status, error=error, train_seconds=round(time.time() - start_time, 1))
    if session.tracker is not None:
        session.tracker.finish(metrics, status)
    if status == FINISHED:
        session.claim.finish()
    else:
        session.claim.lock.release()
    return TrainResult(layout.root, status, metrics, state.epoch - epochs_before)


def _losses(settings: TrainSettings, data_cfg: DataConfig) -> tuple[dict, dict]:
    """The losses of the model's outputs: the dense detector trains on every box
    (`data.multi_object_rule=all`), the single-box head on one box per image."""
    dense = settings.model.box_head == "dense"
    if dense != (data_cfg.multi_object_rule == "all"):
        raise ValueError(
            f"model.box_head={settings.model.box_head} needs "
            + ("data.multi_object_rule=all (every box)" if dense else "an image-level data.multi_object_rule, not 'all'")
            + f"; got data.multi_object_rule={data_cfg.multi_object_rule}."
        )
    return build_model_losses(settings.model, settings.loss, data_cfg.image_size)


def _mark_phase_done(phase: Phase, session: Session) -> None:
    """Save the end-to-end weights and commit the phase as done (a resumed run skips it)."""
    name = f"phase_{phase.name}.weights.h5"
    session.fm.model.save_weights(session.claim.state_dir / name)
    session.state.phases_done[phase.name] = name
    session.state.commit(session.claim.state_dir)


def _run_phase(phase: Phase, session: Session) -> tuple[dict, str | None]:
    """One `fit` call; returns its report for run.json and where the loss became NaN, if it did."""
    started = time.time()
    settings, data_cfg, fm = session.settings, session.data, session.fm
    set_backbone_trainable(fm.backbone, phase.trainable_layers, _freeze_batchnorm(settings.trainer, fm))
    data = _phase_data(phase, session)
    fit_model = data.fit_model
    steps = settings.trainer.max_train_batches or -(-data.epoch_images // data_cfg.batch_size)
    with session.strategy.scope():  # metrics too: their variables must be the strategy's to add up across workers
        metrics, weighted_metrics = build_metrics(session.classes.num_classes, settings.class_metric, _single_box(session))
        optimizer = build_optimizer(
            settings.optimizer, phase.learning_rate, steps, phase.end - phase.start, data_cfg.batch_size, phase.warmup_epochs
        )
        fit_model.compile(
            optimizer=optimizer, loss=session.losses, loss_weights=session.loss_weights,
            metrics=metrics, weighted_metrics=weighted_metrics, jit_compile=settings.trainer.jit_compile,
        )
    callbacks, nan_guard = cb.build_callbacks(phase, session, fit_model, data.val, data.augmenter)
    print(
        f"Phase {phase.name}: epochs {phase.start + 1}-{phase.end}, backbone trainable={phase.trainable_layers}, "
        f"lr={phase.learning_rate:g} (warm-up {phase.warmup_epochs:g} epochs), augment={phase.augment}, "
        f"images per epoch={data.epoch_images:,}{_drawn(data, session)}, "
        f"trainable params={_count(fit_model.trainable_weights):,}"
    )
    epochs_before = session.state.epoch
    fit_model.fit(
        data.train,
        validation_data=data.val,
        initial_epoch=phase.start,
        epochs=phase.end,
        callbacks=callbacks + session.extra_callbacks,
        shuffle=False,  # the pipeline shuffles (seeded); Keras cannot shuffle a tf.data.Dataset
        verbose=_verbosity(settings.callbacks.progress),
    )
    data.release()
    report = {
        "name": phase.name,
        "epochs": session.state.epoch - epochs_before,
        "first_epoch": epochs_before + 1 if session.state.epoch > epochs_before else None,
        "feature_cache": data.cache_mode,
        "images_per_epoch": data.epoch_images,
        "trainable_layers": phase.trainable_layers,
        "learning_rate": phase.learning_rate,
        "warmup_epochs": phase.warmup_epochs,
        "seconds": round(time.time() - started, 1),
        "nan": nan_guard.tripped_at is not None,
    }
    return report, nan_guard.tripped_at


@dataclass
class PhaseData:
    """What one phase trains on.

    Attributes:
        fit_model: the end-to-end model, or the heads alone on cached features.
        train, val: the datasets `fit` gets.
        cache_mode: the feature cache used ("off", "memory" or "file").
        epoch_images: images in one training epoch (for the learning-rate schedule's
            length): every train image on cached features, fewer on images when
            `data.negatives_per_epoch` draws the negatives.
        release: frees the cache (its files) after the phase.
        augmenter: the train-time augmenter, when the phase augments (its counters are
            reported per epoch).
    """

    fit_model: keras.Model
    train: object
    val: object
    cache_mode: str
    epoch_images: int
    release: object = lambda: None
    augmenter: object = None


def _drawn(data: "PhaseData", session: Session) -> str:
    """How many negatives an epoch on images draws, when `data.negatives_per_epoch` < 1."""
    fraction = session.data.negatives_per_epoch
    if fraction >= 1.0 or data.cache_mode != "off":  # cached features: every image
        return ""
    negatives = sum(not s.has_box for s in session.train_samples)
    return f" (negatives drawn afresh each epoch: {fraction:g} of {negatives:,})"


def _single_box(session: Session) -> bool:
    """The single-box head (image-level box) rather than the dense detector's outputs."""
    return "box" in session.fm.model.output


def _phase_data(phase: Phase, session: Session) -> PhaseData:
    """The model and data of a phase.

    A frozen, unaugmented phase trains the heads on backbone features computed once
    (`trainer.feature_cache`); any other phase trains the end-to-end model on images.
    """
    from fracture.data.pipeline import BoxAugmenter, epoch_size, make_dataset

    settings, data_cfg, fm, trainer = session.settings, session.data, session.fm, session.settings.trainer
    num_classes, weights = session.classes.num_classes, session.class_weights
    val_ds = make_dataset(session.val_samples, num_classes, data_cfg, False, weights)
    mode = "off"
    if phase.frozen and not phase.augment:
        needed = feature_bytes(fm.backbone, len(session.train_samples) + len(session.val_samples))
        mode = choose_cache_mode(trainer.feature_cache, needed, trainer.feature_cache_max_memory_gb)
    if mode == "off":
        augmenter = BoxAugmenter(data_cfg.augment, data_cfg.image_size, data_cfg.seed) if phase.augment else None
        train_ds = cluster.distribute_train_data(  # data_sharding=file: this worker's files only
            session.strategy,
            lambda shard, batch: _limit(
                make_dataset(session.train_samples, num_classes, data_cfg, True, weights,
                             batch_size=batch, augment=phase.augment, shard=shard, augmenter=augmenter),
                trainer.max_train_batches,
            ),
            trainer.data_sharding,
            data_cfg.batch_size,
        )
        return PhaseData(
            fm.model, train_ds, _limit(val_ds, trainer.max_val_batches), mode,
            epoch_size(session.train_samples, data_cfg), augmenter=augmenter,
        )
    started = time.time()
    print(f"Phase {phase.name}: computing frozen-backbone features once ({mode} cache).")
    # unshuffled and unaugmented: the features are shuffled per epoch by feature_dataset
    plain_train = make_dataset(session.train_samples, num_classes, data_cfg, False, weights)
    file_root = settings.cache_dir / "features" / session.claim.state_dir.name if mode == "file" else None
    cached = [
        compute_features(fm.backbone, _limit(plain_train, trainer.max_train_batches), file_root and file_root / "train"),
        compute_features(fm.backbone, _limit(val_ds, trainer.max_val_batches), file_root and file_root / "valid"),
    ]
    print(f"features ready in {time.time() - started:.1f} s")
    batch, seed = data_cfg.batch_size, data_cfg.seed
    return PhaseData(
        fm.heads,
        feature_dataset(cached[0], batch, shuffle=True, seed=seed),
        feature_dataset(cached[1], batch, shuffle=False, seed=seed),
        mode,
        len(session.train_samples),
        lambda: [c.release() for c in cached],
    )


def evaluate_best(session: Session) -> dict:
    """Validation metrics of best.keras (falls back to the final model if none was saved)."""
    from fracture.data.pipeline import make_dataset

    layout, trainer, data_cfg = session.layout, session.settings.trainer, session.data
    has_best = layout.best_model.is_file()
    best = load_model_file(layout.best_model) if has_best else session.fm.model
    metrics, weighted = build_metrics(session.classes.num_classes, "both", _single_box(session))
    best.compile(loss=session.losses, loss_weights=session.loss_weights, metrics=metrics, weighted_metrics=weighted)
    val_ds = _limit(make_dataset(session.val_samples, session.classes.num_classes, data_cfg, False), trainer.max_val_batches)
    results = best.evaluate(val_ds, verbose=0, return_dict=True)
    n_val = len(session.val_samples)
    return {
        "split": data_cfg.val_split,
        "model": layout.best_model.name if has_best else "final",
        "images": n_val if not trainer.max_val_batches else min(n_val, trainer.max_val_batches * data_cfg.batch_size),
        **{k: float(v) for k, v in results.items()},
        "note": (
            "Training-time metrics of best.keras; losses here are without class weights (history.csv "
            "weights them). scripts/evaluate.py gives per-class figures with confidence intervals."
        ),
    }


class SignalGuard(keras.callbacks.Callback):
    """While training, SIGINT and SIGTERM raise `RunInterrupted` (main thread only).

    A handler's exception lands wherever the main thread is, and some library code swallows
    it: Keras' `save_model` wraps its temp file in a bare `except:` and carries on. So the
    signal is also remembered, and as a callback (the last one of every `fit`) the guard raises
    it again at the next batch end, or at the epoch end once the epoch is committed.

    A signal that arrives while a finalizer runs (a `__del__`, a weakref callback, the garbage
    collector) raises there, and Python reports it through `sys.unraisablehook` as "Exception
    ignored in ... Traceback". The guard's own hook stays quiet about `RunInterrupted` (it is
    remembered and raised again) and passes everything else to the previous hook.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        super().__init__()
        self.previous, self.previous_unraisablehook, self.received = {}, None, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._raise)
            self.previous_unraisablehook = sys.unraisablehook
            sys.unraisablehook = self._unraisable
        return self

    def _unraisable(self, unraisable) -> None:
        if not isinstance(unraisable.exc_value, RunInterrupted):
            self.previous_unraisablehook(unraisable)

    def _raise(self, signum, frame):
        self.received = signum
        raise RunInterrupted(signum)

    def check(self) -> None:
        if self.received is not None:
            raise RunInterrupted(self.received)

    def on_train_batch_end(self, batch, logs=None):
        self.check()

    def on_test_batch_end(self, batch, logs=None):
        self.check()

    def on_epoch_end(self, epoch, logs=None):
        self.check()

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if self.previous_unraisablehook is not None:
            sys.unraisablehook = self.previous_unraisablehook
        return False


def _freeze_batchnorm(trainer: TrainerConfig, fm: FractureModel) -> bool:
    if trainer.freeze_batchnorm == "auto":
        return fm.weights is not None  # pretrained: keep its statistics; random init: learn them
    return bool(trainer.freeze_batchnorm)


def _limit(ds, batches):
    return ds.take(batches) if batches else ds


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def _verbosity(progress) -> int | str:
    if progress == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(progress)
