"""Leakage between splits: Roboflow augmentation groups.

Roboflow names augmented copies `<source stem>.rf.<hash>.jpg`, so files that share the
stem before `.rf.` are views of one source image. Exact and near-duplicate images are
found by `fracture.data.duplicates` (which replaced a perceptual-hash check whose matches
were, by eye, different patients). Accuracy measured on a split that shares either with
train is optimistic.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from pathlib import Path


def source_stem(path: str | Path) -> str:
    """The Roboflow source-image stem (`a_png.rf.123.jpg` -> `a_png`); the stem otherwise."""
    name = Path(path).name
    return name.split(".rf.")[0] if ".rf." in name else Path(name).stem


def augmentation_groups(files_by_split: dict[str, list[str]]) -> dict:
    """Roboflow groups per split, and groups that appear in more than one split."""
    groups: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for split, files in files_by_split.items():
        for f in files:
            groups[source_stem(f)][split] += 1
    per_split = {
        split: {
            "files": len(files),
            "groups": len({source_stem(f) for f in files}),
        }
        for split, files in files_by_split.items()
    }
    shared = defaultdict(list)
    for stem, splits in groups.items():
        for a, b in combinations(sorted(splits), 2):
            shared[f"{a}-{b}"].append(stem)
    return {
        "per_split": per_split,
        "groups_shared_between_splits": {k: len(v) for k, v in sorted(shared.items())},
        "shared_group_examples": {k: sorted(v)[:20] for k, v in sorted(shared.items())},
    }
