"""AdamW with gradient clipping, and its learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
from keras import ops

SCHEDULES = ("cosine", "plateau", "constant")


@dataclass
class OptimizerConfig:
    """`model.optimizer` (documented in conf/model/default.yaml)."""

    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    clipnorm: float | None = 1.0
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    min_learning_rate: float = 1e-6
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    scale_lr: str = "none"
    reference_batch_size: int = 32

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"model.optimizer.schedule={self.schedule!r}; expected one of {SCHEDULES}.")
        if self.scale_lr not in ("none", "linear"):
            raise ValueError(f"model.optimizer.scale_lr={self.scale_lr!r}; expected none or linear.")

    def scaled(self, learning_rate: float, global_batch_size: int) -> float:
        """Apply the linear scaling rule when `scale_lr=linear` (see fracture.training.distribute)."""
        if self.scale_lr == "linear":
            return learning_rate * global_batch_size / self.reference_batch_size
        return learning_rate


@keras.saving.register_keras_serializable(package="fracture")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ~0 to `peak` over `warmup_steps`, then cosine decay to `floor`.

    Args:
        peak: the learning rate reached at the end of warm-up.
        total_steps: steps of the whole phase (warm-up included).
        warmup_steps: steps of linear warm-up.
        floor: the final learning rate.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, floor: float = 0.0):
        self.peak = float(peak)
        self.total_steps = int(max(total_steps, 1))
        self.warmup_steps = int(min(max(warmup_steps, 0), self.total_steps - 1))
        self.floor = float(floor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak * (step + 1.0) / max(self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        cosine = self.floor + 0.5 * (self.peak - self.floor) * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps, "floor": self.floor}


def build_optimizer(
    cfg: OptimizerConfig, learning_rate: float, steps_per_epoch: int, epochs: int, global_batch_size: int
) -> keras.optimizers.Optimizer:
    """AdamW for one training phase.

    Args:
        learning_rate: the phase's base rate (`learning_rate` or `fine_tune_learning_rate`).
        steps_per_epoch, epochs: the phase's length, for the cosine schedule.
        global_batch_size: for the optional linear LR scaling.
    """
    peak = cfg.scaled(learning_rate, global_batch_size)
    if cfg.schedule == "cosine":
        rate = WarmupCosine(
            peak, steps_per_epoch * epochs, int(round(cfg.warmup_epochs * steps_per_epoch)), cfg.min_learning_rate
        )
    else:  # "plateau" adapts a plain float rate through the ReduceLROnPlateau callback
        rate = peak
    return keras.optimizers.AdamW(learning_rate=rate, weight_decay=cfg.weight_decay, clipnorm=cfg.clipnorm)


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The rate the optimizer applies at its current step (schedules evaluated)."""
    rate = optimizer.learning_rate
    return float(ops.convert_to_numpy(rate))
