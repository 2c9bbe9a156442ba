"""Feature-cache speed-up measurement (scripts/benchmark_feature_cache.py; never in tests).

Compares, for a frozen backbone, an epoch of end-to-end training (the backbone recomputed
on every image, every epoch) with an epoch of head training on cached features. The first
epoch of each is excluded: it pays for graph compilation (and, end to end, for decoding).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np

from fracture.models.classifier import FractureModel, set_backbone_trainable
from fracture.models.losses import LossConfig, build_losses
from fracture.training.feature_cache import compute_features, feature_dataset
from fracture.training.optim import OptimizerConfig, build_optimizer


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


@dataclass
class FeatureCacheBenchmark:
    images: int
    recompute_epoch_s: list
    feature_extraction_s: float
    cached_epoch_s: list

    @property
    def speedup(self) -> float:
        """Median recompute epoch over median cached epoch (first epochs excluded)."""
        return float(np.median(self.recompute_epoch_s[1:]) / np.median(self.cached_epoch_s[1:]))


def benchmark_feature_cache(fm: FractureModel, image_ds, batch_size: int, epochs: int, seed: int,
                            losses: tuple[dict, dict] | None = None) -> FeatureCacheBenchmark:
    """Time `epochs` epochs both ways on the same (unaugmented, image-cached) dataset.

    Args:
        losses: `(losses, loss_weights)` of the model's outputs (default: the single-box
            model's, `build_losses(LossConfig())`; a detector needs `build_model_losses`).
    """
    set_backbone_trainable(fm.backbone, 0)
    losses, loss_weights = losses or build_losses(LossConfig())
    steps = sum(1 for _ in image_ds)
    images = sum(int(b[0].shape[0]) for b in image_ds)  # also fills the dataset's image cache

    def compile_(model):
        model.compile(
            optimizer=build_optimizer(OptimizerConfig(), 1e-3, steps, epochs, batch_size), loss=losses, loss_weights=loss_weights
        )

    timer = EpochTimer()
    compile_(fm.model)
    fm.model.fit(image_ds, epochs=epochs, callbacks=[timer], shuffle=False, verbose=0)
    recompute = timer.seconds

    start = time.perf_counter()
    cached = compute_features(fm.backbone, image_ds)
    extraction = time.perf_counter() - start
    timer = EpochTimer()
    compile_(fm.heads)
    fm.heads.fit(feature_dataset(cached, batch_size, True, seed), epochs=epochs, callbacks=[timer], shuffle=False, verbose=0)
    return FeatureCacheBenchmark(images, recompute, extraction, timer.seconds)
