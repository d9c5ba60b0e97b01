"""Synthetic runs: uniformly random RGB images, defined so that any window is cheap to produce.

An image's pixels are the raw 64-bit output of its own PCG64 stream (:func:`image_bit_generator`,
from word ``PIXEL_OFFSET`` on), read as little-endian bytes and laid out column by column:
column ``c`` (its ``3 * height`` bytes, top to bottom, RGB) comes from the words
``c * wpc .. (c + 1) * wpc - 1`` where ``wpc = ceil(3 * height / 8)``; bytes past
``3 * height`` are unused. Every byte is uniform on 0..255: the image is uniformly random RGB.

Because PCG64 can jump ahead in O(log n), the pixels of any range of columns can be produced without
the others. Processing a synthetic image only needs its crop window, so the in-memory job produces
just the crop's columns (``crop_width / image_width`` of the bytes) and gets exactly the counts it
would get from the full image; ``generate`` writes the full image, and processing those files gives
the same statistics.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from ._params import EngineParams
from ._pngwrite import png_rows
from ._seeding import PIXEL_OFFSET, image_bit_generator

__all__ = [
    "batch_ids",
    "column_bytes_from",
    "image_names",
    "synthetic_column_bytes",
    "synthetic_columns",
    "synthetic_image",
    "synthetic_png_rows",
]


def batch_ids(params: EngineParams) -> Iterator[str]:
    """``batch_001``, ``batch_002``, ...: zero-padded so that they sort in order."""
    width = max(3, len(str(params.batches)))
    return (f"batch_{i:0{width}d}" for i in range(1, params.batches + 1))


def image_names(params: EngineParams) -> Iterator[str]:
    """``img_0001.png``, ``img_0002.png``, ...: zero-padded so that they sort in order."""
    width = max(4, len(str(params.images_per_batch)))
    return (f"img_{i:0{width}d}.png" for i in range(1, params.images_per_batch + 1))


def synthetic_columns(
    seed: int, batch_id: str, image_name: str, *, height: int, start: int, stop: int
) -> npt.NDArray[np.uint8]:
    """Columns ``start:stop`` of a synthetic image, as a ``(stop - start, height, 3)`` array.

    The result is in column-major order (axis 0 is the column); ``synthetic_image`` transposes it.
    """
    data, column_bytes = synthetic_column_bytes(
        seed, batch_id, image_name, height=height, start=start, stop=stop
    )
    columns = data[: (stop - start) * column_bytes].reshape(stop - start, column_bytes)
    return columns[:, : 3 * height].reshape(stop - start, height, 3)


def synthetic_column_bytes(
    seed: int, batch_id: str, image_name: str, *, height: int, start: int, stop: int
) -> tuple[npt.NDArray[np.uint8], int]:
    """The raw bytes behind columns ``start:stop`` and the number of bytes per column.

    Column ``start + i`` starts at byte ``i * column_bytes``; one extra word follows the last
    column, so readers may look one byte past the last pixel.
    """
    return column_bytes_from(
        image_bit_generator(seed, batch_id, image_name), 0, height=height, start=start, stop=stop
    )


def column_bytes_from(
    bit_generator: np.random.PCG64, position: int, *, height: int, start: int, stop: int
) -> tuple[npt.NDArray[np.uint8], int]:
    """:func:`synthetic_column_bytes` from an image stream that has already read ``position`` words.

    Lets the squares and crop be drawn from the start of the same stream first.
    """
    words_per_column = -(-3 * height // 8)
    bit_generator.advance(PIXEL_OFFSET + start * words_per_column - position)
    words = bit_generator.random_raw((stop - start) * words_per_column + 1)
    return words.astype("<u8", copy=False).view(np.uint8), 8 * words_per_column


def synthetic_image(
    seed: int, batch_id: str, image_name: str, *, params: EngineParams
) -> npt.NDArray[np.uint8]:
    """The full ``(image_height, image_width, 3)`` uint8 image of a generated run."""
    columns = synthetic_columns(
        seed, batch_id, image_name, height=params.image_height, start=0, stop=params.image_width
    )
    image = np.empty((params.image_height, params.image_width, 3), dtype=np.uint8)
    _transpose_into(image, columns)
    return image


def synthetic_png_rows(
    seed: int, batch_id: str, image_name: str, *, params: EngineParams
) -> npt.NDArray[np.uint8]:
    """The image of :func:`synthetic_image` laid out directly as PNG rows (see ``_pngwrite``)."""
    columns = synthetic_columns(
        seed, batch_id, image_name, height=params.image_height, start=0, stop=params.image_width
    )
    rows, pixels = png_rows(params.image_height, params.image_width)
    _transpose_into(pixels, columns)
    return rows


def _transpose_into(image: npt.NDArray[np.uint8], columns: npt.NDArray[np.uint8]) -> None:
    for channel in range(3):  # 2-D transposes are much faster than one with a 3-byte inner axis
        image[:, :, channel] = columns[:, :, channel].T
