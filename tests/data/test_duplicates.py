"""Duplicate detection: the exact pixel hash, union-find clusters, and the near-duplicate
check's precision and recall on generated true pairs (one image transformed) and false
pairs (different synthetic radiographs, often of the same region, which look alike)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fracture.data import duplicates as D
from fracture.data.synthetic import REGIONS, render_image


def _radiograph(seed: int, region: str | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    region = region or REGIONS[seed % (len(REGIONS) - 1)]
    h, w = (int(v) for v in rng.integers(220, 320, 2))
    return render_image(region, int(rng.integers(0, 2)), (h, w), rng)[0]


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def _crop(image: np.ndarray, fraction: float, rng: np.random.Generator, stretch: bool) -> np.ndarray:
    h, w = image.shape
    ch, cw = int(h * (1 - fraction)), int(w * (1 - fraction * rng.uniform(0.5, 1.0)))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = image[y : y + ch, x : x + cw]
    return cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR) if stretch else out


def _tone(image: np.ndarray, gain: float, offset: float) -> np.ndarray:
    return np.clip(image.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)


# Every transformation the check must see through, as (name, function of image and rng).
TRANSFORMS = {
    "flip_horizontal": lambda im, rng: cv2.flip(im, 1),
    "flip_vertical": lambda im, rng: cv2.flip(im, 0),
    "crop_10": lambda im, rng: _crop(im, 0.10, rng, stretch=False),
    "crop_20_stretched": lambda im, rng: _crop(im, 0.20, rng, stretch=True),
    "brighter": lambda im, rng: _tone(im, 1.0, 35),
    "darker_low_contrast": lambda im, rng: _tone(im, 0.7, -10),
    "more_contrast": lambda im, rng: _tone(im, 1.4, -30),
    "jpeg_q30": lambda im, rng: _jpeg(im, 30),
    "jpeg_q60": lambda im, rng: _jpeg(im, 60),
    "resize_half": lambda im, rng: cv2.resize(im, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
    "resize_square_640": lambda im, rng: cv2.resize(im, (640, 640)),
    "flip_crop_tone_jpeg": lambda im, rng: _jpeg(_tone(_crop(cv2.flip(im, 1), 0.12, rng, True), 1.2, -15), 50),
}


def generated_pairs(per_transform: int = 8, false_pairs: int = 200, seed: int = 0):
    """(true pairs, false pairs): lists of (name, image a, image b)."""
    rng = np.random.default_rng(seed)
    true, false = [], []
    k = 0
    for name, transform in TRANSFORMS.items():
        for _ in range(per_transform):
            image = _radiograph(1000 + k)
            k += 1
            true.append((name, image, transform(image, rng)))
    for n in range(false_pairs):
        region = REGIONS[n % (len(REGIONS) - 1)]
        kind = "same_region" if n % 4 else "other_region"
        a = _radiograph(5000 + 2 * n, region)
        b = _radiograph(5001 + 2 * n, region if kind == "same_region" else REGIONS[(n + 1) % (len(REGIONS) - 1)])
        false.append((kind, a, b))
    return true, false


def _score(a: np.ndarray, b: np.ndarray) -> float:
    return D.near_duplicate_score(D.fingerprint(a).thumb, D.fingerprint(b).thumb)


# The threshold (duplicates.NEAR_DUPLICATE_MIN_SCORE) was chosen on seed 0 of these generated
# pairs; the tests measure on seed 1, images the threshold never saw.
TEST_SEED = 1


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Files: every true pair (a, transformed a) and distractors of the same regions."""
    root = tmp_path_factory.mktemp("pool")
    true, false = generated_pairs(per_transform=6, false_pairs=120, seed=TEST_SEED)
    paths, pairs, kinds = [], set(), []
    for k, (name, a, b) in enumerate(true):
        for tag, image in (("a", a), ("b", b)):
            paths.append(root / f"true{k:03d}_{tag}.png")
            cv2.imwrite(str(paths[-1]), image)
        pairs.add((len(paths) - 2, len(paths) - 1))
        kinds.append(name)
    for k, (_, a, b) in enumerate(false):
        for tag, image in (("a", a), ("b", b)):
            paths.append(root / f"other{k:03d}_{tag}.png")
            cv2.imwrite(str(paths[-1]), image)
    return paths, pairs, kinds


def test_near_duplicate_precision_and_recall_on_generated_pairs(pool, tmp_path):
    paths, true_pairs, kinds = pool
    found = D.find_duplicates(paths, cache_dir=tmp_path)
    confirmed = {(i, j) for i, j, _ in found.near} | set(found.exact)
    hits = confirmed & true_pairs
    precision = len(hits) / max(len(confirmed), 1)
    recall = len(hits) / len(true_pairs)
    by_kind = {}
    for (pair, kind) in zip(sorted(true_pairs), kinds):
        by_kind.setdefault(kind, []).append(pair in confirmed)
    print(f"\nnear duplicates on {len(paths)} generated images, {len(true_pairs)} true pairs, "
          f"{found.candidates} candidate pairs: confirmed {len(confirmed)}, "
          f"precision {precision:.3f}, recall {recall:.3f}")
    print("recall per transformation: " + ", ".join(f"{k} {np.mean(v):.2f}" for k, v in by_kind.items()))
    for i, j, s in found.near:
        if (i, j) not in true_pairs:
            print(f"false positive {paths[i].name} ~ {paths[j].name}: score {s}")
    assert precision >= 0.95
    assert recall >= 0.9


