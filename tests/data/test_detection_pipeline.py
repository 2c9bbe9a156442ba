"""multi_object_rule=all: padded detection targets in the model input frame, and
augmentation that moves every box with the pixels and counts the boxes it drops."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from fracture.data.config import AugmentConfig, DataConfig
from fracture.data.index import NO_BOX, Sample
from fracture.data.pipeline import BoxAugmenter, epoch_size, make_dataset, padded_box_rows

NO_GEOMETRY = dict(rotation=0.0, translation=0.0, zoom=0.0, brightness=0.0, contrast=0.0)


@pytest.fixture
def samples(tmp_path):
    """A wide 80x40 image with two white rectangles (class 1 larger, class 0), a negative."""
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[10:20, 8:24] = 255  # x .1-.3, y .25-.5
    wide[24:36, 48:72] = 255  # x .6-.9, y .6-.9
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "neg.png")
    boxes = ((0.6, 0.6, 0.9, 0.9), (0.1, 0.25, 0.3, 0.5))
    return [
        Sample(str(tmp_path / "wide.png"), 1, boxes[0], True, 2, boxes=boxes, box_classes=(1, 0)),
        Sample(str(tmp_path / "neg.png"), 2, NO_BOX, False, 0),
    ]


def config(tmp_path, **kw):
    return DataConfig(root=str(tmp_path), image_size=80, batch_size=2, multi_object_rule="all", max_boxes=3, **kw)


def test_padded_detection_targets_in_the_letterboxed_frame(samples, tmp_path):
    ds = make_dataset(samples, 3, config(tmp_path), training=False, class_weights=[1.0, 2.0, 0.5])
    images, targets, weights = next(iter(ds))
    assert set(targets) == {"class", "detections"} and set(weights) == {"class", "detections"}
    rows = targets["detections"].numpy()
    assert rows.shape == (2, 3, 5) and rows.dtype == np.float32
    # 80x40 -> 80x80 with 20 px bars above and below: y -> y / 2 + 0.25, x unchanged.
    np.testing.assert_allclose(rows[0, :2], [[0.6, 0.55, 0.9, 0.7, 1], [0.1, 0.375, 0.3, 0.5, 0]], atol=1e-6)
    np.testing.assert_array_equal(rows[0, 2], -1)
    np.testing.assert_array_equal(rows[1], -1)  # the negative: padding only
    for x1, y1, x2, y2, _ in rows[0, :2] * 80:
        assert images[0, round(y1) + 1:round(y2) - 1, round(x1) + 1:round(x2) - 1].numpy().min() > 200
    np.testing.assert_array_equal(targets["class"].numpy().argmax(1), [1, 2])
    np.testing.assert_allclose(weights["class"].numpy(), [2.0, 0.5])
    np.testing.assert_array_equal(weights["detections"].numpy(), [1, 1])


def test_more_boxes_than_max_boxes_is_refused_not_cut_unseen(samples):
    with pytest.raises(ValueError, match="more than data.max_boxes=1"):
        padded_box_rows(samples, max_boxes=1)


def rectangles(batch: int, size: int = 64):
    """Images with two bright rectangles each, and their rows (plus one padding row)."""
    images = np.zeros((batch, size, size, 3), np.float32)
    images[:, 8:20, 8:24] = 255
    images[:, 36:56, 40:56] = 255
    row_a, row_b = [8 / size, 8 / size, 24 / size, 20 / size, 0], [40 / size, 36 / size, 56 / size, 56 / size, 1]
    rows = np.array([[row_a, row_b, [-1] * 5]] * batch, np.float32)
    return tf.constant(images), tf.constant(rows)


def test_flip_moves_every_box_and_keeps_classes_and_padding():
    augmenter = BoxAugmenter(AugmentConfig(**NO_GEOMETRY), 64, seed=0)
    images, rows = rectangles(16)
    _, out = augmenter.augment_detections(images, rows)
    out, rows = out.numpy(), rows.numpy()
    flipped = np.isclose(out[:, 0, 0], 1 - rows[0, 0, 2], atol=1e-5)
    assert flipped.any() and (~flipped).any(), "16 random flips should include both outcomes"
    mirrored = rows[0, :2].copy()
    mirrored[:, [0, 2]] = 1 - rows[0, :2][:, [2, 0]]
    np.testing.assert_allclose(out[flipped, :2], np.broadcast_to(mirrored, (flipped.sum(), 2, 5)), atol=1e-5)
    np.testing.assert_allclose(out[~flipped, :2], np.broadcast_to(rows[0, :2], ((~flipped).sum(), 2, 5)), atol=1e-5)
    np.testing.assert_array_equal(out[:, 2], -1)
    assert augmenter.dropped_boxes == 0 and augmenter.augmented_boxes == 32


def test_flip_and_zoom_keep_each_box_on_its_bright_rectangle():
    augmenter = BoxAugmenter(AugmentConfig(**{**NO_GEOMETRY, "zoom": 0.3}), 64, seed=3)
    images, rows = rectangles(24)
    out_images, out = augmenter.augment_detections(images, rows)
    out_images, out = out_images.numpy()[..., 0], out.numpy()
    moved = 0
    for image, image_rows in zip(out_images, out):
        inside = np.zeros(image.shape, bool)
        for x1, y1, x2, y2, _ in image_rows[image_rows[:, 4] >= 0] * 64:
            box = image[int(np.ceil(y1)) + 1:int(y2) - 1, int(np.ceil(x1)) + 1:int(x2) - 1]
            assert box.size and box.mean() > 200, "the box lies on its bright rectangle"
            inside[max(int(y1) - 2, 0):int(np.ceil(y2)) + 2, max(int(x1) - 2, 0):int(np.ceil(x2)) + 2] = True
        assert (image[~inside] > 128).sum() == 0, "every bright pixel is inside a box"
        moved += not np.allclose(image_rows[:2, :4], rows.numpy()[0, :2, :4], atol=2 / 64)
    assert moved >= 12, "zoom and flip moved most boxes"


def test_boxes_pushed_out_of_the_image_become_padding_and_are_counted():
    augmenter = BoxAugmenter(AugmentConfig(**{**NO_GEOMETRY, "horizontal_flip": False, "zoom": 0.6}), 64, seed=5)
    corner = [0.0, 0.0, 0.05, 0.05, 0]
    centre = [0.4, 0.4, 0.6, 0.6, 1]
    rows = tf.constant([[corner, centre, [-1] * 5]] * 32, tf.float32)
    _, out = augmenter.augment_detections(tf.zeros((32, 64, 64, 3)), rows)
    out = out.numpy()
    dropped = out[:, 0, 4] < 0
    assert dropped.any() and (~dropped).any(), "zooming in pushes the corner box out, zooming out does not"
    np.testing.assert_array_equal(out[dropped, 0], -1)
    assert (out[:, 1, 4] == 1).all(), "the centre box always stays"
    assert augmenter.dropped_boxes == dropped.sum() and augmenter.augmented_boxes == 64
    _, again = augmenter.augment_detections(tf.zeros((32, 64, 64, 3)), rows)
    assert augmenter.dropped_boxes == dropped.sum() + (again.numpy()[:, 0, 4] < 0).sum()


def test_training_pipeline_augments_detections_and_counts_inside_tf_data(samples, tmp_path):
    augmenter = BoxAugmenter(AugmentConfig(), 80, seed=0)
    ds = make_dataset(samples, 3, config(tmp_path), training=True, augmenter=augmenter)
    for _ in range(2):
        (images, targets, _), = list(ds)
        rows = targets["detections"].numpy()
        assert images.shape == (2, 80, 80, 3) and rows.shape == (2, 3, 5)
        negative = rows[:, 0, 4] < 0
        assert negative.sum() >= 1 and np.all(rows[negative] == -1)
    assert augmenter.augmented_boxes == 4  # two real boxes per epoch, counted in the graph


def marked_samples(tmp_path, positives: int, negatives: int):
    """16x16 images whose constant grey level (1, 2, ...) names the sample; the first
    `positives` carry a box."""
    samples = []
    for i in range(positives + negatives):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((16, 16, 3), i + 1, np.uint8)).save(path)
        if i < positives:
            box = (0.25, 0.25, 0.75, 0.75)
            samples.append(Sample(str(path), 0, box, True, 1, boxes=(box,), box_classes=(0,)))
        else:
            samples.append(Sample(str(path), 1, NO_BOX, False, 0))
    return samples


def epoch_levels(ds) -> list[tuple[int, float]]:
    """(grey level, class weight) of every image of one pass over `ds`."""
    seen = []
    for images, _, weights in ds:
        seen += zip(images[:, 8, 8, 0].numpy().round().astype(int).tolist(), weights["class"].numpy().tolist())
    return seen


@pytest.mark.parametrize("rule", ["all", "largest"])
def test_negatives_per_epoch_draws_a_fresh_seeded_share_of_negatives_and_keeps_every_positive(tmp_path, rule):
    samples = marked_samples(tmp_path, positives=4, negatives=40)
    cfg = DataConfig(root=str(tmp_path), image_size=16, batch_size=8, multi_object_rule=rule, negatives_per_epoch=0.25)
    ds = make_dataset(samples, 2, cfg, training=True, class_weights=[1.0, 0.5], augment=False)
    assert int(ds.cardinality()) == 2  # 14 images in batches of 8: known to Keras
    epochs = [epoch_levels(ds)]
    for sample in samples:  # later epochs draw from the memory cache, not the files
        Path(sample.image_path).unlink()
    epochs += [epoch_levels(ds) for _ in range(3)]
    drawn = []
    for seen in epochs:
        levels = [level for level, _ in seen]
        assert sorted(level for level in levels if level <= 4) == [1, 2, 3, 4]  # every positive, once
        drawn.append(frozenset(level for level in levels if level > 4))
        assert len(drawn[-1]) == 10  # 0.25 of 40
        # a drawn negative weighs 1/0.25 times its class weight, a positive its class weight
        assert {weight for level, weight in seen} == {1.0, 2.0}
        assert all((weight == 2.0) == (level > 4) for level, weight in seen)
    assert len(set(drawn)) == 4  # a fresh draw each epoch
    assert epoch_size(samples, cfg) == 14


def test_negatives_per_epoch_draws_repeat_with_the_seed_and_evaluation_keeps_every_image(tmp_path):
    samples = marked_samples(tmp_path, positives=4, negatives=40)
    cfg = DataConfig(root=str(tmp_path), image_size=16, batch_size=8, multi_object_rule="all", negatives_per_epoch=0.25)

    def draws(ds, epochs):
        return [sorted(level for level, _ in epoch_levels(ds) if level > 4) for _ in range(epochs)]

    first = draws(make_dataset(samples, 2, cfg, training=True, augment=False), 2)
    assert draws(make_dataset(samples, 2, cfg, training=True, augment=False), 2) == first
    other_seed = DataConfig(**{**cfg.__dict__, "seed": cfg.seed + 1})
    assert draws(make_dataset(samples, 2, other_seed, training=True, augment=False), 2) != first
    everything = epoch_levels(make_dataset(samples, 2, cfg, training=False, class_weights=[1.0, 0.5]))
    assert sorted(level for level, _ in everything) == list(range(1, 45))  # evaluation: every image
    assert {weight for _, weight in everything} == {1.0, 0.5}


def test_negatives_per_epoch_without_negatives_keeps_every_image(tmp_path):
    samples = marked_samples(tmp_path, positives=5, negatives=0)
    cfg = DataConfig(root=str(tmp_path), image_size=16, batch_size=2, multi_object_rule="all", negatives_per_epoch=0.5)
    ds = make_dataset(samples, 2, cfg, training=True, augment=False)
    assert sorted(level for level, _ in epoch_levels(ds)) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_negatives_per_epoch_outside_zero_to_one_is_refused(tmp_path, fraction):
    with pytest.raises(ValueError, match="data.negatives_per_epoch"):
        DataConfig(root=str(tmp_path), negatives_per_epoch=fraction)
