"""Finding bad images once, at indexing time, so the tf.data pipeline never meets one.

Every image is probed with the decoder the pipeline itself uses (`tf.io.decode_image`):
whatever passes here decodes mid-epoch too. Unusual but decodable images (grayscale or
16-bit PNG, CMYK JPEG, palette, alpha, very large) are kept and counted as notes; files
that are not images, corrupt or truncated, or over the pixel limit are skipped and counted.
The probe also computes the perceptual hash the leakage check needs, so each file is
decoded once. Results are cached per file (path, size, mtime), so re-indexing is cheap.

Which files are images is decided here, once for the whole project (`IMAGE_SUFFIXES`,
`list_image_files`, `unsupported_reason`): the indexer, the probe and prediction must
agree, or a file would be listed by one and silently passed over by another.

* JPEG, PNG, BMP, GIF and WebP are decoded (by `tf.io.decode_image`, as in the pipeline).
* TIFF and DICOM files are *listed* too, and then counted as unsupported with a hint,
  never silently ignored. TIFF is not decoded on purpose: `tf.io.decode_image` cannot
  read it, and decoding it with PIL would take the pipeline out of the TensorFlow graph
  (a Python call per image) for a format that X-ray exports rarely use; converting to
  PNG keeps 8- and 16-bit pixels as they are. DICOM needs pydicom and a windowing
  choice, which this project does not make (yet).
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

# Suffixes of files that are decoded and used.
DECODABLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
DECODABLE_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP"}

OK = "ok"
# Skip reasons.
NOT_AN_IMAGE = "not_an_image"
UNSUPPORTED_FORMAT = "unsupported_format"
CORRUPT = "corrupt"
TRUNCATED = "truncated"
TOO_LARGE = "too_large"
UNSUPPORTED_TIFF = "unsupported_tiff"
UNSUPPORTED_DICOM = "unsupported_dicom"
# Notes on kept images.
GRAYSCALE = "grayscale"
HIGH_BIT_DEPTH = "16_bit"
CMYK = "cmyk"
PALETTE = "palette"
ALPHA = "alpha"
LARGE = "large"

# Image files that are found and counted, but not decoded: suffix -> skip status.
UNSUPPORTED_SUFFIXES = {
    ".tif": UNSUPPORTED_TIFF,
    ".tiff": UNSUPPORTED_TIFF,
    ".dcm": UNSUPPORTED_DICOM,
    ".dicom": UNSUPPORTED_DICOM,
}
# Every suffix that makes a file an image file of the project: listed, then either
# decoded or counted as unsupported. The one list for indexing and prediction.
IMAGE_SUFFIXES = DECODABLE_SUFFIXES + tuple(UNSUPPORTED_SUFFIXES)
# Why each unsupported status is skipped, and what to do about it.
UNSUPPORTED_REASONS = {
    UNSUPPORTED_TIFF: "TIFF is not supported (tf.io.decode_image cannot read it): convert to PNG",
    UNSUPPORTED_DICOM: (
        "DICOM is not supported by training, evaluation or predict: convert it to PNG "
        "(the server, scripts/serve.py, reads DICOM uploads when pydicom is installed)"
    ),
}
# Every skip status in words, for reports.
SKIP_REASONS = {
    NOT_AN_IMAGE: "not an image (no image library can open it)",
    UNSUPPORTED_FORMAT: "an image format the pipeline cannot decode (not JPEG/PNG/BMP/GIF/WebP)",
    CORRUPT: "corrupt (opens, but does not decode)",
    TRUNCATED: "truncated file",
    TOO_LARGE: "more pixels than data.max_image_pixels",
    **UNSUPPORTED_REASONS,
}
# Magic bytes: a file is classified by its content when its suffix says nothing.
TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
DICOM_MAGIC_OFFSET, DICOM_MAGIC = 128, b"DICM"

# Images whose long side exceeds this are noted: decoding them dominates the first epoch.
LARGE_SIDE = 4096
PROBE_VERSION = 2  # 2: TIFF and DICOM files get their own statuses


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


def list_image_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Every image file (any of `IMAGE_SUFFIXES`, case-insensitive) in `folder`, sorted.

    Unsupported ones (TIFF, DICOM) are included: callers count them with
    `unsupported_reason` instead of never seeing them.
    """
    folder = Path(folder)
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# Leading bytes of each format, for `sniff_format` (offset, magic, format).
_MAGICS = (
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"BM", "BMP"),
    (0, TIFF_MAGIC[0], "TIFF"),
    (0, TIFF_MAGIC[1], "TIFF"),
    (DICOM_MAGIC_OFFSET, DICOM_MAGIC, "DICOM"),
)
SNIFF_BYTES = DICOM_MAGIC_OFFSET + len(DICOM_MAGIC)


def sniff_format(head: bytes) -> str | None:
    """The image format of content starting with `head` (at least `SNIFF_BYTES` bytes when
    there are that many), by magic bytes alone, never a file name: JPEG, PNG, GIF, BMP, WEBP,
    TIFF or DICOM; None for anything else."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for offset, magic, fmt in _MAGICS:
        if head[offset : offset + len(magic)] == magic:
            return fmt
    return None


def unsupported_status(path: str | Path) -> str | None:
    """`UNSUPPORTED_TIFF` / `UNSUPPORTED_DICOM` for a file this project lists but cannot
    decode (by suffix, else by magic bytes), None for anything else."""
    path = Path(path)
    by_suffix = UNSUPPORTED_SUFFIXES.get(path.suffix.lower())
    if by_suffix:
        return by_suffix
    try:
        with path.open("rb") as f:
            head = f.read(DICOM_MAGIC_OFFSET + len(DICOM_MAGIC))
    except OSError:
        return None
    if head[:4] in TIFF_MAGIC:
        return UNSUPPORTED_TIFF
    if head[DICOM_MAGIC_OFFSET:] == DICOM_MAGIC:
        return UNSUPPORTED_DICOM
    return None


def unsupported_reason(path: str | Path) -> str | None:
    """Why `path` cannot be used and what to do about it, or None when it may be decoded.

    Prediction calls this on each listed file before decoding, so that it skips exactly
    the files indexing counts as unsupported, with the same words.
    """
    status = unsupported_status(path)
    return UNSUPPORTED_REASONS[status] if status else None


def probe_image(path: str | Path, max_pixels: int = 50_000_000) -> ImageProbe:
    """Probe one file; never raises for bad content."""
    import tensorflow as tf  # deferred: parsing and reports do not need TensorFlow

    path = Path(path)
    unsupported = unsupported_status(path)
    if unsupported:
        return ImageProbe(unsupported)
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
        return ImageProbe(why_undecodable(path), width, height, mode, notes)
    return ImageProbe(OK, width, height, mode, notes, perceptual_hash(decoded))


def why_undecodable(source) -> str:
    """`TRUNCATED` or `CORRUPT` for an image (a path or a binary file object) the decoder refused."""
    try:
        with Image.open(source) as image:
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
