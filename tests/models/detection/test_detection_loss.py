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
from fracture.models.detection.anchors import anchor_points
from fracture.models.detection.assigner import assign
from fracture.models.detection.config import AssignerConfig, DetectionLossConfig
from fracture.models.detection.loss import quality_focal_loss
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


@pytest.mark.parametrize("assigner, class_loss", [("center_sampling", "focal"), ("task_aligned", "quality_focal")])
def test_a_tiny_detector_overfits_two_images_with_compile_and_fit(assigner, class_loss):
    keras.utils.set_random_seed(1)
    fm = build_model(ModelConfig(**TINY), K, SIZE)
    images = np.random.default_rng(2).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    detection = DetectionConfig(assigner=AssignerConfig(kind=assigner), loss=DetectionLossConfig(class_loss=class_loss))
    losses, weights = build_detection_losses(LossConfig(), detection, SIZE, (8, 16, 32))
    assert set(losses) == {"class", "detections"} and set(weights) == {"class", "detections"}
    fm.model.compile(keras.optimizers.Adam(3e-3), loss=losses, loss_weights=weights)
    targets = {"class": np.eye(K, dtype="float32")[[0, 1]], "detections": truth()}
    history = fm.model.fit(images, targets, batch_size=2, epochs=40, verbose=0).history
    first, last = history["detections_loss"][0], history["detections_loss"][-1]
    assert last < 0.5 * first, (first, last)


def _dense_with_boxes_shrunk(shrink: float, class_probability: float) -> np.ndarray:
    """One image whose every location predicts the first true box of `truth()`, each ltrb
    distance scaled by `shrink` about its own point (shrink 0.5: a box of half the width and
    height inside the true one, IoU 0.25), and the box's class at `class_probability` on the
    assigned (positive) locations, background elsewhere."""
    anchors = anchor_points(SIZE, (8, 16, 32))
    points, box = anchors.points, truth()[0, 0, :4]
    positive = np.asarray(assign(truth()[:1, :1], anchors, SIZE, AssignerConfig()).positive)[0] > 0
    ltrb = np.concatenate([points - box[:2], box[2:] - points], axis=-1) * shrink
    logits = np.full((len(points), K), -10.0, np.float32)
    logits[positive, 0] = np.log(class_probability / (1.0 - class_probability))
    return np.concatenate([ltrb, np.zeros((len(points), 1)), logits], axis=-1)[None].astype(np.float32)


@pytest.mark.parametrize("class_loss, best", [("focal", 0.95), ("quality_focal", 0.25)])
def test_quality_focal_targets_the_box_iou_where_focal_targets_one(class_loss, best):
    """Boxes at IoU 0.25: quality focal loss is lowest when the class score says 0.25, focal
    loss when it says "certain" - the point of quality_focal is that poor boxes score low."""
    loss = DetectionLoss(SIZE, terms={"class_loss": class_loss})
    one_box = truth()[:1, :1]
    class_term = {p: float(loss.components(one_box, _dense_with_boxes_shrunk(0.5, p))["class"][0]) for p in (0.25, 0.95)}
    assert min(class_term, key=class_term.get) == best, class_term


def test_quality_focal_loss_is_zero_where_the_probability_equals_the_soft_target():
    targets = np.array([0.0, 0.25, 0.8, 1.0], np.float32)
    logits = np.log(np.clip(targets, 1e-7, 1 - 1e-7) / np.clip(1.0 - targets, 1e-7, 1.0))
    assert np.allclose(quality_focal_loss(targets, logits, 2.0), 0.0, atol=1e-6)
    for shift in (-1.0, 1.0):  # a soft target is missed from either side
        assert np.all(np.asarray(quality_focal_loss(targets, logits + shift, 2.0))[1:3] > 1e-3)


def test_unknown_class_loss_is_rejected_by_name():
    with pytest.raises(ValueError, match="class_loss"):
        DetectionLossConfig(class_loss="softmax")
