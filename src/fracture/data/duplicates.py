"""Duplicate images, exact and near, so that no split leaks into another.

Three relations put two images in one cluster (`duplicate_groups`, by union-find):

* **Roboflow augmentation group:** `<source>.rf.<hash>.jpg` files of one source
  (`leakage.source_stem`).
* **Exact duplicate:** the same *decoded* pixels (a SHA-1 of shape, dtype and pixel bytes),
  so a file re-saved losslessly, renamed or copied still matches.
* **Confirmed near duplicate:** one image is a flipped, cropped, resized, re-encoded or
  brightness/contrast-changed version of the other. Found in two stages:
  1. *candidates*: each image's nearest neighbours by the normalized dot product of small
     blurred grayscale thumbnails, taking the best of the four flips (cheap: one matrix
     product per chunk);
  2. *confirmation*: normalized cross-correlation of band-passed 64x64 thumbnails, trying
     every flip and a small grid of crop windows (the template slides over the other image
     with `cv2.matchTemplate`). Band-passing removes the smooth silhouette every radiograph
     of a region shares, so what must correlate is the fine structure of *this* image.

Thumbnails and hashes are cached per file (path, size, mtime) in one `.npz` per image
folder, so re-running on a dataset decodes nothing. The pHash test this replaces matched
images that were different patients; its precision was never measured. This one's is, in
tests/data/test_duplicates.py, on generated true and false pairs.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fracture.data.leakage import source_stem

CACHE_VERSION = 1
# Side of the square grayscale thumbnail kept per image (aspect ratio is not kept: exports
# such as Roboflow's stretch every image to one size, so a crop's aspect changes anyway).
THUMB = 128
# Side at which crop windows are searched (the thumbnail shrunk), and the band-pass sigma
# there: coarse shapes, cheap to slide.
COARSE = 32
COARSE_SIGMA = 2.5
# Side at which ECC refines the alignment, and when it stops (iterations, change).
ECC_SIDE = 64
ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 1e-3)
# Side of the candidate feature (the thumbnail, blurred and shrunk): coarse enough that a
# 20% crop still lands near its source.
FEATURE = 16
# Neighbours per image sent to confirmation. Each image's own Roboflow group is excluded
# first, so these are the closest *other* images. 10: on the generated pool (hundreds of
# near-identical synthetic drawings) a 20% crop ranks up to ~10th among look-alikes.
CANDIDATES_PER_IMAGE = 10
# Candidates below this feature similarity are not worth confirming. Set low on purpose:
# recall is decided by confirmation.
CANDIDATE_MIN_SIMILARITY = 0.6
# Crop windows (share of each side; at the centre and the corners) added as views in the
# candidate stage, so that a crop finds its source among look-alikes.
CANDIDATE_CROPS = (0.8,)
# Crop windows tried in confirmation: the smaller image may show this fraction of the larger
# one's width and height (independently: a crop stretched back to a square export). A coarse
# grid: ECC refines the scale in between.
CROP_FRACTIONS = (1.0, 0.9, 0.8, 0.7)
# Coarse alignments refined per pair: the best coarse one is not always the true one (a
# symmetric image matches its flip almost as well).
REFINED_ALIGNMENTS = 2
# Coarse matches below this are not refined: true pairs scored >= 0.825 on seed 0.
COARSE_MIN_SCORE = 0.75
# Band-pass sigma (THUMB pixels) of the fine comparison: detail a re-encoding, resizing or
# re-toning keeps, but which two different radiographs of one region do not share.
FINE_SIGMA = 2.0
# Aligned images must overlap on at least this share of the part's area to be compared.
MIN_OVERLAP = 0.4
# Fine-detail correlation at or above which a candidate is a confirmed near duplicate.
# Chosen on the generated pairs of tests/data/test_duplicates.py with seed 0 (the tests
# measure seed 1): the 96 true pairs (flips, crops of 10-20% also stretched back,
# brightness/contrast, JPEG q30/q60, resizing, and all at once) scored >= 0.917, the 200
# false pairs (different seeds, 3 in 4 of the same region) <= 0.728; 0.9 keeps most of the
# margin on the false side, because an image's *nearest* look-alike among hundreds scores
# higher than a random one (up to ~0.9 in the seed-1 pool of the test).
NEAR_DUPLICATE_MIN_SCORE = 0.9
FLIPS = {"none": None, "horizontal": 1, "vertical": 0, "both": -1}


@dataclass(frozen=True)
class Fingerprint:
    """What duplicate detection keeps of one image.

    Attributes:
        pixel_hash: SHA-1 hex digest of the decoded pixels (with shape and dtype).
        thumb: THUMB x THUMB uint8 grayscale thumbnail.
    """

    pixel_hash: str
    thumb: np.ndarray


def decode_pixels(path: Path) -> np.ndarray | None:
    """The stored pixels of an image file as decoded (any channels, 8 or 16 bit), or None."""
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:  # e.g. GIF on some OpenCV builds
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))[..., ::-1]
        except (OSError, ValueError):
            return None
    return pixels


def pixel_hash(pixels: np.ndarray) -> str:
    """SHA-1 of the decoded pixels, shape and dtype: equal iff the images are identical."""
    digest = hashlib.sha1(f"{pixels.shape}|{pixels.dtype}".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def to_gray8(pixels: np.ndarray) -> np.ndarray:
    """8-bit grayscale of any decoded image (16-bit scaled, alpha dropped)."""
    if pixels.dtype != np.uint8:
        pixels = cv2.normalize(pixels.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[..., :3]
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    return pixels.reshape(pixels.shape[:2])


def fingerprint(pixels: np.ndarray) -> Fingerprint:
    """Hash and thumbnail of decoded pixels."""
    gray = to_gray8(pixels)
    thumb = cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    return Fingerprint(pixel_hash(pixels), thumb)


def fingerprint_file(path: Path) -> Fingerprint | None:
    pixels = decode_pixels(path)
    return None if pixels is None else fingerprint(pixels)


# --- candidates -----------------------------------------------------------------------


def _flipped(image: np.ndarray, flip: int | None) -> np.ndarray:
    return image if flip is None else cv2.flip(image, flip)


def _windows() -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) thumbnail windows of the candidate views: the whole image, then each
    `CANDIDATE_CROPS` share of it at the centre and the four corners."""
    windows = [(0, 0, THUMB, THUMB)]
    for crop in CANDIDATE_CROPS:
        side, rest = round(THUMB * crop), THUMB - round(THUMB * crop)
        for x, y in ((rest // 2, rest // 2), (0, 0), (rest, 0), (0, rest), (rest, rest)):
            windows.append((x, y, x + side, y + side))
    return windows


def candidate_features(thumbs: np.ndarray) -> np.ndarray:
    """(N, views, FEATURE*FEATURE) zero-mean unit-norm features of each thumbnail's views:
    its four flips of each `_windows` window, stretched to FEATURE pixels (so a crop of an
    image lands near that image's view of the same window). View 0 is the whole image."""
    views = [(flip, window) for window in _windows() for flip in FLIPS.values()]
    out = np.zeros((len(thumbs), len(views), FEATURE * FEATURE), np.float32)
    for i, thumb in enumerate(thumbs):
        blurred = cv2.GaussianBlur(thumb.astype(np.float32), (0, 0), THUMB / 32)
        for k, (flip, (x0, y0, x1, y1)) in enumerate(views):
            small = cv2.resize(blurred[y0:y1, x0:x1], (FEATURE, FEATURE), interpolation=cv2.INTER_AREA)
            v = _flipped(small, flip).ravel()
            v = v - v.mean()
            out[i, k] = v / (np.linalg.norm(v) + 1e-6)
    return out


def candidate_pairs(features: np.ndarray, groups: list[str], chunk: int = 256) -> list[tuple[int, int]]:
    """Pairs (i < j): each image i's `CANDIDATES_PER_IMAGE` most similar images j of another
    group (similarity: i's whole image against j's best view) with similarity >=
    `CANDIDATE_MIN_SIMILARITY`."""
    n = len(features)
    k = min(CANDIDATES_PER_IMAGE, n - 1)
    if k <= 0:
        return []
    group_ids = np.unique(np.asarray(groups), return_inverse=True)[1]
    every_view = features.reshape(-1, features.shape[2]).T  # one BLAS product per chunk
    pairs = set()
    for start in range(0, n, chunk):
        whole = features[start : start + chunk, 0]
        sims = (whole @ every_view).reshape(len(whole), n, -1).max(axis=2)
        rows = np.arange(start, min(start + chunk, n))
        sims[group_ids[rows][:, None] == group_ids[None, :]] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for r, i in enumerate(rows):
            pairs.update((min(i, int(j)), max(i, int(j))) for j in top[r] if sims[r, j] >= CANDIDATE_MIN_SIMILARITY)
    return sorted(pairs)


# --- confirmation ---------------------------------------------------------------------


@dataclass(frozen=True)
class Alignment:
    """Where `part` lies in `whole` (both THUMB-sized): part pixel (u, v) sits at whole pixel
    (x + u * fx, y + v * fy); `score` is the coarse correlation that chose it."""

    score: float
    fx: float
    fy: float
    x: float
    y: float

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.x], [0, self.fy, self.y]], np.float32)


