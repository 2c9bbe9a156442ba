"""The reliability diagram plots what the ECE measures: each bin at (mean confidence, accuracy)."""

import numpy as np
import pytest

from fracture.evaluation import figures
from fracture.evaluation import metrics as m

BINS = 15


@pytest.fixture
def overconfident():
    """Confidences in [0.5, 1) only (the low bins stay empty), accuracy below confidence."""
    rng = np.random.default_rng(7)
    confidence = rng.uniform(0.5, 1.0, 300)
    correct = rng.random(300) < confidence**2
    return confidence, correct


def _plotted(fig):
    ax = fig.axes[0]
    (points,) = [line for line in ax.get_lines() if line.get_gid() == figures.BINS_GID]
    counts = {tuple(t.xy): int(t.get_text()) for t in ax.texts if t.get_gid() == figures.COUNT_GID}
    diagonal = [line for line in ax.get_lines() if line.get_gid() == figures.DIAGONAL_GID]
    return points.get_xydata(), counts, diagonal


def test_plotted_points_are_the_bins_of_the_raw_data(overconfident):
    confidence, correct = overconfident
    fig = figures.reliability_plot(m.expected_calibration_error(confidence, correct, BINS))
    xy, counts, diagonal = _plotted(fig)
    edges = np.linspace(0, 1, BINS + 1)
    expected = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            expected.append((confidence[inside].mean(), correct[inside].mean(), int(inside.sum())))
    assert len(xy) == len(expected) < BINS  # one point per non-empty bin; empty bins not drawn
    np.testing.assert_allclose(xy, [(c, a) for c, a, _ in expected])
    assert [counts[tuple(p)] for p in xy] == [n for _, _, n in expected]  # count labels sit on their points
    np.testing.assert_allclose(diagonal[0].get_xydata(), [[0, 0], [1, 1]])


def test_ece_recomputed_from_the_plot_equals_the_reported_one(overconfident):
    confidence, correct = overconfident
    calibration = m.expected_calibration_error(confidence, correct, BINS)
    fig = figures.reliability_plot(calibration)
    xy, counts, _ = _plotted(fig)
    n = sum(counts.values())
    assert n == len(confidence)
    from_plot = sum(counts[tuple(p)] / n * abs(p[1] - p[0]) for p in xy)
    assert from_plot == pytest.approx(calibration["ece"], abs=1e-12)
    assert calibration["ece"] > 0.05  # overconfident: a test that a flat ECE of 0 would fail
    assert f"ECE {calibration['ece']:.3f}" in fig.axes[0].get_title()
