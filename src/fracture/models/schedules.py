"""Learning-rate schedules that saved models reference.

A `.keras` file saved during training carries its optimizer, and so its schedule: the
schedule lives here, beside the layers, losses and metrics, so that loading a model needs
the models layer only (fracture.runs.load_model_file), never the training code.
"""

from __future__ import annotations

import math

import keras
from keras import ops


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