def band_pass(image: np.ndarray, sigma: float) -> np.ndarray:
    image = image.astype(np.float32)
    return image - cv2.GaussianBlur(image, (0, 0), sigma)


@dataclass(frozen=True)
class Prepared:
    """A thumbnail with what every comparison needs from it, computed once per image:
    its band-passed COARSE image under each flip, and its band-passed COARSE templates
    for each crop window (unflipped: flipping the other image is equivalent)."""

    thumb: np.ndarray
    wholes: tuple[np.ndarray, ...]
    templates: tuple[tuple[float, float, np.ndarray], ...]


def prepare(thumb: np.ndarray) -> Prepared:
    small = band_pass(cv2.resize(thumb, (COARSE, COARSE), interpolation=cv2.INTER_AREA), COARSE_SIGMA)
    templates = []
    for fx in CROP_FRACTIONS:
        for fy in CROP_FRACTIONS:
            w, h = round(COARSE * fx), round(COARSE * fy)
            templates.append((w / COARSE, h / COARSE,
                              band_pass(cv2.resize(thumb, (w, h), interpolation=cv2.INTER_AREA), COARSE_SIGMA)))
    return Prepared(thumb, tuple(_flipped(small, f) for f in FLIPS.values()), tuple(templates))


def coarse_alignment(whole: np.ndarray, templates: tuple[tuple[float, float, np.ndarray], ...]) -> Alignment:
    """The crop window (of `CROP_FRACTIONS`) and offset where a part, given by its
    `Prepared.templates`, best matches `whole` (band-passed, COARSE pixels)."""
    scale = THUMB / COARSE
    best = Alignment(-1.0, 1, 1, 0, 0)
    for fx, fy, template in templates:
        _, score, _, (x, y) = cv2.minMaxLoc(cv2.matchTemplate(whole, template, cv2.TM_CCOEFF_NORMED))
        if score > best.score:
            best = Alignment(float(score), fx, fy, x * scale, y * scale)
    return best


