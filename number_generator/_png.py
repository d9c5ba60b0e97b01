"""8-bit grayscale PNG output: float images through Pillow, batches through a lean encoder."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = ["PNGWriter", "save_png", "to_uint8"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def to_uint8(image: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """float image in [0, 1] (0 black, 1 white) -> uint8, rounding to the nearest level.

    Images from this package are exactly ``k / 255``, so the round trip is lossless.
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"image must be 2-D (height, width), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"image must be float in [0, 1] or uint8, got {arr.dtype}")
    if arr.size and not (np.isfinite(arr).all() and arr.min() >= 0.0 and arr.max() <= 1.0):
        raise ValueError("image values must be finite and within [0, 1]")
    out: npt.NDArray[np.uint8] = np.rint(arr * np.float32(255.0)).astype(np.uint8)
    return out


def save_png(image: npt.ArrayLike, path: str | os.PathLike[str]) -> Path:
    """Write a 2-D image (float in [0, 1], or uint8) as an 8-bit grayscale PNG."""
    target = Path(path)
    Image.fromarray(np.ascontiguousarray(to_uint8(image)), mode="L").save(target, format="PNG")
    return target


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


class PNGWriter:
    """Encode many same-sized 8-bit grayscale images quickly (filter 0, one IDAT chunk).

    Pillow's encoder costs more per image in Python overhead than the compression itself for
    images this small; this writer does the same (standard, Pillow-readable) encoding with the
    per-image work reduced to one ``zlib.compress`` and one ``write``.
    """

    def __init__(self, height: int, width: int, *, compress_level: int = 1) -> None:
        if not 0 <= compress_level <= 9:
            raise ValueError(f"compress_level must be 0-9, got {compress_level}")
        self._shape = (height, width)
        self._level = compress_level
        header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
        self._head = _SIGNATURE + _chunk(b"IHDR", header)
        self._tail = _chunk(b"IEND", b"")

    def encode_batch(self, pixels: npt.NDArray[np.uint8]) -> list[bytes]:
        """PNG file contents for each image of a (n, height, width) uint8 array."""
        n, height, width = pixels.shape
        if (height, width) != self._shape:
            raise ValueError(f"images are {height}x{width}, this writer encodes {self._shape}")
        rows = np.zeros((n, height, width + 1), dtype=np.uint8)  # filter byte 0 on every row
        rows[:, :, 1:] = pixels
        out = []
        level = self._level
        for i in range(n):
            # Run-length matching suits these mostly-white images: smaller files than zlib's
            # default strategy at any level, and faster.
            packer = zlib.compressobj(level, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
            data = packer.compress(rows[i]) + packer.flush()
            out.append(b"".join((self._head, _chunk(b"IDAT", data), self._tail)))
        return out

    @staticmethod
    def write(path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
