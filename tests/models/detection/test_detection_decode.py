"""Decoding a hand-made dense tensor: boxes from points + distances, scores, NMS, the layer."""

import numpy as np
import pytest

from fracture.models.detection import decode_detections, num_locations

SIZE, STRIDES, K = 64, (8, 16, 32), 3
LOW = -12.0  # a logit whose sigmoid is ~0


def dense_with(hits):
    """`hits`: (location, distances px, class, class logit, quality logit) -> (1, N, 5 + K)."""
    dense = np.full((1, num_locations(SIZE, STRIDES), 5 + K), LOW, np.float32)
    dense[..., :4] = 1.0 / SIZE
    for location, distances, cls, class_logit, quality_logit in hits:
        dense[0, location, :4] = np.asarray(distances, np.float32) / SIZE
        dense[0, location, 4] = quality_logit
        dense[0, location, 5 + cls] = class_logit
    return dense


def test_one_confident_location_decodes_to_its_box_class_and_score():
    location = 3 * 8 + 2  # level 0 point (20, 28) px
    dense = dense_with([(location, (4, 8, 12, 16), 1, 2.0, 0.0)])
    boxes, scores, classes, valid = decode_detections(dense, SIZE, STRIDES, conf=0.05, iou=0.7, max_det=5)
    assert int(valid[0]) == 1 and int(classes[0, 0]) == 1
    np.testing.assert_allclose(np.asarray(boxes[0, 0]) * SIZE, [16, 20, 32, 44], atol=1e-4)
    expected = np.sqrt(1 / (1 + np.exp(-2.0)) * 0.5)
    np.testing.assert_allclose(float(scores[0, 0]), expected, rtol=1e-5)
    assert boxes.shape == (1, 5, 4) and float(scores[0, 1]) == 0.0


def test_class_wise_nms_merges_overlapping_boxes_of_a_class_only():
    a, b = 3 * 8 + 3, 3 * 8 + 4  # neighbouring points (28, 28) and (36, 28) px
    same = dense_with([(a, (8, 8, 8, 8), 0, 3.0, 3.0), (b, (16, 8, 0.5, 8), 0, 2.0, 2.0)])
    assert int(decode_detections(same, SIZE, STRIDES, conf=0.05, iou=0.5, max_det=10)[3][0]) == 1
    different = dense_with([(a, (8, 8, 8, 8), 0, 3.0, 3.0), (b, (16, 8, 0.5, 8), 2, 2.0, 2.0)])
    assert int(decode_detections(different, SIZE, STRIDES, conf=0.05, iou=0.5, max_det=10)[3][0]) == 2


def test_ignored_class_and_low_confidence_give_no_detection():
    dense = dense_with([(10, (4, 4, 4, 4), 2, 3.0, 3.0)])
    assert int(decode_detections(dense, SIZE, STRIDES, conf=0.05, ignore_class=2)[3][0]) == 0
    assert int(decode_detections(dense, SIZE, STRIDES, conf=0.99)[3][0]) == 0


def test_wrong_location_count_is_an_error():
    with pytest.raises(ValueError, match="locations"):
        decode_detections(np.zeros((1, 10, 5 + K), np.float32), SIZE, STRIDES)
