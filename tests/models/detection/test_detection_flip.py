"""Flip test-time augmentation: the mirror pass maps back onto the right locations."""

import numpy as np
import pytest

from fracture.models.detection import decode_detections, num_locations
from fracture.models.detection.flip import merge_flip, mirror_dense

SIZE, STRIDES, K = 64, (8, 16, 32), 3
LOW = -12.0


def one_hit(location: int, distances_px, cls: int) -> np.ndarray:
    dense = np.full((1, num_locations(SIZE, STRIDES), 5 + K), LOW, np.float32)
    dense[..., :4] = 1.0 / SIZE
    dense[0, location, :4] = np.asarray(distances_px, np.float32) / SIZE
    dense[0, location, 4] = 1.0
    dense[0, location, 5 + cls] = 2.5
    return dense


def decoded(dense):
    boxes, scores, classes, valid = decode_detections(dense, SIZE, STRIDES, conf=0.05, iou=0.7, max_det=5)
    n = int(valid[0])
    return np.asarray(boxes[0, :n]), np.asarray(scores[0, :n]), np.asarray(classes[0, :n])


# (location, ltrb px): off-centre cells with lopsided boxes on each level (8x8, 4x4, 2x2 cells)
@pytest.mark.parametrize("location, distances", [
    (3 * 8 + 1, (4, 8, 20, 6)),       # level 0, cell (x=1, y=3): point (12, 28) px
    (64 + 2 * 4 + 3, (10, 4, 2, 12)),  # level 1, cell (x=3, y=2): point (56, 40) px
    (64 + 16 + 1 * 2 + 0, (6, 30, 14, 2)),  # level 2, cell (x=0, y=1): point (16, 48) px
])
def test_a_box_seen_in_the_mirror_image_decodes_to_its_mirror(location, distances):
    boxes, scores, classes = decoded(one_hit(location, distances, cls=2))
    back_boxes, back_scores, back_classes = decoded(mirror_dense(one_hit(location, distances, cls=2), SIZE, STRIDES))
    x1, y1, x2, y2 = boxes[0]
    np.testing.assert_allclose(back_boxes[0], [1 - x2, y1, 1 - x1, y2], atol=1e-6)
    np.testing.assert_allclose(back_scores, scores, rtol=1e-6)
    assert list(back_classes) == list(classes) == [2]


def test_mirroring_twice_is_the_identity():
    dense = np.random.default_rng(0).normal(size=(2, num_locations(SIZE, STRIDES), 5 + K)).astype(np.float32)
    np.testing.assert_array_equal(mirror_dense(mirror_dense(dense, SIZE, STRIDES), SIZE, STRIDES), dense)


def test_a_model_that_agrees_with_its_mirror_is_unchanged_by_the_merge():
    dense = np.random.default_rng(1).normal(size=(2, num_locations(SIZE, STRIDES), 5 + K)).astype(np.float32)
    dense[..., :4] = np.abs(dense[..., :4])
    np.testing.assert_allclose(merge_flip(dense, mirror_dense(dense, SIZE, STRIDES), SIZE, STRIDES), dense, atol=1e-4)


def test_the_merge_averages_distances_and_probabilities():
    plain = one_hit(5, (4, 4, 4, 4), cls=0)
    mirror_pass = mirror_dense(one_hit(5, (8, 4, 4, 12), cls=0), SIZE, STRIDES)
    mirror_pass[..., 5] = 0.0  # the mirror pass: class 0 at p=0.5 everywhere
    merged = merge_flip(plain, mirror_pass, SIZE, STRIDES)
    np.testing.assert_allclose(merged[0, 5, :4] * SIZE, [6, 4, 4, 8], atol=1e-5)
    p_plain = 1 / (1 + np.exp(-2.5))
    np.testing.assert_allclose(1 / (1 + np.exp(-merged[0, 5, 5])), (p_plain + 0.5) / 2, rtol=1e-5)
    assert np.isfinite(merged).all()


def test_an_image_size_the_strides_do_not_tile_is_refused_by_name():
    dense = np.zeros((1, num_locations(72, STRIDES), 5 + K), np.float32)
    with pytest.raises(ValueError, match=r"image_size.*72.*\[16, 32\]"):
        mirror_dense(dense, 72, STRIDES)
