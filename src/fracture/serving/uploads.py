"""Upload validation: pure functions from request bytes to a decoded image, or an
`UploadError` with the 4xx status and a message in words. No web framework in here.

Order of checks (cheapest first): size (while reading, `check_content_length` and
`ByteLimit`), empty body, format sniffed from the bytes (never the file name), pixel count
from the header (a decompression bomb is refused before it is decoded), then the decode
itself (`fracture.inference.decode_bytes`, the decoder predict uses), whose failures are
told apart as truncated or corrupt.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from fracture.data.images import (
    DECODABLE_FORMATS,
    SNIFF_BYTES,
    TRUNCATED,
    UNSUPPORTED_REASONS,
    UNSUPPORTED_TIFF,
    sniff_format,
    why_undecodable,
)


class UploadError(Exception):
    """A bad upload: `status` (4xx), a short machine-readable `code` and a message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def as_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


@dataclass(frozen=True)
class DecodedUpload:
    raw: np.ndarray          # uint8 (H, W, 3), the image as uploaded
    model_input: np.ndarray  # float32 (S, S, 3), resized as in training
    format: str


def too_large(limit: int) -> UploadError:
    return UploadError(413, "too_large", f"upload larger than the limit of {limit} bytes ({limit / 2**20:.1f} MB)")


def check_content_length(header: str | None, limit: int) -> None:
    """Refuse at once a declared body over `limit` (the body is then never read)."""
    if header is None:
        return
    try:
        declared = int(header)
    except ValueError:
        raise UploadError(400, "bad_request", f"Content-Length {header!r} is not a number") from None
    if declared > limit:
        raise too_large(limit)


class ByteLimit:
    """Accumulate a body chunk by chunk, refusing it (413) as soon as it passes `limit`."""

    def __init__(self, limit: int):
        self.limit, self.parts, self.size = limit, [], 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise too_large(self.limit)
        self.parts.append(chunk)

    def body(self) -> bytes:
        return b"".join(self.parts)


def sniff(data: bytes) -> str:
    """The image format of `data` by its magic bytes; refuses empty bodies (400) and
    anything that is not an image this server knows (415)."""
    if not data:
        raise UploadError(400, "empty", "empty upload: send the image's bytes (raw body, or a multipart field 'file')")
    fmt = sniff_format(data[:SNIFF_BYTES])
    if fmt is None:
        raise UploadError(
            415, "not_an_image",
            "not an image: the bytes are not JPEG, PNG, BMP, GIF, WebP or DICOM (the file name is ignored)",
        )
    if fmt == "TIFF":
        raise UploadError(415, "unsupported_tiff", UNSUPPORTED_REASONS[UNSUPPORTED_TIFF])
    return fmt


def check_pixels(data: bytes, max_pixels: int) -> tuple[int, int]:
    """`(width, height)` read from the header; refuses (422) an image over `max_pixels`
    before anything is decoded, and a header that cannot be read (422)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, (width, height) = image.format, image.size
    except Image.DecompressionBombError:
        raise UploadError(422, "too_many_pixels", f"image has more pixels than the limit of {max_pixels}: refused as a decompression bomb") from None
    except (Image.UnidentifiedImageError, OSError, ValueError) as exc:
        # the bytes start like an image (sniffed), but its header cannot be read
        if "truncated" in str(exc).lower():
            raise UploadError(422, "truncated", f"truncated image: the file ends inside its header ({exc})") from None
        raise UploadError(422, "corrupt", f"corrupt image: its header cannot be read ({exc})") from None
    if fmt not in DECODABLE_FORMATS:
        raise UploadError(415, "unsupported_format", f"{fmt} images are not supported (JPEG, PNG, BMP, GIF, WebP)")
    if width * height > max_pixels:
        raise UploadError(
            422, "too_many_pixels",
            f"image is {width} x {height} = {width * height} pixels, over the limit of {max_pixels}: refused as a decompression bomb",
        )
    return width, height


def decode_upload(data: bytes, size: int, mode: str, max_pixels: int) -> DecodedUpload:
    """Validate and decode an upload into the model's input, exactly as predict decodes a file."""
    from fracture.inference import decode_bytes, decode_error_reason, prepare_image

    fmt = sniff(data)
    if fmt == "DICOM":
        raw = decode_dicom(data, max_pixels)
        return DecodedUpload(raw, prepare_image(raw, size, mode), fmt)
    check_pixels(data, max_pixels)
    try:
        raw, model_input = decode_bytes(data, size, mode)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the upload's fault
        if why_undecodable(io.BytesIO(data)) == TRUNCATED:
            raise UploadError(422, "truncated", "truncated image: the file ends before the image data does") from None
        raise UploadError(422, "corrupt", f"corrupt image: it cannot be decoded ({decode_error_reason(exc)})") from None
    return DecodedUpload(raw, model_input, fmt)


def decode_dicom(data: bytes, max_pixels: int) -> np.ndarray:
    """A DICOM upload -> uint8 RGB, when pydicom is installed (refused with a clear message
    otherwise). The stored VOI LUT / window is applied, MONOCHROME1 is inverted, and the
    result is scaled to 0-255 by its own min and max."""
    try:
        import pydicom
    except ImportError:
        raise UploadError(
            415, "unsupported_dicom",
            "DICOM is not decoded by this server: install pydicom beside it (pip install pydicom), or convert to PNG",
        ) from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        rows, cols = int(ds.Rows), int(ds.Columns)
        if rows * cols > max_pixels:
            raise UploadError(422, "too_many_pixels", f"DICOM image is {cols} x {rows} pixels, over the limit of {max_pixels}")
        pixels = ds.pixel_array
        try:
            from pydicom.pixels import apply_voi_lut
        except ImportError:  # pydicom 2
            from pydicom.pixel_data_handlers.util import apply_voi_lut
        pixels = apply_voi_lut(pixels, ds).astype(np.float64)
    except UploadError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom's many errors are all "cannot decode"
        raise UploadError(422, "corrupt", f"DICOM file cannot be decoded ({type(exc).__name__}: {str(exc)[:200]})") from None
    if pixels.ndim == 3 and pixels.shape[-1] not in (3, 4):
        pixels = pixels[0]  # multi-frame: the first frame
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        pixels = pixels.max() - pixels
    low, high = float(pixels.min()), float(pixels.max())
    scaled = np.zeros(pixels.shape, np.uint8) if high <= low else np.round((pixels - low) * 255.0 / (high - low)).astype(np.uint8)
    if scaled.ndim == 2:
        scaled = np.stack([scaled] * 3, axis=-1)
    return scaled[..., :3]
