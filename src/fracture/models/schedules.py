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

    The length can be shortened while training (`shorten_to`): a time budget that cuts a
    phase short should still end it at `floor`, not halfway down the cosine. The length is
    therefore a variable that the compiled train step reads, not a traced constant.

    Args:
        peak: the learning rate reached at the end of warm-up.
        total_steps: steps of the whole phase (warm-up included).
        warmup_steps: steps of linear warm-up.
        floor: the final learning rate.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, floor: float = 0.0):
        self.peak = float(peak)
        total_steps = int(max(total_steps, 1))
        self.warmup_steps = int(min(max(warmup_steps, 0), total_steps - 1))
        self.floor = float(floor)
        self._total = keras.Variable(float(total_steps), trainable=False, dtype="float32", name="schedule_total_steps")

    @property
    def total_steps(self) -> int:
        return int(ops.convert_to_numpy(self._total))

    def shorten_to(self, total_steps: int) -> bool:
        """End the cosine after `total_steps` (never past the current end, never inside the
        warm-up); returns whether the schedule changed."""
        total = max(int(total_steps), self.warmup_steps + 1)
        if total >= self.total_steps:
            return False
        self._total.assign(float(total))
        return True

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak * (step + 1.0) / max(self.warmup_steps, 1)
        decay_steps = ops.maximum(self._total - self.warmup_steps, 1.0)
        progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = self.floor + 0.5 * (self.peak - self.floor) * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps, "floor": self.floor}
