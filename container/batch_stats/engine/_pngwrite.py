"""Writing generated images as PNG files: unfiltered rows in stored (uncompressed) deflate blocks.

Random pixels do not compress, so a generated image is written as it is: every row with PNG
filter type 0 (None) and the rows in stored deflate blocks (zlib level 0). Pillow has no option
to skip its filter selection, which tries several filters on every row even at level 0 and cost
about 10 ms of the 11 ms per 256x512 image that writing took; here a file costs a copy of the
pixels, the zlib (Adler-32) and chunk (CRC-32) checksums and the write. The files are ordinary
8-bit RGB PNGs that any reader, Pillow included, decodes to exactly the same pixels.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["encode_rgb_png", "png_rows", "write_rgb_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = b"\x00\x00\x00\x00IEND\xae\x42\x60\x82"


def png_rows(height: int, width: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """A buffer of ``height`` PNG rows (filter byte 0, then RGB) and its ``(h, w, 3)`` pixel view.

    Fill the view, then pass the buffer to :func:`encode_rgb_png` or :func:`write_rgb_png`.
    """
    rows = np.empty((height, 1 + 3 * width), dtype=np.uint8)
    rows[:, 0] = 0
    return rows, rows[:, 1:].reshape(height, width, 3)


def _pieces(rows: npt.NDArray[np.uint8]) -> list[bytes]:
    height, row_bytes = rows.shape
    width = (row_bytes - 1) // 3
    if rows.dtype != np.uint8 or row_bytes != 1 + 3 * width or not rows.flags.c_contiguous:
        raise ValueError("expected the contiguous uint8 buffer of png_rows()")
    header = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(rows.data, 0)
    kind = b"IDAT"
    return [
        _SIGNATURE,
        struct.pack(">I", 13),
        header,
        struct.pack(">I", zlib.crc32(header)),
        struct.pack(">I", len(data)) + kind,
        data,
        struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))),
        _IEND,
    ]


def encode_rgb_png(rows: npt.NDArray[np.uint8]) -> bytes:
    """The PNG file of a :func:`png_rows` buffer."""
    return b"".join(_pieces(rows))


def write_rgb_png(path: Path, rows: npt.NDArray[np.uint8]) -> None:
    """Write the PNG file of a :func:`png_rows` buffer to ``path`` (created, never overwritten).

    Raises:
        FileExistsError: ``path`` exists.
    """
    with path.open("xb") as file:
        file.writelines(_pieces(rows))
