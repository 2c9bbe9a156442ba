"""Grouped, stratified, seeded splits: whole groups go to one split, classes stay balanced.

Used by `scripts/resplit.py` (groups = duplicate clusters) and by folder datasets that come
without splits. Pure: items in, assignment out.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

import numpy as np


def _check_fractions(fractions: dict[str, float]) -> None:
    if not fractions or any(f < 0 for f in fractions.values()) or not np.isclose(sum(fractions.values()), 1.0):
        raise ValueError(f"Split fractions must be >= 0 and sum to 1; got {fractions}.")


def grouped_split(
    items: Sequence,
    strata: Sequence[Hashable],
    groups: Sequence[Hashable],
    fractions: dict[str, float],
    seed: int,
) -> dict[str, list]:
    """Assign every item to a split so that no group straddles two splits.

    A group's stratum is the most common stratum of its items (ties: the smallest). Within
    each stratum the groups are shuffled with `seed`, then taken largest first (a stable
    sort, so equal sizes keep the seeded order), each going to the split furthest below its
    target share of that stratum's items. Large groups placed first leave the small ones to
    even out the fractions.

    Returns:
        split name -> items (in input order), for every split in `fractions`.
    """
    _check_fractions(fractions)
    if not len(items) == len(strata) == len(groups):
        raise ValueError(f"items, strata and groups differ in length: {len(items)}, {len(strata)}, {len(groups)}.")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    by_stratum: dict[Hashable, list[Hashable]] = defaultdict(list)
    for g, idx in members.items():
        counts = Counter(strata[i] for i in idx)
        top = max(counts.values())
        by_stratum[min((s for s, c in counts.items() if c == top), key=str)].append(g)
    rng = np.random.default_rng(seed)
    split_of: dict[Hashable, str] = {}
    names = list(fractions)
    for stratum in sorted(by_stratum, key=str):
        group_ids = sorted(by_stratum[stratum], key=str)
        order = rng.permutation(len(group_ids))
        ordered = sorted((group_ids[k] for k in order), key=lambda g: -len(members[g]))
        total = sum(len(members[g]) for g in ordered)
        filled = dict.fromkeys(names, 0)
        for g in ordered:
            target = max(names, key=lambda s: fractions[s] * total - filled[s])
            split_of[g] = target
            filled[target] += len(members[g])
    out: dict[str, list] = {s: [] for s in names}
    for i, item in enumerate(items):
        out[split_of[groups[i]]].append(item)
    return out
