"""Hand-made assignment cases at 64 px: level 0 is an 8x8 grid (points 4, 12, ..., 60 px),
level 1 is 4x4 (8, 24, 40, 56 px), level 2 is 2x2 (16, 48 px); N = 64 + 16 + 4."""

import numpy as np
import pytest

from fracture.models.detection import AssignerConfig, anchor_points, assign

SIZE = 64
ANCHORS = anchor_points(SIZE, (8, 16, 32))
PAD = [-1.0] * 5


def px(*values):
    return [v / SIZE for v in values]


def run(rows, cfg=None):
    truth = np.asarray([rows], np.float32)
    result = assign(truth, ANCHORS, SIZE, cfg or AssignerConfig())
    positive = np.asarray(result.positive)[0]
    return set(np.flatnonzero(positive)), np.asarray(result.classes)[0], np.asarray(result.boxes)[0]


def level0(row, col):
    return row * 8 + col


def level1(row, col):
    return 64 + row * 4 + col


def test_anchor_points_are_cell_centres_level_by_level_row_major():
    assert ANCHORS.points.shape == (84, 2)
    np.testing.assert_allclose(ANCHORS.points[level0(0, 1)] * SIZE, [12, 4])
    np.testing.assert_allclose(ANCHORS.points[level1(2, 0)] * SIZE, [8, 40])
    assert list(np.bincount(ANCHORS.levels)) == [64, 16, 4]


def test_one_small_box_gets_the_level0_points_inside_it():
    positives, classes, boxes = run([[*px(16, 16, 32, 32), 2]])
    assert positives == {level0(2, 2), level0(2, 3), level0(3, 2), level0(3, 3)}
    assert all(classes[i] == 2 for i in positives)
    np.testing.assert_allclose(boxes[level0(2, 2)], px(16, 16, 32, 32))


def test_a_box_goes_to_the_level_whose_regress_range_holds_its_distances():
    cfg = AssignerConfig(regress_ranges=[16.0, 32.0])
    positives, _, _ = run([[*px(0, 0, 40, 40), 0]], cfg)
    assert positives == {level1(0, 0), level1(0, 1), level1(1, 0), level1(1, 1)}


def test_center_sampling_keeps_only_points_near_the_centre_of_a_large_box():
    cfg = AssignerConfig(center_radius=0.6, regress_ranges=[1000.0, 2000.0])
    positives, _, _ = run([[*px(0, 0, 64, 64), 0]], cfg)
    assert positives == {level0(3, 3), level0(3, 4), level0(4, 3), level0(4, 4)}  # within 4.8 px of (32, 32)


def test_a_box_between_points_still_gets_its_nearest_point():
    tiny = [[*px(30, 30, 33, 33), 1]]
    positives, classes, _ = run(tiny)
    assert positives == {level0(3, 3)} and classes[level0(3, 3)] == 1  # (28, 28) is nearest (31.5, 31.5)
    assert run(tiny, AssignerConfig(nearest_positive=False))[0] == set()


def test_overlapping_boxes_give_shared_points_to_the_smaller_box():
    big, small = [*px(0, 0, 48, 48), 0], [*px(16, 16, 32, 32), 1]
    cfg = AssignerConfig(center_radius=10.0)
    positives, classes, _ = run([big, small], cfg)
    shared = {level0(2, 2), level0(2, 3), level0(3, 2), level0(3, 3)}
    assert shared < positives
    assert all(classes[i] == 1 for i in shared)
    assert all(classes[i] == 0 for i in positives - shared)
    assert run([small, big], cfg)[0] == positives  # row order does not matter


def test_padding_rows_are_ignored_wherever_they_are():
    box = [*px(16, 16, 32, 32), 2]
    alone = run([box])
    padded = run([PAD, box, PAD])
    assert padded[0] == alone[0]
    assert all(padded[1][i] == 2 for i in padded[0])


@pytest.mark.parametrize("rows", [[PAD], [PAD, PAD, PAD]])
def test_an_image_without_boxes_is_all_background(rows):
    assert run(rows)[0] == set()
