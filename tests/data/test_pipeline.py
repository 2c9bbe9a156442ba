import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from fracture.data.config import AugmentConfig, DataConfig
from fracture.data.index import NO_BOX, Sample
from fracture.data.pipeline import BoxAugmenter, make_dataset, resize_with_boxes


@pytest.fixture
def samples(tmp_path):
    """A wide image with a white square at a known place, a tall negative, a grayscale PNG."""
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[10:20, 8:24] = 255  # x 0.1-0.3, y 0.25-0.5
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.fromarray(np.zeros((80, 40, 3), np.uint8)).save(tmp_path / "tall.jpg")
    Image.fromarray(np.full((30, 30), 128, np.uint8)).save(tmp_path / "gray.png")
    return [
        Sample(str(tmp_path / "wide.png"), 0, (0.1, 0.25, 0.3, 0.5), True, 1),
        Sample(str(tmp_path / "tall.jpg"), 2, NO_BOX, False, 0),
        Sample(str(tmp_path / "gray.png"), 1, (0.2, 0.2, 0.8, 0.8), True, 1),
    ]


def config(tmp_path, **kw):
    return DataConfig(root=str(tmp_path), image_size=32, batch_size=3, cache="memory", **kw)


def test_shapes_dtypes_and_masks(samples, tmp_path):
    ds = make_dataset(samples, num_classes=3, cfg=config(tmp_path), training=False, class_weights=[1.0, 2.0, 0.5])
    images, targets, weights = next(iter(ds))
    assert images.shape == (3, 32, 32, 3) and images.dtype == tf.float32
    assert float(tf.reduce_max(images)) <= 255.0
    assert targets["class"].shape == (3, 3) and targets["box"].shape == (3, 4)
    np.testing.assert_array_equal(targets["class"].numpy().argmax(1), [0, 2, 1])
    np.testing.assert_array_equal(weights["box"].numpy(), [1, 0, 1])
    np.testing.assert_allclose(weights["class"].numpy(), [1.0, 0.5, 2.0])
    np.testing.assert_array_equal(targets["box"].numpy()[1], [0, 0, 0, 0])


def test_letterbox_moves_box_with_the_pixels(samples, tmp_path):
    image = tf.io.decode_png(tf.io.read_file(samples[0].image_path), channels=3)
    out, box = resize_with_boxes(image, tf.constant(samples[0].box), 80, "letterbox")
    # 80x40 -> 80x40 with 20 px bars above and below: y is squeezed into [0.25, 0.75].
    np.testing.assert_allclose(box.numpy(), [0.1, 0.25 * 0.5 + 0.25, 0.3, 0.5 * 0.5 + 0.25], atol=1e-6)
    x1, y1, x2, y2 = (box.numpy() * 80).round().astype(int)
    patch = out.numpy()[y1:y2, x1:x2, 0]
    assert patch.mean() > 240 and out.numpy()[:20].max() == 0
    stretched, same = resize_with_boxes(image, tf.constant(samples[0].box), 32, "stretch")
    assert stretched.shape == (32, 32, 3)
    np.testing.assert_allclose(same.numpy(), samples[0].box)


def test_horizontal_flip_moves_the_box():
    augmenter = BoxAugmenter(AugmentConfig(rotation=0, translation=0, zoom=0, brightness=0, contrast=0), 64, seed=0)
    images = tf.zeros((16, 64, 64, 3))
    boxes = tf.constant([[0.1, 0.2, 0.3, 0.4]] * 16)
    _, out = augmenter(images, boxes, tf.ones(16))
    out = out.numpy()
    flipped = np.isclose(out[:, 0], 0.7, atol=1e-5)
    assert flipped.any() and (~flipped).any(), "16 random flips should include both outcomes"
    np.testing.assert_allclose(out[flipped], [[0.7, 0.2, 0.9, 0.4]] * flipped.sum(), atol=1e-5)
    np.testing.assert_allclose(out[~flipped], [[0.1, 0.2, 0.3, 0.4]] * (~flipped).sum(), atol=1e-5)


def test_full_augmentation_keeps_boxes_near_and_negatives_zero():
    augmenter = BoxAugmenter(AugmentConfig(horizontal_flip=False), 64, seed=1)
    boxes = tf.constant([[0.3, 0.3, 0.6, 0.6], [0, 0, 0, 0]] * 4)
    images, out = augmenter(tf.random.uniform((8, 64, 64, 3), 0, 255), boxes, tf.constant([1.0, 0.0] * 4))
    out = out.numpy()
    assert np.all(np.isfinite(out)) and float(tf.reduce_max(images)) <= 255
    np.testing.assert_array_equal(out[1::2], 0)
    assert np.abs(out[0::2] - [0.3, 0.3, 0.6, 0.6]).max() < 0.15


def test_training_pipeline_with_file_cache_runs_two_epochs(samples, tmp_path):
    cfg = config(tmp_path)
    ds = make_dataset(samples, 3, cfg, training=True, cache=str(tmp_path / "cache" / "train"))
    for _ in range(2):
        batches = list(ds)
        assert sum(int(b[0].shape[0]) for b in batches) == 3
    assert any(p.name.startswith("train") for p in (tmp_path / "cache").iterdir())


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
@pytest.mark.parametrize("height, width", [(60, 100), (100, 60), (80, 80)])
def test_model_box_maps_back_to_the_original_image(mode, height, width):
    from fracture.data.pipeline import model_box_to_image

    box = np.array([0.1, 0.2, 0.7, 0.9], np.float32)
    _, on_model = resize_with_boxes(tf.zeros((height, width, 3)), tf.constant(box), 64, mode)
    np.testing.assert_allclose(model_box_to_image(on_model.numpy(), height, width, 64, mode), box, atol=1e-5)
