"""PNG structure checks that Pillow leaves out, and the exact decoder for 8-bit RGB.

Pillow decodes rows until the image is full or the compressed stream ends, whichever comes
first: a stream that ends early leaves the missing rows black without an error, and a stream
with more rows than the header declares is cut silently, its checksum never read. So the engine
reads the chunks itself and makes sure that the image data holds exactly the rows the header
declares and that the zlib checksum of those rows holds:

* Every chunk must lie inside the file and, except the image data (IDAT), match its CRC. The
  image data is covered by the zlib checksum over the decompressed rows instead, which is
  checked at no extra cost while decoding (below).
* 8-bit RGB, not interlaced, no transparency or animation chunks (the common upload) is decoded
  by Pillow's own PNG row decoder into a zeroed array of 4-byte pixels one row taller than
  declared. A row that Pillow writes has its padding byte set to 255 and a row it does not write
  keeps its 0, so the last declared row shows whether all rows came, the extra row whether more
  data came than declared, and asking for one more row makes zlib read on to the end of the stream
  and verify its checksum.
* Every other image (grayscale, palette, alpha, interlaced, ...) has its stream inflated once
  here to check its exact length and checksum, then Pillow decodes it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from PIL import Image
from PIL import _imaging as pillow_core

from ._errors import ImageRejected

__all__ = [
    "CHANNELS",
    "PngChunks",
    "check_image_data",
    "decode_rgb8",
    "pixel_words",
    "read_chunks",
]

#: Samples per pixel of each PNG colour type.
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_IEND = b"IEND"
_IDAT = b"IDAT"
#: Chunks that make an RGB image need Pillow's full reader (transparency, animation).
_FULL_READER_KINDS = frozenset({b"tRNS", b"acTL", b"fcTL", b"fdAT"})
#: Adam7 passes: first column, first row, column step, row step.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # fmt: skip
_INFLATE_STEP = 1 << 20


@dataclass(frozen=True, slots=True)
class PngChunks:
    """The image data (IDAT payloads, in order) and the kinds of chunk that need Pillow."""

    image_data: list[memoryview]
    full_reader_kinds: frozenset[bytes]
    has_palette: bool


def _kind(kind: bytes) -> str:
    return kind.decode("ascii", "backslashreplace")


def read_chunks(data: bytes, name: str) -> PngChunks:
    """Walk the chunks after the signature up to IEND (bytes after IEND are ignored).

    Raises:
        ImageRejected: ``truncated`` when a chunk or IEND is missing at the end of the file,
            ``corrupt`` for a checksum error, image data split by other chunks, or no image data.
    """
    view = memoryview(data)
    size = len(data)
    position = 8
    image_data: list[memoryview] = []
    image_data_done = False
    kinds: set[bytes] = set()
    has_palette = False
    while True:
        if position + 12 > size:
            raise ImageRejected(
                name,
                "truncated",
                f"the PNG file is truncated: it ends at byte {size}, before its IEND chunk",
            )
        length, kind = struct.unpack_from(">I4s", data, position)
        start, end = position + 8, position + 8 + length
        if end + 4 > size:
            raise ImageRejected(
                name,
                "truncated",
                f"the PNG file is truncated: its {_kind(kind)!r} chunk at byte {position} declares "
                f"{length} bytes, past the end of the file ({size} bytes)",
            )
        if kind == _IDAT:
            if image_data_done:
                raise ImageRejected(
                    name, "corrupt", "the image data (IDAT chunks) is interrupted by other chunks"
                )
            image_data.append(view[start:end])
        else:
            image_data_done = bool(image_data)
            (expected,) = struct.unpack_from(">I", data, end)
            if zlib.crc32(view[position + 4 : end]) != expected:
                raise ImageRejected(
                    name,
                    "corrupt",
                    f"the {_kind(kind)!r} chunk at byte {position} fails its checksum",
                )
            if kind == _IEND:
                break
            if kind in _FULL_READER_KINDS:
                kinds.add(kind)
            has_palette = has_palette or kind == b"PLTE"
        position = end + 4
    if not image_data:
        raise ImageRejected(name, "corrupt", "the PNG file has no image data (IDAT chunk)")
    return PngChunks(image_data, frozenset(kinds), has_palette)


def _rows_size(width: int, height: int, bits_per_pixel: int) -> int:
    if width <= 0 or height <= 0:
        return 0
    return height * (1 + (width * bits_per_pixel + 7) // 8)


def check_image_data(
    image_data: list[memoryview],
    *,
    name: str,
    width: int,
    height: int,
    bits_per_pixel: int,
    interlaced: bool,
) -> None:
    """Inflate the image data once: exactly the declared rows, then the end of the stream.

    Raises:
        ImageRejected: ``truncated`` (fewer rows, or no end of stream and checksum) or
            ``corrupt`` (more data than declared, a zlib error such as a wrong checksum).
    """
    if interlaced:
        expected = sum(
            _rows_size((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy, bits_per_pixel)
            for x0, y0, dx, dy in _ADAM7
        )
    else:
        expected = _rows_size(width, height, bits_per_pixel)
    inflater = zlib.decompressobj()
    produced = 0
    try:
        for payload in image_data:
            pending: bytes | memoryview = payload
            while pending and not inflater.eof:
                step = min(expected - produced + 1, _INFLATE_STEP)
                produced += len(inflater.decompress(pending, step))
                if produced > expected:
                    raise _too_much(name, width, height)
                pending = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error as error:
        raise ImageRejected(
            name, "corrupt", f"the image data cannot be decompressed ({error})"
        ) from None
    if produced < expected:
        if interlaced:
            found = f"{produced} of the {expected} bytes of interlaced rows"
        else:
            found = f"{produced // (expected // height)} of the {height} rows"
        raise ImageRejected(
            name,
            "truncated",
            f"the image data holds {found} that the header declares ({width} pixels wide)",
        )
    if not inflater.eof:
        raise ImageRejected(
            name,
            "truncated",
            "the image data ends before the end of its compressed stream and checksum",
        )


def _too_much(name: str, width: int, height: int) -> ImageRejected:
    return ImageRejected(
        name,
        "corrupt",
        f"the image data holds more than the {height} rows of {width} pixels that the header "
        "declares",
    )


def pixel_words(image: Image.Image) -> npt.NDArray[np.uint8] | None:
    """A read-only ``(height, width, 4)`` view of a loaded 4-byte-per-pixel image's memory.

    Pillow exports its memory through the Arrow C data interface. Images whose rows are not in
    one block of Pillow's allocator (tens of MB) cannot be exported that way: then None.
    """
    try:
        words = pa.array(image).values.to_numpy(zero_copy_only=True)
    except (ValueError, pa.ArrowException):
        return None
    view: npt.NDArray[np.uint8] = words.reshape(image.height, image.width, 4)
    return view


def decode_rgb8(
    image_data: list[memoryview], *, name: str, width: int, height: int
) -> npt.NDArray[np.uint8]:
    """Decode the rows of an 8-bit RGB, non-interlaced PNG exactly (see the module docstring).

    Pillow's row decoder writes into a zeroed numpy array of 4-byte pixels (R, G, B, padding)
    mapped as a Pillow image, one row taller than declared. Returns a read-only
    ``(height, width, 3)`` view of it.

    Raises:
        ImageRejected: ``truncated`` or ``corrupt``.
    """
    words = np.zeros((height + 1, width, 4), dtype=np.uint8)
    target = Image.frombuffer("RGBX", (width, height + 1), words, "raw", "RGBX", 0, 1)
    decoder = pillow_core.zip_decoder("RGBX", "RGB")
    decoder.setimage(target.im, (0, 0, width, height + 1))
    status, error = 0, 0
    try:
        for payload in image_data:
            status, error = decoder.decode(payload)
            if status < 0:
                break
    finally:
        decoder.cleanup()
    if error < 0:
        raise ImageRejected(
            name,
            "corrupt",
            f"the image data cannot be decoded ({pillow_core.getcodecstatus(error)})",
        )
    written = words[:, 0, 3]
    if written[height]:
        raise _too_much(name, width, height)
    if not written[height - 1]:
        found = int(np.argmin(written))
        raise ImageRejected(
            name,
            "truncated",
            f"the image data holds {found} of the {height} rows that the header declares",
        )
    if status >= 0:
        # Every row came, but the end of the stream was not reached in the same call, so its
        # checksum is not known to have been read (it can sit in the next IDAT chunk).
        check_image_data(
            image_data, name=name, width=width, height=height, bits_per_pixel=24, interlaced=False
        )
    pixels = words[:height, :, :3]
    pixels.flags.writeable = False
    return pixels