def test_pairwise_scores_separate_true_from_look_alike_pairs():
    """Every flip and crop window is tried here (no candidate stage), on explicit false pairs
    of the same region: the look-alikes the pHash check confused."""
    true, false = generated_pairs(per_transform=3, false_pairs=80, seed=TEST_SEED)
    true_scores = np.array([_score(a, b) for _, a, b in true])
    false_scores = np.array([_score(a, b) for _, a, b in false])
    same_region = np.array([kind == "same_region" for kind, _, _ in false])
    threshold = D.NEAR_DUPLICATE_MIN_SCORE
    print(f"\ntrue pairs: min score {true_scores.min():.3f}, below {threshold}: {(true_scores < threshold).sum()}"
          f"/{len(true_scores)}; false pairs: max {false_scores.max():.3f} (same region "
          f"{false_scores[same_region].max():.3f}), at or above: {(false_scores >= threshold).sum()}/{len(false_scores)}")
    assert (true_scores >= threshold).mean() >= 0.9
    assert (false_scores >= threshold).mean() <= 0.05


def test_exact_hash_sees_pixels_not_files(tmp_path):
    image = _radiograph(7)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    cv2.imwrite(str(tmp_path / "b.png"), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])  # other bytes
    cv2.imwrite(str(tmp_path / "c.bmp"), image)  # other format, same pixels
    changed = image.copy()
    changed[0, 0] ^= 1
    cv2.imwrite(str(tmp_path / "d.png"), changed)
    files = [tmp_path / n for n in ("a.png", "b.png", "c.bmp", "d.png")]
    assert files[0].read_bytes() != files[1].read_bytes()
    hashes = [D.pixel_hash(D.decode_pixels(f)) for f in files]
    assert hashes[0] == hashes[1] == hashes[2] != hashes[3]
    found = D.find_duplicates(files)
    assert found.exact == [(0, 1), (0, 2), (1, 2)]
    # one changed bit is not an exact duplicate, but a near one
    assert [p[:2] for p in found.near] == [(0, 3), (1, 3), (2, 3)]
    assert all(p[2] > 0.99 for p in found.near)


def test_union_find_labels():
    uf = D.UnionFind(6)
    uf.union(0, 2)
    uf.union(4, 2)
    uf.union(5, 3)
    assert uf.labels() == [0, 1, 0, 2, 0, 2]


def test_duplicate_groups_join_roboflow_groups_exact_and_near(tmp_path):
    a, b, c = _radiograph(11), _radiograph(12), _radiograph(13)
    files = {
        "x_png.rf.1.jpg": a, "x_png.rf.2.jpg": _radiograph(14),  # one Roboflow source
        "copy_of_b.png": b, "b.png": b,                          # exact
        "c.png": c, "c_flipped_brighter.png": _tone(cv2.flip(c, 1), 1.0, 30),  # near
        "alone.png": _radiograph(15),
    }
    paths = []
    for name, image in files.items():
        paths.append(tmp_path / name)
        cv2.imwrite(str(paths[-1]), image)
    ids = D.duplicate_groups(paths, cache_dir=tmp_path / "cache")
    assert ids[0] == ids[1] and ids[2] == ids[3] and ids[4] == ids[5]
    assert len(set(ids)) == 4
    # cached: a second run decodes nothing and agrees
    assert list((tmp_path / "cache" / "image_fingerprints").glob("*.npz"))
    assert D.duplicate_groups(paths, cache_dir=tmp_path / "cache") == ids


def test_report_lists_cross_split_pairs_only(tmp_path):
    a, b = _radiograph(21), _radiograph(22)
    for name, image in {"t1.png": a, "t2.png": b, "v1.png": a, "v2.png": cv2.flip(b, 0), "t3.png": a}.items():
        cv2.imwrite(str(tmp_path / name), image)
    split = {"train": [str(tmp_path / n) for n in ("t1.png", "t2.png", "t3.png")],
             "valid": [str(tmp_path / n) for n in ("v1.png", "v2.png")]}
    report = D.duplicate_report(split)
    assert report["counts"]["exact"] == {"train-valid": 2}
    assert {tuple(Path(p).name for p in e["paths"]) for e in report["exact"]} == {("t1.png", "v1.png"), ("t3.png", "v1.png")}
    assert report["within_split"]["train"]["exact"] == 1
    assert [tuple(Path(p).name for p in e["paths"]) for e in report["near"]] == [("t2.png", "v2.png")]
    assert report["near"][0]["splits"] == ["train", "valid"] and report["near"][0]["score"] > 0.99