def fine_score(whole: np.ndarray, part: np.ndarray, coarse: Alignment) -> float:
    """Correlation of fine detail once `part` is aligned to `whole` precisely: the coarse
    alignment refined by ECC (affine, at ECC_SIDE pixels for speed), then both band-passed
    at FINE_SIGMA and correlated over their overlap at THUMB pixels. Look-alike images agree
    on the coarse shapes; only true duplicates agree on the fine detail too."""
    shrink = ECC_SIDE / THUMB
    warp = coarse.matrix()
    warp[:, 2] *= shrink
    small = [cv2.resize(x, (ECC_SIDE, ECC_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32) for x in (part, whole)]
    try:
        _, warp = cv2.findTransformECC(*small, warp, cv2.MOTION_AFFINE, ECC_CRITERIA, None, 3)
    except cv2.error:
        pass  # ECC did not converge: keep the coarse alignment
    warp[:, 2] /= shrink
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    aligned = cv2.warpAffine(whole.astype(np.float32), warp, (THUMB, THUMB), flags=flags)
    inside = cv2.warpAffine(np.ones((THUMB, THUMB), np.float32), warp, (THUMB, THUMB), flags=flags)
    inside = cv2.erode((inside > 0.99).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if inside.mean() < MIN_OVERLAP:
        return -1.0
    a, b = band_pass(aligned, FINE_SIGMA)[inside], band_pass(part, FINE_SIGMA)[inside]
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-6))


