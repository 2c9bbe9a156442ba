"""The training task: data -> two-head model -> (frozen phase, fine-tune phase) -> run folder.

Run folder (Hydra's run dir) after `train`:
    config.yaml        the resolved config
    classes.json       class names and the label mapping (fracture.data.classes)
    best.keras         the model with the best `callbacks.monitor`
    last.keras         the model after the last epoch
    history.csv        one row per epoch (both phases), learning rate included
    tensorboard/       scalars and validation images with true/predicted boxes
    metrics.json       validation metrics of best.keras
    run.json           weights actually used, precision, strategy, phases, timings, status

Resume: while a run is in progress its state lives in
`<paths.log_dir>/<task_name>/.in_progress/<config fingerprint>/` (BackupAndRestore per
phase, plus a marker when a phase completes). Starting the same command again finds it and
continues in the original run folder at the epoch it reached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from fracture.config import to_container, typed
from fracture.models.classifier import FractureModel, ModelConfig, build_model, load_fracture_model, set_backbone_trainable
from fracture.models.losses import ClassWeightConfig, LossConfig, build_losses, class_counts, compute_class_weights
from fracture.models.metrics import build_metrics
from fracture.training import callbacks as cb
from fracture.training import cluster
from fracture.training.distribute import make_strategy
from fracture.training.feature_cache import (
    CachedFeatures,
    choose_cache_mode,
    compute_features,
    feature_bytes,
    feature_dataset,
)
from fracture.training.optim import OptimizerConfig, build_optimizer
from fracture.training.precision import apply_precision

log = logging.getLogger(__name__)

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
    resume: bool = True
    max_minutes: float | None = None
    max_train_batches: int | None = None
    max_val_batches: int | None = None


@dataclass
class Phase:
    """One `fit` call: epochs [start, end) with the backbone frozen or (partly) trainable."""

    name: str
    start: int
    end: int
    trainable_layers: str | int
    learning_rate: float
    augment: bool


@dataclass
class TrainResult:
    run_dir: Path
    status: str
    metrics: dict = field(default_factory=dict)
    epochs_run: int = 0


def plan_phases(trainer: TrainerConfig, optimizer: OptimizerConfig, augment: bool) -> list[Phase]:
    """The frozen phase (`freeze_epochs`) then fine-tuning, each with its own LR."""
    freeze = min(max(trainer.freeze_epochs, 0), trainer.epochs)
    phases = []
    if freeze:
        phases.append(Phase("frozen", 0, freeze, 0, optimizer.learning_rate, augment and trainer.augment_frozen_phase))
    if trainer.epochs > freeze:
        lr = optimizer.fine_tune_learning_rate if freeze else optimizer.learning_rate
        phases.append(Phase("fine_tune", freeze, trainer.epochs, trainer.unfreeze, lr, augment))
    return phases


def config_fingerprint(cfg) -> str:
    """Stable hash of the resolved config: the same command maps to the same in-progress run."""
    text = json.dumps(to_container(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train(cfg, run_dir: str | Path, extra_callbacks: list | None = None) -> TrainResult:
    """Train from a composed Hydra config (conf/config.yaml); see the module docstring.

    Args:
        cfg: the composed config.
        run_dir: where the run's files go (Hydra's run dir), unless an interrupted run of
            the same config is resumed: then its folder is used.
        extra_callbacks: more Keras callbacks for every phase (tests use one to crash a run).
    """
    from omegaconf import OmegaConf

    from fracture.data.config import data_config_from_hydra
    from fracture.data.index import build_index

    trainer = typed(TrainerConfig, cfg.trainer, "trainer")
    model_cfg = typed(ModelConfig, cfg.model, "model", ignore=MODEL_SECTIONS)
    loss_cfg = typed(LossConfig, cfg.model.get("loss"), "model.loss")
    weight_cfg = typed(ClassWeightConfig, cfg.model.get("class_weights"), "model.class_weights")
    opt_cfg = typed(OptimizerConfig, cfg.model.get("optimizer"), "model.optimizer")
    cb_cfg = typed(cb.CallbacksConfig, cfg.callbacks, "callbacks")

    run_dir = Path(run_dir)
    state_dir = Path(cfg.paths.log_dir) / cfg.task_name / ".in_progress" / config_fingerprint(cfg)
    task = cluster.task_from_env(trainer.strategy, trainer.data_sharding)  # multi-worker: only the chief writes run_dir
    run_dir, state_dir = cluster.worker_dirs(run_dir, state_dir, task)
    resumed_from = None
    if trainer.resume and (state_dir / "run_dir.txt").is_file():
        original = Path((state_dir / "run_dir.txt").read_text().strip())
        if original.is_dir() and original != run_dir:
            print(f"Resuming the interrupted run {original} (state {state_dir}).")
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "resumed_into.txt").write_text(f"{original}\n")
            run_dir, resumed_from = original, original
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "run_dir.txt").write_text(f"{run_dir}\n")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    # the strategy first: MultiWorkerMirroredStrategy must come before anything initialises
    # the TF runtime (apply_precision's device query does)
    strategy = make_strategy(trainer.strategy)
    keras.utils.set_random_seed(int(cfg.seed))
    if trainer.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    policy = apply_precision(trainer.precision)

    data_cfg = cluster.worker_data_config(data_config_from_hydra(cfg.data), task)
    index = build_index(data_cfg, splits=[data_cfg.train_split, data_cfg.val_split], cache_dir=cfg.paths.cache_dir)
    classes = index.classes
    classes.save(run_dir / "classes.json")
    train_samples = index.split(data_cfg.train_split).samples
    val_samples = index.split(data_cfg.val_split).samples
    counts = class_counts([s.class_id for s in train_samples], classes.num_classes)
    class_weights = compute_class_weights(counts, classes.class_names, weight_cfg)
    print(f"classes: {dict(zip(classes.class_names, counts.tolist()))}")
    print(f"class weights: {dict(zip(classes.class_names, (round(float(w), 3) for w in class_weights)))}")

    with strategy.scope():
        fm = build_model(model_cfg, classes.num_classes, data_cfg.image_size)
        if trainer.sync_batchnorm:
            cluster.sync_batchnorm(fm.model, strategy)
    losses, loss_weights = build_losses(loss_cfg)
    info = {
        "backbone": model_cfg.backbone,
        "weights_requested": model_cfg.weights,
        "weights_used": fm.weights,
        "precision": policy,
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "global_batch_size": data_cfg.batch_size,
        "num_classes": classes.num_classes,
        "class_names": classes.class_names,
        "train_images": len(train_samples),
        "val_images": len(val_samples),
        "class_weights": class_weights.tolist(),
        "resumed_from": str(resumed_from) if resumed_from else None,
        "phases": [],
    }
    _write_json(run_dir / "run.json", {**info, "status": "running"})

    phases = plan_phases(trainer, opt_cfg, data_cfg.augment.enabled)
    start_time = time.time()
    deadline = time.monotonic() + 60 * trainer.max_minutes if trainer.max_minutes else None
    status, epochs_run = "completed", 0
    for phase in phases:
        marker = state_dir / f"{phase.name}.done.weights.h5"
        if deadline is not None and time.monotonic() > deadline:
            print(f"Time budget spent; skipping phase {phase.name}.")
            info["stopped_by_time_budget"] = True
            break
        if marker.is_file():
            print(f"Phase {phase.name} already completed in the interrupted run; loading its weights.")
            fm.model.load_weights(marker)
            continue
        outcome = _run_phase(
            phase, fm, trainer, data_cfg, cb_cfg, opt_cfg, losses, loss_weights, class_weights,
            classes, train_samples, val_samples, strategy, run_dir, state_dir, cfg,
            (extra_callbacks or []) + ([cb.TimeBudget(deadline)] if deadline is not None else []),
        )
        info["phases"].append(outcome)
        epochs_run += outcome["epochs"]
        if outcome["nan"]:
            status = "stopped_nan"
            break
        fm.model.save_weights(marker)
    info["train_seconds"] = round(time.time() - start_time, 1)

    fm.model.save(run_dir / "last.keras")
    metrics = {}
    if status == "completed":
        metrics = evaluate_best(run_dir, fm.model, data_cfg, classes, val_samples, losses, loss_weights, trainer)
        _write_json(run_dir / "metrics.json", metrics)
        import shutil

        shutil.rmtree(state_dir, ignore_errors=True)
    _write_json(run_dir / "run.json", {**info, "status": status})
    return TrainResult(run_dir, status, metrics, epochs_run)


def _run_phase(
    phase, fm: FractureModel, trainer, data_cfg, cb_cfg, opt_cfg, losses, loss_weights, class_weights,
    classes, train_samples, val_samples, strategy, run_dir, state_dir, cfg, extra_callbacks,
) -> dict:
    from fracture.data.pipeline import make_dataset

    started = time.time()
    set_backbone_trainable(fm.backbone, phase.trainable_layers, _freeze_batchnorm(trainer, fm))
    batch = data_cfg.batch_size
    val_ds = make_dataset(val_samples, classes.num_classes, data_cfg, False, class_weights)
    mode = "off"
    if phase.trainable_layers == 0 and not phase.augment:
        needed = feature_bytes(fm.backbone, len(train_samples) + len(val_samples))
        mode = choose_cache_mode(trainer.feature_cache, needed, trainer.feature_cache_max_memory_gb)
    cached: list[CachedFeatures] = []
    if mode != "off":
        print(f"Phase {phase.name}: computing frozen-backbone features once ({mode} cache).")
        # unshuffled and unaugmented: the features are shuffled per epoch by feature_dataset
        plain_train = make_dataset(train_samples, classes.num_classes, data_cfg, False, class_weights)
        file_root = Path(cfg.paths.cache_dir) / "features" / state_dir.name if mode == "file" else None
        cached = [
            compute_features(fm.backbone, _limit(plain_train, trainer.max_train_batches), file_root and file_root / "train"),
            compute_features(fm.backbone, _limit(val_ds, trainer.max_val_batches), file_root and file_root / "valid"),
        ]
        fit_model = fm.heads
        train_ds = feature_dataset(cached[0], batch, shuffle=True, seed=data_cfg.seed)
        val_ds = feature_dataset(cached[1], batch, shuffle=False, seed=data_cfg.seed)
        print(f"features ready in {time.time() - started:.1f} s")
    else:
        fit_model = fm.model
        train_ds = cluster.distribute_train_data(  # data_sharding=file: this worker's files
            strategy,
            lambda shard, b: _limit(
                make_dataset(
                    train_samples, classes.num_classes, data_cfg, True, class_weights,
                    batch_size=b, augment=phase.augment, shard=shard,
                ),
                trainer.max_train_batches,
            ),
            trainer.data_sharding,
            batch,
        )
        val_ds = _limit(val_ds, trainer.max_val_batches)

    steps = trainer.max_train_batches or -(-len(train_samples) // batch)
    with strategy.scope():  # metrics too: their variables must be the strategy's to add up across workers
        metrics, weighted_metrics = build_metrics(classes.num_classes, cfg.model.get("class_metric", "f1"))
        optimizer = build_optimizer(opt_cfg, phase.learning_rate, steps, phase.end - phase.start, batch)
        fit_model.compile(
            optimizer=optimizer, loss=losses, loss_weights=loss_weights, metrics=metrics, weighted_metrics=weighted_metrics
        )
    callbacks, nan_guard = _callbacks(phase, fm, fit_model, cb_cfg, opt_cfg, data_cfg, classes, val_samples, run_dir, state_dir)
    print(
        f"Phase {phase.name}: epochs {phase.start + 1}-{phase.end}, backbone trainable={phase.trainable_layers}, "
        f"lr={phase.learning_rate:g}, augment={phase.augment}, trainable params={_count(fit_model.trainable_weights):,}"
    )
    history = fit_model.fit(
        train_ds,
        validation_data=val_ds,
        initial_epoch=phase.start,
        epochs=phase.end,
        callbacks=callbacks + list(extra_callbacks),
        shuffle=False,  # the pipeline shuffles (seeded); Keras cannot shuffle a tf.data.Dataset
        verbose=_verbosity(cb_cfg.progress),
    )
    for c in cached:
        c.release()
    return {
        "name": phase.name,
        "epochs": len(history.epoch),
        "first_epoch": (history.epoch[0] + 1) if history.epoch else None,
        "feature_cache": mode,
        "trainable_layers": phase.trainable_layers,
        "learning_rate": phase.learning_rate,
        "seconds": round(time.time() - started, 1),
        "nan": nan_guard.tripped_at is not None,
    }


def _callbacks(phase, fm, fit_model, cb_cfg, opt_cfg, data_cfg, classes, val_samples, run_dir, state_dir):
    history_csv = run_dir / "history.csv"
    nan_guard = cb.NaNGuard()
    callbacks: list = [cb.LearningRateLogger()]
    if cb_cfg.backup_and_restore:
        callbacks.append(keras.callbacks.BackupAndRestore(str(state_dir / f"backup_{phase.name}")))
    if cb_cfg.terminate_on_nan:
        callbacks.append(nan_guard)
    if opt_cfg.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                cb_cfg.monitor, factor=opt_cfg.plateau_factor, patience=opt_cfg.plateau_patience,
                mode=cb_cfg.mode, min_lr=opt_cfg.min_learning_rate,
            )
        )
    best = cb.best_from_history(history_csv, cb_cfg.monitor, cb_cfg.mode)
    callbacks.append(cb.ModelSaver(fm.model, run_dir / "best.keras", cb_cfg.monitor, cb_cfg.mode, best))
    callbacks.append(cb.ModelSaver(fm.model, run_dir / "last.keras"))
    es = cb_cfg.early_stopping
    if es.get("enabled", True):
        callbacks.append(
            keras.callbacks.EarlyStopping(
                cb_cfg.monitor, mode=cb_cfg.mode, patience=es.get("patience", 8),
                min_delta=es.get("min_delta", 0.0), restore_best_weights=True,
            )
        )
    tb = cb_cfg.tensorboard
    if tb.get("enabled", True):
        tb_dir = run_dir / "tensorboard"
        callbacks.append(keras.callbacks.TensorBoard(str(tb_dir), write_graph=False, update_freq="epoch"))
        n = int(tb.get("images", 4))
        if n:
            images, boxes, ids = _panel(val_samples, n, classes.num_classes, data_cfg)
            callbacks.append(cb.BoxImageLogger(fm.model, images, boxes, ids, classes.class_names, tb_dir))
    if cb_cfg.csv_logger:
        callbacks.append(keras.callbacks.CSVLogger(str(history_csv), append=True))
    return callbacks, nan_guard


def _panel(val_samples, n, num_classes, data_cfg):
    """The first `n` validation images with a box (then negatives), for the TensorBoard panel."""
    from fracture.data.pipeline import make_dataset

    chosen = [s for s in val_samples if s.has_box][:n]
    chosen += [s for s in val_samples if not s.has_box][: n - len(chosen)]
    images, targets, _ = next(iter(make_dataset(chosen, num_classes, data_cfg, False, cache=None, batch_size=n)))
    return images.numpy(), targets["box"].numpy(), [s.class_id for s in chosen]


def evaluate_best(run_dir, model, data_cfg, classes, val_samples, losses, loss_weights, trainer) -> dict:
    """Validation metrics of best.keras (falls back to the final model if none was saved)."""
    from fracture.data.pipeline import make_dataset

    best_path = run_dir / "best.keras"
    best = load_fracture_model(best_path) if best_path.is_file() else model
    metrics, weighted = build_metrics(classes.num_classes, "both")
    best.compile(loss=losses, loss_weights=loss_weights, metrics=metrics, weighted_metrics=weighted)
    val_ds = _limit(make_dataset(val_samples, classes.num_classes, data_cfg, False), trainer.max_val_batches)
    results = best.evaluate(val_ds, verbose=0, return_dict=True)
    return {
        "split": data_cfg.val_split,
        "model": best_path.name if best_path.is_file() else "final",
        "images": len(val_samples) if not trainer.max_val_batches else min(len(val_samples), trainer.max_val_batches * data_cfg.batch_size),
        **{k: float(v) for k, v in results.items()},
        "note": (
            "Training-time metrics of best.keras; losses here are without class weights (history.csv "
            "weights them). scripts/evaluate.py gives per-class figures with confidence intervals."
        ),
    }


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


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
