"""Hand-made assignment cases at 64 px: level 0 is an 8x8 grid (points 4, 12, ..., 60 px),
level 1 is 4x4 (8, 24, 40, 56 px), level 2 is 2x2 (16, 48 px); N = 64 + 16 + 4."""

import numpy as np
import pytest

from fracture.models.detection import AssignerConfig, Predictions, anchor_points, assign

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


# Task-aligned assignment: the positives follow the head's current predictions.
NUM_CLASSES = 3
ELSEWHERE = px(0, 56, 4, 60)  # a tiny box in a corner: IoU 0 with every box below


def predictions(overrides: dict, score: float = 0.5):
    """Every location predicts ELSEWHERE at class score `score`, except `overrides`:
    location -> (box in px, score)."""
    boxes = np.tile(np.asarray(ELSEWHERE, np.float32), (len(ANCHORS.points), 1))
    scores = np.full((len(ANCHORS.points), NUM_CLASSES), score, np.float32)
    for location, (box, location_score) in overrides.items():
        boxes[location], scores[location] = px(*box), location_score
    return Predictions(boxes=boxes[None], class_scores=scores[None])


def run_aligned(rows, overrides, topk=2, nearest_positive=True):
    cfg = AssignerConfig(kind="task_aligned", topk=topk, nearest_positive=nearest_positive)
    result = assign(np.asarray([rows], np.float32), ANCHORS, SIZE, cfg, predictions(overrides))
    return set(np.flatnonzero(np.asarray(result.positive)[0])), np.asarray(result.classes)[0]


def test_task_aligned_picks_the_locations_inside_the_box_that_already_predict_it_best():
    box = (16, 16, 48, 48)
    good = {level0(2, 2): (box, 0.9), level1(1, 2): ((18, 18, 48, 48), 0.9), level0(4, 4): ((20, 20, 40, 40), 0.9)}
    positives, classes = run_aligned([[*px(*box), 1]], good, topk=2)
    assert positives == {level0(2, 2), level1(1, 2)}  # IoU 1.0 and 0.88 beat 0.39
    assert all(classes[i] == 1 for i in positives)


def test_task_aligned_weighs_the_score_of_the_box_class():
    box = (16, 16, 48, 48)
    # Same IoU at both; only the class-2 score differs (the override sets all classes).
    overrides = {level0(2, 2): (box, 0.05), level0(3, 3): (box, 0.9)}
    assert run_aligned([[*px(*box), 2]], overrides, topk=1)[0] == {level0(3, 3)}


def test_task_aligned_never_picks_a_location_outside_the_box():
    box = (16, 16, 32, 32)
    perfect_outside = {level0(6, 6): (box, 0.99)}  # point (52, 52): outside the box
    inside = {level0(2, 2), level0(2, 3), level0(3, 2), level0(3, 3), level1(1, 1)}  # all at metric 0
    positives, _ = run_aligned([[*px(*box), 0]], perfect_outside, topk=4)
    assert len(positives) == 4 and positives < inside
    assert run_aligned([[*px(*box), 0]], perfect_outside, topk=10)[0] == inside  # fewer candidates than k


def test_task_aligned_gives_a_box_between_points_its_nearest_point():
    tiny = [[*px(30, 30, 33, 33), 1]]
    assert run_aligned(tiny, {})[0] == {level0(3, 3)}
    assert run_aligned(tiny, {}, nearest_positive=False)[0] == set()


def test_task_aligned_gives_a_shared_location_to_the_box_its_prediction_overlaps_most():
    big, small = (0, 0, 48, 48), (16, 16, 32, 32)
    shared = level0(2, 2)  # point (20, 20): inside both
    for predicted, owner in ((big, 0), (small, 1)):
        positives, classes = run_aligned([[*px(*big), 0], [*px(*small), 1]], {shared: (predicted, 0.9)}, topk=1)
        assert shared in positives and classes[shared] == owner


@pytest.mark.parametrize("rows", [[PAD], [PAD, PAD, PAD]])
def test_task_aligned_leaves_an_image_without_boxes_all_background(rows):
    assert run_aligned(rows, {level0(2, 2): ((16, 16, 32, 32), 0.9)})[0] == set()


def test_task_aligned_without_predictions_is_refused_by_name():
    with pytest.raises(ValueError, match="task_aligned"):
        assign(np.asarray([[[*px(16, 16, 32, 32), 0]]], np.float32), ANCHORS, SIZE, AssignerConfig(kind="task_aligned"))


@pytest.mark.parametrize("bad", [{"kind": "atss"}, {"topk": 0}])
def test_assigner_config_rejects_an_unknown_kind_or_empty_topk(bad):
    with pytest.raises(ValueError, match="model.detection.assigner"):
        AssignerConfig(**bad)
