"""grouped_split: whole groups per split, fractions met per class, seeded."""

import numpy as np
import pytest

from fracture.data.splitting import grouped_split

FRACTIONS = {"train": 0.7, "valid": 0.15, "test": 0.15}


def _dataset(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n // 2), rng.integers(1, 4, n // 2))[:n]  # groups of 1-3
    strata = [("fx" if g % 3 else "neg") + str(g % 5) for g in groups]  # class constant per group
    return list(range(len(groups))), strata, [int(g) for g in groups]


def test_no_group_straddles_splits_and_every_item_once():
    items, strata, groups = _dataset()
    out = grouped_split(items, strata, groups, FRACTIONS, seed=1)
    assert sorted(i for split in out.values() for i in split) == items
    split_of_group = {}
    for name, split in out.items():
        for i in split:
            assert split_of_group.setdefault(groups[i], name) == name


def test_fractions_met_per_stratum():
    items, strata, groups = _dataset()
    out = grouped_split(items, strata, groups, FRACTIONS, seed=1)
    for stratum in set(strata):
        total = strata.count(stratum)
        for name, split in out.items():
            share = sum(strata[i] == stratum for i in split) / total
            assert share == pytest.approx(FRACTIONS[name], abs=0.02), (stratum, name)


def test_same_seed_same_split_other_seed_other_split():
    items, strata, groups = _dataset()
    a = grouped_split(items, strata, groups, FRACTIONS, seed=3)
    assert a == grouped_split(items, strata, groups, FRACTIONS, seed=3)
    assert a != grouped_split(items, strata, groups, FRACTIONS, seed=4)


def test_mixed_group_follows_its_majority_class():
    out = grouped_split(["a", "b", "c", "d"], ["x", "x", "y", "y"], [0, 0, 0, 1], {"train": 0.5, "valid": 0.5}, seed=0)
    assert any({"a", "b", "c"} <= set(v) for v in out.values())


@pytest.mark.parametrize("fractions", [{"train": 0.7, "valid": 0.2}, {"train": 1.2, "valid": -0.2}, {}])
def test_bad_fractions_are_refused(fractions):
    with pytest.raises(ValueError, match="fractions"):
        grouped_split([1], ["x"], [0], fractions, seed=0)
