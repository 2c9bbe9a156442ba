"""Frozen-backbone feature cache.

A frozen backbone (BatchNorm in inference mode) is a pure function of the image, so when
the frozen phase does not augment, its features are computed once and the heads train on
them: later epochs skip the backbone entirely. Features live in memory, or in a memory-
mapped file when they would not fit (`trainer.feature_cache=file`, or `auto` above
`trainer.feature_cache_max_memory_gb`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fracture.data.pipeline import with_data_sharding

FEATURE_CACHE_MODES = ("auto", "memory", "file", "off")


@dataclass
class CachedFeatures:
    """A split's backbone features with the targets and sample weights in the same order."""

    features: np.ndarray  # (N, H, W, C) float32, or a read-only memmap
    targets: dict
    sample_weights: dict
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.features)

    def release(self) -> None:
        """Delete the backing file, if any."""
        if self.path is not None:
            self.features = None
            shutil.rmtree(self.path, ignore_errors=True)


def feature_bytes(backbone: keras.Model, num_images: int) -> int:
    """Size of the float32 feature cache for `num_images` images."""
    return int(np.prod(backbone.output.shape[1:])) * 4 * num_images


def compute_features(backbone: keras.Model, dataset: tf.data.Dataset, file_dir: Path | None = None) -> CachedFeatures:
    """Run the frozen backbone once over an unshuffled, unaugmented dataset.

    Args:
        backbone: the frozen feature extractor.
        dataset: `(images, targets, sample_weights)` batches, as `make_dataset` yields them.
        file_dir: stream features to `file_dir/features.f32` and memory-map it, instead of RAM.
    """
    feature_batches, targets, weights = [], {"class": [], "box": []}, {"class": [], "box": []}
    predict = tf.function(lambda x: backbone(x, training=False))
    raw_file, rows, shape = None, 0, None
    if file_dir is not None:
        file_dir.mkdir(parents=True, exist_ok=True)
        raw_file = (file_dir / "features.f32").open("wb")
    for images, batch_targets, batch_weights in dataset:
        features = np.asarray(keras.ops.convert_to_numpy(predict(images)), np.float32)
        shape, rows = features.shape[1:], rows + len(features)
        if raw_file is not None:
            raw_file.write(np.ascontiguousarray(features).tobytes())
        else:
            feature_batches.append(features)
        for key in targets:
            targets[key].append(batch_targets[key].numpy())
            weights[key].append(batch_weights[key].numpy())
    targets = {k: np.concatenate(v) for k, v in targets.items()}
    weights = {k: np.concatenate(v) for k, v in weights.items()}
    if raw_file is None:
        return CachedFeatures(np.concatenate(feature_batches), targets, weights)
    raw_file.close()
    features = np.memmap(file_dir / "features.f32", np.float32, "r", shape=(rows, *shape))
    return CachedFeatures(features, targets, weights, file_dir)


def feature_dataset(cached: CachedFeatures, batch_size: int, shuffle: bool, seed: int) -> tf.data.Dataset:
    """Batches of `(features, targets, sample_weights)` for training the heads alone."""
    n = len(cached)
    if cached.path is not None:
        shape = cached.features.shape[1:]

        def batches():
            order = np.random.default_rng([seed, batches.epoch]).permutation(n) if shuffle else np.arange(n)
            batches.epoch += 1
            for start in range(0, n, batch_size):
                idx = np.sort(order[start : start + batch_size])
                yield (
                    np.asarray(cached.features[idx]),
                    {k: v[idx] for k, v in cached.targets.items()},
                    {k: v[idx] for k, v in cached.sample_weights.items()},
                )

        batches.epoch = 0
        c = cached.targets["class"].shape[1]
        signature = (
            tf.TensorSpec((None, *shape), tf.float32),
            {"class": tf.TensorSpec((None, c), tf.float32), "box": tf.TensorSpec((None, 4), tf.float32)},
            {"class": tf.TensorSpec((None,), tf.float32), "box": tf.TensorSpec((None,), tf.float32)},
        )
        ds = tf.data.Dataset.from_generator(batches, output_signature=signature)
        # A known length lets Keras re-iterate it each epoch like any finite dataset.
        return with_data_sharding(ds.apply(tf.data.experimental.assert_cardinality(-(-n // batch_size))).prefetch(2))
    ds = tf.data.Dataset.from_tensor_slices((cached.features, cached.targets, cached.sample_weights))
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return with_data_sharding(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))


def choose_cache_mode(requested: str, needed_bytes: int, max_memory_gb: float) -> str:
    """Resolve `auto` to memory or file by the cache's size."""
    if requested not in FEATURE_CACHE_MODES:
        raise ValueError(f"trainer.feature_cache={requested!r}; expected one of {FEATURE_CACHE_MODES}.")
    if requested != "auto":
        return requested
    return "memory" if needed_bytes <= max_memory_gb * 2**30 else "file"
