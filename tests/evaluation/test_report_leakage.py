"""Every evaluation report says which split it evaluated and what that split shares with train."""

import pytest

from fracture.evaluation.report import leakage_paragraph

BASE = {"split": "test", "data_root": "/data/x", "split_source": {"declared_as": "test.txt", "images": "/data/x/test.txt"}}


def _leak(shared=0, exact=0, near=0):
    pair = {"splits": ["train", "test"], "paths": ["a.jpg", "b.jpg"]}
    return {
        "groups": {"groups_shared_between_splits": {"test-train": shared}},
        "duplicates": {"exact": [pair] * exact, "near": [{**pair, "score": 0.97}] * near},
    }


@pytest.mark.parametrize("shared, exact, near, caveat", [(0, 0, 0, False), (2, 0, 0, True), (0, 1, 0, True), (0, 0, 3, True)])
def test_leakage_paragraph_counts_and_caveat(shared, exact, near, caveat):
    text = "\n".join(leakage_paragraph({**BASE, "leakage": _leak(shared, exact, near)}))
    assert "Evaluated split: **test** of `/data/x` (data.yaml: `test.txt`" in text
    assert f"{shared} shared Roboflow source group(s), {exact} exact-duplicate pair(s), {near} confirmed near" in text
    assert ("Leakage caveat" in text) == caveat


def test_train_split_and_failed_check_say_so():
    assert "not checked" in leakage_paragraph({**BASE, "leakage": None})[-1]
    assert leakage_paragraph({**BASE, "leakage": {"error": "leakage check skipped: boom"}})[-1].endswith("boom")
