"""AdamW with gradient clipping, and its learning-rate schedule (`WarmupCosine`, which lives
with the models because saved `.keras` files reference it)."""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import ops

from fracture.models.schedules import WarmupCosine

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
    fine_tune_warmup_epochs: float | None = None
    min_learning_rate: float = 1e-6
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    scale_lr: str = "none"
    reference_batch_size: int = 32
    ema_momentum: float | None = None

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"model.optimizer.schedule={self.schedule!r}; expected one of {SCHEDULES}.")
        if self.scale_lr not in ("none", "linear"):
            raise ValueError(f"model.optimizer.scale_lr={self.scale_lr!r}; expected none or linear.")
        if self.ema_momentum is not None and not 0.0 < self.ema_momentum < 1.0:
            raise ValueError(f"model.optimizer.ema_momentum={self.ema_momentum}; expected null (off) or a value in (0, 1).")
        for key in ("warmup_epochs", "fine_tune_warmup_epochs"):
            if (getattr(self, key) or 0) < 0:
                raise ValueError(f"model.optimizer.{key}={getattr(self, key)}; expected >= 0.")

    def phase_rate(self, after_frozen_phase: bool) -> tuple[float, float]:
        """A phase's base learning rate and warm-up epochs. Fine-tuning after a frozen phase
        takes `fine_tune_learning_rate` and `fine_tune_warmup_epochs` (null: `warmup_epochs`):
        its heads are already trained, so only the backbone's first Adam steps may need a
        ramp, and in a short run a one-epoch ramp is a third of fine-tuning. Without a
        frozen phase the one phase takes `learning_rate` and `warmup_epochs`."""
        if not after_frozen_phase:
            return self.learning_rate, self.warmup_epochs
        warmup = self.warmup_epochs if self.fine_tune_warmup_epochs is None else self.fine_tune_warmup_epochs
        return self.fine_tune_learning_rate, warmup

    def scaled(self, learning_rate: float, global_batch_size: int) -> float:
        """Apply the linear scaling rule when `scale_lr=linear` (see fracture.training.distribute)."""
        if self.scale_lr == "linear":
            return learning_rate * global_batch_size / self.reference_batch_size
        return learning_rate


def build_optimizer(
    cfg: OptimizerConfig, learning_rate: float, steps_per_epoch: int, epochs: int, global_batch_size: int,
    warmup_epochs: float | None = None,
) -> keras.optimizers.Optimizer:
    """AdamW for one training phase.

    Args:
        learning_rate: the phase's base rate (`learning_rate` or `fine_tune_learning_rate`).
        steps_per_epoch, epochs: the phase's length, for the cosine schedule.
        global_batch_size: for the optional linear LR scaling.
        warmup_epochs: the phase's warm-up (`OptimizerConfig.phase_rate`); None: `cfg.warmup_epochs`.
    """
    peak = cfg.scaled(learning_rate, global_batch_size)
    warmup = cfg.warmup_epochs if warmup_epochs is None else warmup_epochs
    if cfg.schedule == "cosine":
        rate = WarmupCosine(peak, steps_per_epoch * epochs, int(round(warmup * steps_per_epoch)), cfg.min_learning_rate)
    else:  # "plateau" adapts a plain float rate through the ReduceLROnPlateau callback
        rate = peak
    # ema_momentum: the optimizer keeps a moving average of the weights (saved with its state,
    # so a resumed run continues it); WeightAverage scores and publishes it at each epoch's end
    ema = {"use_ema": True, "ema_momentum": cfg.ema_momentum} if cfg.ema_momentum is not None else {}
    return keras.optimizers.AdamW(learning_rate=rate, weight_decay=cfg.weight_decay, clipnorm=cfg.clipnorm, **ema)


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The rate the optimizer applies at its current step (schedules evaluated)."""
    rate = optimizer.learning_rate
    return float(ops.convert_to_numpy(rate))
