"""A strict reader for the IDX files MNIST is distributed in (raw or gzip-compressed).

IDX layout (big-endian): two zero bytes, a type code, the number of dimensions ``k``, then ``k``
unsigned 32-bit sizes, then the data. MNIST uses type ``0x08`` (unsigned byte) only: images are
``(n, 28, 28)`` (magic 2051) and labels ``(n,)`` (magic 2049). Anything else is rejected with an
:class:`IDXFormatError` naming the file and what was wrong, never a deep numpy error.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "IDXFormatError", "parse_idx", "read_idx"]

IDX_IMAGES_MAGIC = 0x00000803  # 2051: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # 2049: unsigned bytes, 1 dimension
_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(ValueError):
    """An IDX file is truncated, corrupt or not the kind of IDX file that was expected."""


def parse_idx(
    data: bytes, *, name: str = "<bytes>", expected_magic: int | None = None
) -> npt.NDArray[np.uint8]:
    """Parse the decompressed bytes of an unsigned-byte IDX file into a read-only array.

    ``expected_magic`` (2051 for images, 2049 for labels) is checked when given.
    """
    if len(data) < 4:
        raise IDXFormatError(f"{name}: {len(data)} bytes is too short for an IDX header")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    magic = (type_code << 8) | ndim
    if zero != 0:
        raise IDXFormatError(
            f"{name}: not an IDX file (first two bytes are {data[:2].hex()}, expected 0000)"
        )
    if type_code != _UBYTE:
        raise IDXFormatError(
            f"{name}: element type 0x{type_code:02x} is not supported (only 0x08, unsigned byte)"
        )
    if expected_magic is not None and magic != expected_magic:
        raise IDXFormatError(
            f"{name}: magic number {magic} does not match the expected {expected_magic}"
        )
    if ndim == 0:
        raise IDXFormatError(f"{name}: an IDX file needs at least one dimension")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IDXFormatError(
            f"{name}: truncated header ({len(data)} bytes, {header_len} needed for {ndim} sizes)"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    expected = int(np.prod(shape, dtype=np.int64))
    actual = len(data) - header_len
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise IDXFormatError(
            f"{name}: {what}: dimensions {'x'.join(map(str, shape))} need {expected} data bytes, "
            f"found {actual}"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape)
    array.flags.writeable = False
    return array


def read_idx(
    path: str | os.PathLike[str], *, expected_magic: int | None = None
) -> npt.NDArray[np.uint8]:
    """Read an IDX file, raw or gzip-compressed (detected from its first bytes, not its name)."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IDXFormatError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    return parse_idx(raw, name=str(path), expected_magic=expected_magic)
