"""Fixtures for the batch statistics engine tests: small parameters and real PNG files."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from batch_stats.engine import EngineParams
from PIL import Image

PngFactory = Callable[..., bytes]


@pytest.fixture
def small_params() -> EngineParams:
    """A run small enough to process many times in a test."""
    return EngineParams(
        square_size=4,
        crop_height=10,
        crop_width=12,
        image_height=16,
        image_width=24,
        images_per_batch=3,
        batches=2,
    )


@pytest.fixture
def png_bytes() -> PngFactory:
    """Encode an array or a Pillow image as PNG bytes with Pillow (``**save_options`` passed on)."""

    def encode(image: np.ndarray | Image.Image, **save_options: object) -> bytes:
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", **save_options)
        return buffer.getvalue()

    return encode


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


@pytest.fixture
def raw_png() -> Callable[..., bytes]:
    """Build a PNG by hand, for what Pillow cannot write (16-bit RGB, headers that lie).

    ``rows`` are the unfiltered scanline bytes; ``idat=False`` leaves out the image data.
    """

    def build(
        *, width: int, height: int, depth: int, colour: int, rows: bytes = b"", idat: bool = True
    ) -> bytes:
        header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
        data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
        if idat:
            data += _chunk(b"IDAT", zlib.compress(rows))
        return data + _chunk(b"IEND", b"")

    return build


@pytest.fixture
def png_without_last_rows() -> Callable[..., bytes]:
    """The same PNG with a valid, complete zlib stream that lacks its last ``rows`` rows (Pillow
    decodes such a file without an error, the missing rows black)."""

    def cut(data: bytes, *, rows: int, row_bytes: int) -> bytes:
        position, parts = 8, []
        while position < len(data):
            (length,) = struct.unpack_from(">I", data, position)
            parts.append(
                (data[position + 4 : position + 8], data[position + 8 : position + 8 + length])
            )
            position += 12 + length
        raw = zlib.decompress(b"".join(p for k, p in parts if k == b"IDAT"))[: -rows * row_bytes]
        return (
            data[:8]
            + _chunk(b"IHDR", parts[0][1])
            + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b"")
        )

    return cut
