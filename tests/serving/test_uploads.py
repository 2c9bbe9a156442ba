"""Upload validation as pure functions (no model, no server)."""

import asyncio

import numpy as np
import pytest
from serving_helpers import encode, png_bomb

from fracture.data.images import sniff_format
from fracture.serving.uploads import ByteLimit, UploadError, check_content_length, check_pixels, sniff


RGB = np.random.default_rng(0).integers(0, 255, (40, 30, 3), np.uint8)


@pytest.mark.parametrize("fmt, data", [
    ("JPEG", encode(RGB, "JPEG")), ("PNG", encode(RGB, "PNG")), ("GIF", encode(RGB, "GIF")),
    ("BMP", encode(RGB, "BMP")), ("WEBP", encode(RGB, "WEBP")), ("TIFF", encode(RGB, "TIFF")),
    ("DICOM", b"\0" * 128 + b"DICM" + b"\0" * 16), (None, b"%PDF-1.7 not an image"), (None, b"<html>"),
])
def test_formats_are_sniffed_from_the_bytes(fmt, data):
    assert sniff_format(data[:132]) == fmt


def test_sniff_refuses_empty_text_and_tiff():
    with pytest.raises(UploadError) as empty:
        sniff(b"")
    assert empty.value.status == 400 and empty.value.code == "empty"
    with pytest.raises(UploadError) as text:
        sniff(b"GET / HTTP/1.1\r\n" * 20)
    assert text.value.status == 415 and "file name is ignored" in text.value.message
    with pytest.raises(UploadError) as tiff:
        sniff(encode(RGB, "TIFF"))
    assert tiff.value.status == 415 and "TIFF" in tiff.value.message


def test_pixel_limit_refuses_a_bomb_from_its_header_alone():
    bomb = png_bomb()
    assert len(bomb) < 200
    with pytest.raises(UploadError) as refused:
        check_pixels(bomb, 50_000_000)
    assert refused.value.status == 422 and refused.value.code == "too_many_pixels"
    with pytest.raises(UploadError):
        check_pixels(encode(RGB, "PNG"), 40 * 30 - 1)
    assert check_pixels(encode(RGB, "PNG"), 40 * 30) == (30, 40)


def test_size_limit_is_checked_while_reading():
    with pytest.raises(UploadError) as declared:
        check_content_length("1000001", 1_000_000)
    assert declared.value.status == 413
    check_content_length(None, 10)  # chunked: counted while reading
    limit = ByteLimit(100)
    limit.add(b"x" * 60)
    with pytest.raises(UploadError) as over:
        limit.add(b"x" * 41)
    assert over.value.status == 413


def test_read_body_stops_pulling_chunks_once_over_the_limit():
    """The server reads the body chunk by chunk and gives up at the first chunk over the
    limit: the rest of a huge upload is never received."""
    pytest.importorskip("starlette", reason="the server needs the serve extra: pip install -e '.[serve]'")
    from starlette.requests import Request

    from fracture.serving.app import read_body

    pulled = []

    async def receive():
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}  # an endless upload

    request = Request({"type": "http", "method": "POST", "headers": [], "path": "/v1/predict"}, receive)
    with pytest.raises(UploadError) as over:
        asyncio.run(read_body(request, limit=5000, timeout=5))
    assert over.value.status == 413 and len(pulled) == 6
