"""Finding bad images once, at indexing time, so the tf.data pipeline never meets one.

Every image is probed with the decoder the pipeline itself uses (`tf.io.decode_image`):
whatever passes here decodes mid-epoch too. Unusual but decodable images (grayscale or
16-bit PNG, CMYK JPEG, palette, alpha, very large) are kept and counted as notes; files
that are not images, corrupt or truncated, or over the pixel limit are skipped and counted.
The probe also computes the perceptual hash the leakage check needs, so each file is
decoded once. Results are cached per file (path, size, mtime), so re-indexing is cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
DECODABLE_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP"}

OK = "ok"
# Skip reasons.
NOT_AN_IMAGE = "not_an_image"
UNSUPPORTED_FORMAT = "unsupported_format"
CORRUPT = "corrupt"
TRUNCATED = "truncated"
TOO_LARGE = "too_large"
# Notes on kept images.
GRAYSCALE = "grayscale"
HIGH_BIT_DEPTH = "16_bit"
CMYK = "cmyk"
PALETTE = "palette"
ALPHA = "alpha"
LARGE = "large"

# Images whose long side exceeds this are noted: decoding them dominates the first epoch.
LARGE_SIDE = 4096
PROBE_VERSION = 1


@dataclass(frozen=True)
class ImageProbe:
    """What indexing learned about one image file.

    Attributes:
        status: `OK`, or the reason the image is skipped.
        width, height: pixel size (0 when unknown).
        mode: PIL mode (`RGB`, `L`, `I;16`, `CMYK`, ...), empty when unreadable.
        notes: notable but harmless properties (`GRAYSCALE`, `CMYK`, ...).
        phash: 64-bit DCT perceptual hash, or None when the image was not decoded.
    """

    status: str
    width: int = 0
    height: int = 0
    mode: str = ""
    notes: tuple[str, ...] = ()
    phash: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


def perceptual_hash(rgb: np.ndarray) -> int:
    """64-bit pHash: sign of the low 8x8 DCT frequencies of a 32x32 grayscale thumbnail."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    small = cv2.resize(gray.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0])


def _notes_for(image: Image.Image) -> tuple[str, ...]:
    notes = []
    mode = image.mode
    if mode in ("L", "LA", "1") or mode.startswith("I") or mode == "F":
        notes.append(GRAYSCALE)
    if mode.startswith("I;16") or mode in ("I", "F"):
        notes.append(HIGH_BIT_DEPTH)
    if mode == "CMYK":
        notes.append(CMYK)
    if mode == "P":
        notes.append(PALETTE)
    if mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        notes.append(ALPHA)
    if max(image.size) > LARGE_SIDE:
        notes.append(LARGE)
    return tuple(notes)


def probe_image(path: str | Path, max_pixels: int = 50_000_000) -> ImageProbe:
    """Probe one file; never raises for bad content."""
    import tensorflow as tf  # deferred: parsing and reports do not need TensorFlow

    path = Path(path)
    try:
        with Image.open(path) as image:
            fmt, mode, (width, height) = image.format, image.mode, image.size
            notes = _notes_for(image)
    except Image.DecompressionBombError:
        return ImageProbe(TOO_LARGE)
    except (Image.UnidentifiedImageError, OSError, ValueError):
        return ImageProbe(NOT_AN_IMAGE)
    if fmt not in DECODABLE_FORMATS:
        return ImageProbe(UNSUPPORTED_FORMAT, width, height, mode)
    if width * height > max_pixels:
        return ImageProbe(TOO_LARGE, width, height, mode, notes)
    try:
        decoded = tf.io.decode_image(
            tf.io.read_file(str(path)), channels=3, expand_animations=False
        ).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError, tf.errors.DataLossError):
        return ImageProbe(_why_undecodable(path), width, height, mode, notes)
    return ImageProbe(OK, width, height, mode, notes, perceptual_hash(decoded))


def _why_undecodable(path: Path) -> str:
    try:
        with Image.open(path) as image:
            image.load()
    except OSError as exc:
        if "truncated" in str(exc):
            return TRUNCATED
    except Exception:  # noqa: BLE001 - any other PIL failure is just "corrupt"
        pass
    return CORRUPT


class ProbeCache:
    """Probe results on disk, keyed by absolute path, size and mtime of each file.

    Args:
        path: JSON file to load from and save to; None keeps results in memory only.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._entries: dict[str, dict] = {}
        if self.path and self.path.is_file():
            try:
                payload = json.loads(self.path.read_text())
                if payload.get("version") == PROBE_VERSION:
                    self._entries = payload["entries"]
            except (OSError, json.JSONDecodeError, KeyError):
                self._entries = {}  # a damaged cache is rebuilt, never trusted
        self._dirty = False

    @staticmethod
    def key(path: Path, max_pixels: int) -> str:
        stat = path.stat()
        return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{max_pixels}"

    def probe_all(
        self, paths: list[Path], max_pixels: int, workers: int | None = None
    ) -> list[ImageProbe]:
        """Probe every path (cached ones are not decoded again), in the order given."""
        keys = [self.key(p, max_pixels) for p in paths]
        todo = [i for i, k in enumerate(keys) if k not in self._entries]
        if todo:
            workers = workers or min(8, os.cpu_count() or 1)
            with ThreadPoolExecutor(workers) as pool:
                fresh = pool.map(lambda i: probe_image(paths[i], max_pixels), todo)
                for i, probe in zip(todo, fresh):
                    self._entries[keys[i]] = asdict(probe)
            self._dirty = True
        return [_from_dict(self._entries[k]) for k in keys]

    def save(self) -> None:
        if not (self.path and self._dirty):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": PROBE_VERSION, "entries": self._entries}))
        tmp.replace(self.path)
        self._dirty = False


def _from_dict(entry: dict) -> ImageProbe:
    return ImageProbe(**{**entry, "notes": tuple(entry.get("notes", ()))})


def cache_file_for(cache_dir: str | Path, dataset_root: Path) -> Path:
    """One probe cache per dataset root, named by a hash of its absolute path."""
    digest = hashlib.sha1(str(dataset_root.resolve()).encode()).hexdigest()[:16]
    return Path(cache_dir) / "image_probes" / f"{dataset_root.name}-{digest}.json"
