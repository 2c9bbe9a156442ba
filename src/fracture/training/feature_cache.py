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
    """A split's backbone features with the targets and sample weights in the same order.

    Attributes:
        levels: one `(N, H, W, C)` float32 array (or read-only memmap) per backbone output: one
            for a classifier's backbone, three (strides 8/16/32) for the detector's.
        targets, sample_weights: numpy arrays keyed as the pipeline keys them.
        path: the folder of the memory-mapped files, if any.
    """

    levels: list
    targets: dict
    sample_weights: dict
    path: Path | None = None

    @property
    def features(self):
        """What the heads take: one array, or a tuple of arrays for a multi-output backbone."""
        return self.levels[0] if len(self.levels) == 1 else tuple(self.levels)

    def __len__(self) -> int:
        return len(self.levels[0])

    def release(self) -> None:
        """Delete the backing files, if any."""
        if self.path is not None:
            self.levels = []
            shutil.rmtree(self.path, ignore_errors=True)


def _outputs(backbone: keras.Model) -> list:
    return list(backbone.outputs)


def feature_bytes(backbone: keras.Model, num_images: int) -> int:
    """Size of the float32 feature cache for `num_images` images (all backbone outputs)."""
    return sum(int(np.prod(out.shape[1:])) for out in _outputs(backbone)) * 4 * num_images


def compute_features(backbone: keras.Model, dataset: tf.data.Dataset, file_dir: Path | None = None) -> CachedFeatures:
    """Run the frozen backbone once over an unshuffled, unaugmented dataset.

    Args:
        backbone: the frozen feature extractor (one output, or a list of them).
        dataset: `(images, targets, sample_weights)` batches, as `make_dataset` yields them.
        file_dir: stream features to `file_dir/features_<level>.f32` and memory-map them,
            instead of RAM.
    """
    predict = tf.function(lambda x: backbone(x, training=False))
    n_levels = len(_outputs(backbone))
    in_memory, shapes, rows = [[] for _ in range(n_levels)], [None] * n_levels, 0
    targets, weights = {}, {}
    raw_files = None
    if file_dir is not None:
        file_dir.mkdir(parents=True, exist_ok=True)
        raw_files = [(file_dir / f"features_{i}.f32").open("wb") for i in range(n_levels)]
    for images, batch_targets, batch_weights in dataset:
        outputs = predict(images)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        for i, output in enumerate(outputs):
            level = np.asarray(keras.ops.convert_to_numpy(output), np.float32)
            shapes[i] = level.shape[1:]
            if raw_files is not None:
                raw_files[i].write(np.ascontiguousarray(level).tobytes())
            else:
                in_memory[i].append(level)
        rows += len(images)
        for key in batch_targets:
            targets.setdefault(key, []).append(batch_targets[key].numpy())
            weights.setdefault(key, []).append(batch_weights[key].numpy())
    targets = {k: np.concatenate(v) for k, v in targets.items()}
    weights = {k: np.concatenate(v) for k, v in weights.items()}
    if raw_files is None:
        return CachedFeatures([np.concatenate(level) for level in in_memory], targets, weights)
    for f in raw_files:
        f.close()
    levels = [np.memmap(file_dir / f"features_{i}.f32", np.float32, "r", shape=(rows, *shapes[i])) for i in range(n_levels)]
    return CachedFeatures(levels, targets, weights, file_dir)


def feature_dataset(cached: CachedFeatures, batch_size: int, shuffle: bool, seed: int) -> tf.data.Dataset:
    """Batches of `(features, targets, sample_weights)` for training the heads alone."""
    n = len(cached)
    if cached.path is not None:

        def batches():
            order = np.random.default_rng([seed, batches.epoch]).permutation(n) if shuffle else np.arange(n)
            batches.epoch += 1
            for start in range(0, n, batch_size):
                idx = np.sort(order[start : start + batch_size])
                levels = tuple(np.asarray(level[idx]) for level in cached.levels)
                yield (
                    levels[0] if len(levels) == 1 else levels,
                    {k: v[idx] for k, v in cached.targets.items()},
                    {k: v[idx] for k, v in cached.sample_weights.items()},
                )

        batches.epoch = 0
        level_specs = tuple(tf.TensorSpec((None, *level.shape[1:]), tf.float32) for level in cached.levels)
        signature = (
            level_specs[0] if len(level_specs) == 1 else level_specs,
            {k: tf.TensorSpec((None, *v.shape[1:]), v.dtype) for k, v in cached.targets.items()},
            {k: tf.TensorSpec((None, *v.shape[1:]), v.dtype) for k, v in cached.sample_weights.items()},
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
