"""Helpers of the server tests: encoded images, a PNG decompression bomb, waiting for /ready."""

import io
import struct
import time
import zlib

from PIL import Image


def encode(array, fmt, mode=None, **kw) -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


def png_bomb(width=100_000, height=100_000) -> bytes:
    """A valid-looking PNG header declaring width x height pixels, a few hundred bytes long."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")


def wait_ready(client, timeout: float = 60.0) -> None:
    """Poll /ready until it says yes (the model warms up in the batcher's thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"/ready never said yes: {client.get('/ready').json()}")