def near_duplicate_score(a: np.ndarray | Prepared, b: np.ndarray | Prepared) -> float:
    """How well one thumbnail is a flipped/cropped/rescaled/re-toned version of the other,
    from -1 to 1. Coarse alignments are searched over every flip and crop window, in both
    directions (either may be the crop); the `REFINED_ALIGNMENTS` best of those scoring at
    least `COARSE_MIN_SCORE` are refined, and the best fine-detail correlation
    (`fine_score`) is the score. A poor coarse match returns its coarse score."""
    a = a if isinstance(a, Prepared) else prepare(a)
    b = b if isinstance(b, Prepared) else prepare(b)
    coarse = []
    for k, flip in enumerate(FLIPS.values()):
        # flipping the whole instead of the part: the same match, mirrored
        for whole, part in ((a, b), (b, a)):
            coarse.append((coarse_alignment(whole.wholes[k], part.templates), _flipped(whole.thumb, flip), part.thumb))
    coarse.sort(key=lambda c: -c[0].score)
    if coarse[0][0].score < COARSE_MIN_SCORE:
        return coarse[0][0].score
    return max(fine_score(whole, part, al) for al, whole, part in coarse[:REFINED_ALIGNMENTS]
               if al.score >= COARSE_MIN_SCORE)


# --- fingerprints of many files, cached -----------------------------------------------


def _cache_file(cache_dir: Path, folder: Path) -> Path:
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:16]
    return cache_dir / "image_fingerprints" / f"{folder.name}-{digest}.npz"


def _file_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}"


def _load_cache(file: Path) -> dict[str, Fingerprint]:
    try:
        with np.load(file, allow_pickle=False) as data:
            if int(data["version"]) != CACHE_VERSION:
                return {}
            return {k: Fingerprint(h, t) for k, h, t in zip(data["keys"], data["hashes"], data["thumbs"])}
    except (OSError, KeyError, ValueError):
        return {}  # a damaged cache is rebuilt, never trusted


def _save_cache(file: Path, entries: dict[str, Fingerprint]) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp.npz")
    keys = sorted(entries)
    np.savez(tmp, version=CACHE_VERSION, keys=np.array(keys), hashes=np.array([entries[k].pixel_hash for k in keys]),
             thumbs=np.stack([entries[k].thumb for k in keys]) if keys else np.zeros((0, THUMB, THUMB), np.uint8))
    tmp.replace(file)


def fingerprints(paths: list[Path], cache_dir: Path | None = None) -> list[Fingerprint | None]:
    """Fingerprint of each path (None when it cannot be decoded), cached per image folder."""
    paths = [Path(p).resolve() for p in paths]
    by_folder: dict[Path, list[int]] = defaultdict(list)
    for i, p in enumerate(paths):
        by_folder[p.parent].append(i)
    out: list[Fingerprint | None] = [None] * len(paths)
    workers = min(4, os.cpu_count() or 1)
    for folder, indices in by_folder.items():
        cache_file = _cache_file(Path(cache_dir), folder) if cache_dir else None
        cached = _load_cache(cache_file) if cache_file and cache_file.is_file() else {}
        keys = {i: _file_key(paths[i]) for i in indices}
        todo = [i for i in indices if keys[i] not in cached]
        with ThreadPoolExecutor(workers) as pool:  # cv2 releases the GIL while decoding
            for i, fp in zip(todo, pool.map(lambda i: fingerprint_file(paths[i]), todo)):
                if fp is not None:
                    cached[keys[i]] = fp
        for i in indices:
            out[i] = cached.get(keys[i])
        if cache_file and todo:
            _save_cache(cache_file, cached)
    return out


# --- clusters and reports -------------------------------------------------------------


class UnionFind:
    """Disjoint sets over 0..n-1 (path halving, union by size)."""

    def __init__(self, n: int):
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri == rj:
            return
        if self.size[ri] < self.size[rj]:
            ri, rj = rj, ri
        self.parent[rj] = ri
        self.size[ri] += self.size[rj]

    def labels(self) -> list[int]:
        """Cluster ids 0..k-1, numbered in order of first appearance."""
        ids: dict[int, int] = {}
        return [ids.setdefault(self.find(i), len(ids)) for i in range(len(self.parent))]


@dataclass
class Duplicates:
    """Every duplicate relation found among a list of images (indices into it).

    Attributes:
        exact: pairs (i, j), i < j, with identical decoded pixels.
        near: (i, j, score) confirmed near duplicates that are not exact duplicates.
        unreadable: indices of files that could not be decoded (each its own cluster).
        candidates: how many candidate pairs were confirmed or rejected.
    """

    exact: list[tuple[int, int]]
    near: list[tuple[int, int, float]]
    unreadable: list[int]
    candidates: int


