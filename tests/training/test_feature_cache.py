"""The frozen-backbone feature cache: training the heads on cached features is the same
computation as training the end-to-end model with the backbone frozen."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from fracture.models.classifier import ModelConfig, build_model, set_backbone_trainable
from fracture.models.losses import LossConfig, build_losses
from fracture.training.feature_cache import choose_cache_mode, compute_features, feature_bytes, feature_dataset
from fracture.training.optim import OptimizerConfig, build_optimizer

N, SIZE, C, BATCH = 16, 32, 3, 4


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (N, SIZE, SIZE, 3)).astype("float32")
    has_box = (np.arange(N) % 3 != 0).astype("float32")
    targets = {
        "class": np.eye(C, dtype="float32")[rng.integers(0, C, N)],
        "box": (np.sort(rng.uniform(0, 1, (N, 2, 2)), axis=1).transpose(0, 2, 1).reshape(N, 4)[:, [0, 2, 1, 3]] * has_box[:, None]).astype("float32"),
    }
    weights = {"class": rng.uniform(0.5, 2, N).astype("float32"), "box": has_box}
    return images, targets, weights


def _model():
    keras.utils.set_random_seed(7)
    fm = build_model(ModelConfig(backbone="small_cnn", weights=None, dropout=0.0, attention_gate=True), C, SIZE)
    set_backbone_trainable(fm.backbone, 0)
    return fm


def _compile(model):
    losses, loss_weights = build_losses(LossConfig())
    optimizer = build_optimizer(OptimizerConfig(schedule="constant"), 1e-2, N // BATCH, 1, BATCH)
    model.compile(optimizer=optimizer, loss=losses, loss_weights=loss_weights)


@pytest.mark.parametrize("storage", ["memory", "file"])
def test_heads_trained_on_cached_features_match_end_to_end_frozen_training(data, tmp_path, storage):
    images, targets, weights = data
    image_ds = tf.data.Dataset.from_tensor_slices((images, targets, weights)).batch(BATCH)

    end_to_end = _model()
    _compile(end_to_end.model)
    end_to_end.model.fit(image_ds, epochs=2, shuffle=False, verbose=0)

    cached_run = _model()
    cached = compute_features(cached_run.backbone, image_ds, tmp_path / "features" if storage == "file" else None)
    assert cached.features.shape == (N, 4, 4, 96)
    assert isinstance(cached.features, np.memmap) == (storage == "file")
    _compile(cached_run.heads)
    cached_run.heads.fit(feature_dataset(cached, BATCH, shuffle=False, seed=0), epochs=2, shuffle=False, verbose=0)

    a, b = end_to_end.model(images), cached_run.model(images)
    untrained = _model().model(images)
    for key in ("class", "box"):
        moved = np.abs(np.asarray(untrained[key]) - np.asarray(a[key])).max()
        differ = np.abs(np.asarray(a[key]) - np.asarray(b[key])).max()
        assert differ < 1e-6 and moved > 1e-3, (key, moved, differ)
    cached.release()
    assert not (tmp_path / "features").exists()


def test_file_cache_shuffles_reproducibly_and_keeps_rows_aligned(data, tmp_path):
    images, targets, weights = data
    image_ds = tf.data.Dataset.from_tensor_slices((images, targets, weights)).batch(BATCH)
    fm = _model()
    cached = compute_features(fm.backbone, image_ds, tmp_path / "f")
    in_memory = compute_features(fm.backbone, image_ds)
    np.testing.assert_allclose(np.asarray(cached.features), in_memory.features, atol=1e-6)
    ds = feature_dataset(cached, BATCH, shuffle=True, seed=3)
    epoch = list(ds)
    lookup = {round(float(f.sum()), 3): c for f, c in zip(in_memory.features, in_memory.targets["class"])}
    for features, batch_targets, _ in epoch:
        for f, c in zip(features.numpy(), batch_targets["class"].numpy()):
            np.testing.assert_array_equal(lookup[round(float(f.sum()), 3)], c)
    assert sum(len(b[0]) for b in epoch) == N


def test_cache_mode_choice():
    assert choose_cache_mode("auto", 2**30, 4.0) == "memory"
    assert choose_cache_mode("auto", 5 * 2**30, 4.0) == "file"
    assert choose_cache_mode("off", 1, 4.0) == "off"
    with pytest.raises(ValueError, match="trainer.feature_cache"):
        choose_cache_mode("disk", 1, 4.0)
    assert feature_bytes(_model().backbone, 10) == 10 * 4 * 4 * 96 * 4


@pytest.mark.parametrize("storage", ["memory", "file"])
def test_a_multi_output_backbone_caches_every_level_and_any_target_keys(tmp_path, storage):
    """The detector's backbone has one output per stride; its targets are not {"class", "box"}."""
    images = keras.Input((SIZE, SIZE, 3))
    c3 = keras.layers.Conv2D(4, 3, strides=2, padding="same")(images)
    c4 = keras.layers.Conv2D(6, 3, strides=2, padding="same")(c3)
    backbone = keras.Model(images, [c3, c4])
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 255, (N, SIZE, SIZE, 3)).astype("float32")
    targets = {"class": np.eye(C, dtype="float32")[rng.integers(0, C, N)], "detections": rng.uniform(-1, 1, (N, 5, 5)).astype("float32")}
    weights = {"class": np.ones(N, "float32"), "detections": np.ones(N, "float32")}
    ds = tf.data.Dataset.from_tensor_slices((x, targets, weights)).batch(BATCH)
    cached = compute_features(backbone, ds, tmp_path / "f" if storage == "file" else None)
    assert [level.shape for level in cached.features] == [(N, 16, 16, 4), (N, 8, 8, 6)]
    assert feature_bytes(backbone, N) == N * 4 * (16 * 16 * 4 + 8 * 8 * 6)
    expected = [np.asarray(level) for level in backbone(x)]
    (levels, batch_targets, _), *_ = list(feature_dataset(cached, N, shuffle=False, seed=0))
    for got, want in zip(levels, expected):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    np.testing.assert_array_equal(batch_targets["detections"].numpy(), targets["detections"])
