"""DetectionLoss: sane first value thanks to the prior, background-only batches, serialization,
and a tiny model that overfits two images through the ordinary compile/fit loop."""

import keras
import numpy as np
import pytest

from fracture.models.classifier import ModelConfig, build_model
from fracture.models.detection import (
    DetectionConfig,
    DetectionLoss,
    build_detection_losses,
    num_locations,
)
from fracture.models.losses import LossConfig

SIZE, K = 64, 3
TINY = {"backbone": "small_cnn", "weights": None, "box_head": "dense", "neck_width": 16, "head_convs": 1, "detection": {"norm_groups": 4}, "dropout": 0.0}
PAD = [-1.0] * 5


def truth():
    """Two images: two boxes (one small), and one box plus padding."""
    return np.asarray(
        [
            [[0.1, 0.1, 0.45, 0.5, 0], [0.6, 0.55, 0.72, 0.7, 2], PAD],
            [[0.3, 0.2, 0.8, 0.6, 1], PAD, PAD],
        ],
        np.float32,
    )


@pytest.fixture(scope="module")
def model_and_images():
    keras.utils.set_random_seed(0)
    fm = build_model(ModelConfig(**TINY), K, SIZE)
    images = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    return fm, images


def test_first_loss_is_about_one_per_term_not_hundreds(model_and_images):
    fm, images = model_and_images
    dense = fm.model(images, training=False)["detections"]
    parts = {k: float(np.mean(v)) for k, v in DetectionLoss(SIZE).components(truth(), dense).items()}
    assert 0.5 < parts["class"] < 2.0, parts  # ~ alpha * log(1 / 0.01) per positive, background ~0
    assert 0.0 < parts["box"] < 2 * 2.0 and 0.0 < parts["quality"] < 2.0, parts
    assert float(DetectionLoss(SIZE)(truth(), dense)) < 8.0


def test_without_the_prior_the_first_class_loss_is_much_larger(model_and_images):
    fm, images = model_and_images
    layer = fm.heads.get_layer("head_class_logits")
    kept = layer.bias.numpy()
    layer.bias.assign(np.zeros_like(kept))
    try:
        dense = fm.model(images, training=False)["detections"]
        no_prior = float(np.mean(DetectionLoss(SIZE).components(truth(), dense)["class"]))
    finally:
        layer.bias.assign(kept)
    assert no_prior > 5.0


def test_background_only_batch_has_a_class_loss_and_nothing_else(model_and_images):
    fm, images = model_and_images
    dense = fm.model(images, training=False)["detections"]
    parts = DetectionLoss(SIZE).components(np.full((2, 3, 5), -1.0, np.float32), dense)
    assert float(np.min(parts["class"])) > 0.0
    assert float(np.max(np.abs(parts["box"]))) == 0.0 and float(np.max(np.abs(parts["quality"]))) == 0.0


def test_loss_round_trips_through_keras_serialization():
    loss = DetectionLoss(SIZE, (8, 16, 32), {"center_radius": 1.5}, {"box": "ciou", "box_weight": 3.0})
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, DetectionLoss)
    assert again.get_config() == loss.get_config() and again.terms.box == "ciou" and again.assigner.center_radius == 1.5
    dense = np.random.default_rng(1).normal(size=(2, num_locations(SIZE, (8, 16, 32)), 5 + K)).astype("float32")
    assert float(again(truth(), dense)) == pytest.approx(float(loss(truth(), dense)), rel=1e-6)


def test_wrong_image_size_is_an_error():
    dense = np.zeros((2, num_locations(128, (8, 16, 32)), 5 + K), np.float32)
    with pytest.raises(ValueError, match="locations"):
        DetectionLoss(SIZE)(truth(), dense)


def test_a_tiny_detector_overfits_two_images_with_compile_and_fit():
    keras.utils.set_random_seed(1)
    fm = build_model(ModelConfig(**TINY), K, SIZE)
    images = np.random.default_rng(2).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    losses, weights = build_detection_losses(LossConfig(), DetectionConfig(), SIZE, (8, 16, 32))
    assert set(losses) == {"class", "detections"} and set(weights) == {"class", "detections"}
    fm.model.compile(keras.optimizers.Adam(3e-3), loss=losses, loss_weights=weights)
    targets = {"class": np.eye(K, dtype="float32")[[0, 1]], "detections": truth()}
    history = fm.model.fit(images, targets, batch_size=2, epochs=40, verbose=0).history
    first, last = history["detections_loss"][0], history["detections_loss"][-1]
    assert last < 0.5 * first, (first, last)
