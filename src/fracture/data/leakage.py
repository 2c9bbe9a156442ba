"""Leakage between splits: Roboflow augmentation groups and near-duplicate images.

Roboflow names augmented copies `<source stem>.rf.<hash>.jpg`, so files that share the
stem before `.rf.` are views of one source image. Near duplicates are found by the
Hamming distance of 64-bit perceptual hashes computed when images were probed.
Accuracy measured on a split that shares either with train is optimistic.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np

# pHash distance at or below which two images count as near duplicates (of 64 bits).
NEAR_DUPLICATE_BITS = 6


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


def _popcount64(x: np.ndarray) -> np.ndarray:
    """Bit count of uint64 values (numpy < 2.0 lacks bitwise_count)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    as_bytes = np.ascontiguousarray(x).view(np.uint8).reshape(*x.shape, 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1)


def near_duplicate_pairs(
    hashes_a: list[int], hashes_b: list[int] | None = None, max_bits: int = NEAR_DUPLICATE_BITS
) -> list[tuple[int, int, int]]:
    """Index pairs (i, j, distance) with pHash distance <= `max_bits`.

    With one list, pairs within it (i < j); with two, pairs across them.
    """
    a = np.asarray(hashes_a, dtype=np.uint64)
    b = a if hashes_b is None else np.asarray(hashes_b, dtype=np.uint64)
    pairs = []
    chunk = 512
    for start in range(0, len(a), chunk):
        distances = _popcount64(a[start : start + chunk, None] ^ b[None, :])
        for i, j in zip(*np.nonzero(distances <= max_bits)):
            gi = start + int(i)
            if hashes_b is None and gi >= j:
                continue
            pairs.append((gi, int(j), int(distances[i, j])))
    return pairs


def leakage_report(
    files_by_split: dict[str, list[str]],
    hashes_by_split: dict[str, list[int]],
    max_bits: int = NEAR_DUPLICATE_BITS,
    max_listed: int = 50,
) -> dict:
    """Augmentation-group overlap plus near-duplicate pairs across (and within) splits.

    Args:
        files_by_split: split -> image paths (same order as the hashes).
        hashes_by_split: split -> perceptual hashes.
        max_bits: near-duplicate threshold in differing bits.
        max_listed: pairs listed per split pair (all are counted).
    """
    report = augmentation_groups(files_by_split)
    counts, listed, within = {}, {}, {}
    splits = sorted(files_by_split)
    for a, b in combinations(splits, 2):
        pairs = near_duplicate_pairs(hashes_by_split[a], hashes_by_split[b], max_bits)
        key = f"{a}-{b}"
        counts[key] = len(pairs)
        pairs.sort(key=lambda p: p[2])
        listed[key] = [
            {a: Path(files_by_split[a][i]).name, b: Path(files_by_split[b][j]).name, "distance": d}
            for i, j, d in pairs[:max_listed]
        ]
    for split in splits:
        within[split] = len(near_duplicate_pairs(hashes_by_split[split], None, max_bits))
    report.update(
        {
            "near_duplicate_threshold_bits": max_bits,
            "near_duplicate_pairs": counts,
            "near_duplicate_examples": listed,
            "near_duplicate_pairs_within_split": within,
        }
    )
    return report