def find_duplicates(paths: list[Path], cache_dir: Path | None = None) -> Duplicates:
    """Exact and confirmed near duplicates among `paths` (near: across Roboflow groups only;
    images of one group are clustered anyway)."""
    prints = fingerprints(paths, cache_dir)
    readable = [i for i, fp in enumerate(prints) if fp is not None]
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i in readable:
        by_hash[prints[i].pixel_hash].append(i)
    exact = sorted(pair for same in by_hash.values() for pair in combinations(same, 2))
    exact_set = set(exact)
    groups = [source_stem(paths[i]) for i in readable]
    thumbs = np.stack([prints[i].thumb for i in readable]) if readable else np.zeros((0, THUMB, THUMB), np.uint8)
    candidates = [(a, b) for a, b in candidate_pairs(candidate_features(thumbs), groups)
                  if (readable[a], readable[b]) not in exact_set]
    prepared = {i: prepare(thumbs[i]) for i in sorted({i for pair in candidates for i in pair})}
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # cv2 releases the GIL
        scores = list(pool.map(lambda c: near_duplicate_score(prepared[c[0]], prepared[c[1]]), candidates))
    near = [(readable[a], readable[b], round(score, 4))
            for (a, b), score in zip(candidates, scores) if score >= NEAR_DUPLICATE_MIN_SCORE]
    unreadable = [i for i, fp in enumerate(prints) if fp is None]
    return Duplicates(exact, near, unreadable, len(candidates))


def cluster_ids(paths: list[Path], found: Duplicates) -> list[int]:
    """Union-find over Roboflow groups, exact and near duplicates: a cluster id per path."""
    uf = UnionFind(len(paths))
    first_of_group: dict[str, int] = {}
    for i, p in enumerate(paths):
        uf.union(i, first_of_group.setdefault(source_stem(p), i))
    for i, j in found.exact:
        uf.union(i, j)
    for i, j, _ in found.near:
        uf.union(i, j)
    return uf.labels()


def duplicate_groups(paths: list[Path], cache_dir: Path | None = None) -> list[int]:
    """A cluster id per path: images that must stay in one split (same Roboflow source,
    identical pixels, or a confirmed near duplicate, transitively)."""
    paths = [Path(p) for p in paths]
    return cluster_ids(paths, find_duplicates(paths, cache_dir))


def duplicate_report(files_by_split: dict[str, list[str]], cache_dir: Path | None = None) -> dict:
    """The `duplicates` block of summary.json: every cross-split exact and near pair.

    Keys: `exact` ([{splits, paths}]), `near` ([{splits, paths, score}]), `counts`
    (cross-split pairs per split pair), `within_split` (pairs inside each split),
    `unreadable` (files that could not be decoded, not compared), `settings`.
    """
    paths, split_of = [], []
    for split, files in files_by_split.items():
        paths += [Path(f) for f in files]
        split_of += [split] * len(files)
    found = find_duplicates(paths, cache_dir)
    order = {s: k for k, s in enumerate(files_by_split)}
    report: dict = {"exact": [], "near": [], "counts": {"exact": {}, "near": {}}, "within_split": {}}
    for a, b in combinations(files_by_split, 2):
        report["counts"]["exact"][f"{a}-{b}"] = report["counts"]["near"][f"{a}-{b}"] = 0
    for split in files_by_split:
        report["within_split"][split] = {"exact": 0, "near": 0}
    for kind, pairs in (("exact", [(i, j, None) for i, j in found.exact]), ("near", found.near)):
        for i, j, score in pairs:
            si, sj = split_of[i], split_of[j]
            if si == sj:
                report["within_split"][si][kind] += 1
                continue
            if order[si] > order[sj]:
                i, j, si, sj = j, i, sj, si
            entry = {"splits": [si, sj], "paths": [str(paths[i]), str(paths[j])]}
            if score is not None:
                entry["score"] = score
            report[kind].append(entry)
            report["counts"][kind][f"{si}-{sj}"] += 1
    report["near"].sort(key=lambda e: -e["score"])
    report["unreadable"] = [str(paths[i]) for i in found.unreadable]
    report["settings"] = {
        "candidate_pairs_checked": found.candidates,
        "near_duplicate_min_score": NEAR_DUPLICATE_MIN_SCORE,
        "candidates_per_image": CANDIDATES_PER_IMAGE,
        "crop_fractions": list(CROP_FRACTIONS),
        "flips": list(FLIPS),
    }
    return report
