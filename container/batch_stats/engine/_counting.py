"""Squares, crop and exact white/black counts for one image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ._geometry import Placement, UniformIntegers, crop_origin, squares_placement
from ._params import EngineParams
from ._seeding import image_bit_generator
from ._synthetic import column_bytes_from

__all__ = [
    "ImagePlan",
    "count_columns",
    "count_crop",
    "count_white_black",
    "draw_plan",
    "process_image",
    "synthetic_batch_counts",
    "synthetic_counts",
]

_WHITE_SHIFTED = np.uint32(0xFFFFFF00)


@dataclass(frozen=True, slots=True)
class ImagePlan:
    """The random choices made for one image: the squares, then the crop's top-left corner."""

    placement: Placement
    crop: tuple[int, int]


def draw_plan(
    rng: np.random.Generator, *, height: int, width: int, params: EngineParams
) -> ImagePlan:
    """Draw, in this order, the white and black squares and the crop for a ``height x width`` image.

    Raises:
        ValueError: the image is smaller than the crop, or the squares cannot be placed.
    """
    return _plan(UniformIntegers(rng.bit_generator), height=height, width=width, params=params)


def _plan(draws: UniformIntegers, *, height: int, width: int, params: EngineParams) -> ImagePlan:
    if params.crop_height > height or params.crop_width > width:
        raise ValueError(
            f"the image ({height}x{width}) is smaller than the {params.crop_height}x"
            f"{params.crop_width} crop (height x width)"
        )
    placement = squares_placement(draws, height=height, width=width, size=params.square_size)
    crop = crop_origin(
        draws,
        height=height,
        width=width,
        crop_height=params.crop_height,
        crop_width=params.crop_width,
    )
    return ImagePlan(placement, crop)


def _clipped(
    corner: tuple[int, int], size: int, plan: ImagePlan, params: EngineParams
) -> tuple[int, int, int, int]:
    """The square's rows and columns inside the crop, relative to the crop: (r0, r1, c0, c1)."""
    cy, cx = plan.crop
    r0 = max(corner[0], cy) - cy
    r1 = min(corner[0] + size, cy + params.crop_height) - cy
    c0 = max(corner[1], cx) - cx
    c1 = min(corner[1] + size, cx + params.crop_width) - cx
    return r0, r1, c0, c1


def _count_packed(
    data: npt.NDArray[np.uint8],
    *,
    offset: int,
    shape: tuple[int, int],
    strides: tuple[int, int],
    plan: ImagePlan,
    params: EngineParams,
    transposed: bool,
) -> tuple[int, int]:
    """Count white and black pixels of the crop after painting the squares, without copying bytes.

    Each pixel's 3 bytes are read as the low 24 bits of a little-endian uint32 at ``offset +
    i * strides[0] + j * strides[1]`` in the flat byte buffer ``data``, which must hold at least one
    byte after the crop's last pixel. ``transposed`` means the crop's axes are (column, row).
    """
    pixels = np.ndarray(shape=shape, dtype="<u4", buffer=data, offset=offset, strides=strides)
    return _count_words(pixels, plan=plan, params=params, transposed=transposed)


def _count_words(
    pixels: npt.NDArray[np.uint32], *, plan: ImagePlan, params: EngineParams, transposed: bool
) -> tuple[int, int]:
    """:func:`_count_packed` on the crop's little-endian words (a pixel in the low 3 bytes).

    Shifting left by 8 drops the fourth byte, so in the result a pixel is white when it equals
    0xFFFFFF00 and black when it is 0. The squares are painted on these shifted words (a new
    array: ``pixels`` is not modified).
    """
    words = pixels << np.uint32(8)
    size = plan.placement.size
    for corner, value in ((plan.placement.white, _WHITE_SHIFTED), (plan.placement.black, 0)):
        r0, r1, c0, c1 = _clipped(corner, size, plan, params)
        if r0 < r1 and c0 < c1:
            if transposed:
                words[c0:c1, r0:r1] = value
            else:
                words[r0:r1, c0:c1] = value
    return int(np.count_nonzero(words == _WHITE_SHIFTED)), int(np.count_nonzero(words == 0))


def _padded_words(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint32] | None:
    """The image as ``(height, width)`` little-endian words when its pixels are 4 bytes apart.

    Such an image is a view that skips a fourth byte per pixel (what :func:`decode_image` returns:
    Pillow's RGB memory). Each word then holds a pixel in its low 3 bytes and that fourth byte on
    top. The words are a view of the contiguous array the image is a view of; numpy checks that
    every word, fourth bytes included, lies inside it. Otherwise None (the caller copies the crop).
    """
    if image.strides[1:] != (4, 1):
        return None
    root = image.base
    while isinstance(root, np.ndarray) and isinstance(root.base, np.ndarray):
        root = root.base
    if not isinstance(root, np.ndarray) or not root.flags.c_contiguous:
        return None
    offset = image.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    try:
        return np.ndarray(
            shape=image.shape[:2],
            dtype="<u4",
            buffer=root,
            offset=offset,
            strides=image.strides[:2],
        )
    except (TypeError, ValueError):  # a word would reach outside the memory
        return None


def count_white_black(image: npt.NDArray[np.uint8]) -> tuple[int, int]:
    """Exact numbers of pixels with all three channels 255 (white) and all three 0 (black)."""
    pixels = _check_image(image).reshape(-1, 3)
    return (
        int(np.count_nonzero((pixels == 255).all(axis=1))),
        int(np.count_nonzero((pixels == 0).all(axis=1))),
    )


def _check_image(image: object) -> npt.NDArray[np.uint8]:
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] != 3
    ):
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(
            f"an image must be a (height, width, 3) uint8 RGB array, got shape {shape} of {dtype}"
        )
    return image


def process_image(
    image: npt.NDArray[np.uint8], *, rng: np.random.Generator, params: EngineParams
) -> tuple[int, int]:
    """Draw the squares and the crop with ``rng``; return the (white, black) counts in the crop.

    The white square is painted first, then the black one (they never overlap), on the crop's
    pixels read as words: ``image`` is not modified, and may be read-only. Noise pixels that happen
    to be pure white or black count. Equal to ``count_crop(image, draw_plan(rng, ...))``.

    Raises:
        ValueError: not a (height, width, 3) uint8 array, smaller than the crop, or no room for the
            squares.
    """
    image = _check_image(image)
    height, width = image.shape[:2]
    plan = draw_plan(rng, height=height, width=width, params=params)
    return count_crop(image, plan=plan, params=params)


def count_crop(
    image: npt.NDArray[np.uint8], *, plan: ImagePlan, params: EngineParams
) -> tuple[int, int]:
    """The (white, black) counts of :func:`process_image` for a plan drawn beforehand.

    ``plan`` must have been drawn for this image's height and width. The crop is counted in place
    when the pixels are 4 bytes apart (:func:`decode_image`'s arrays), else copied first.

    Raises:
        ValueError: not a (height, width, 3) uint8 array, or the plan does not fit in the image.
    """
    image = _check_image(image)
    cy, cx = plan.crop
    ch, cw = params.crop_height, params.crop_width
    size = plan.placement.size
    height, width = image.shape[:2]
    if (
        cy + ch > height
        or cx + cw > width
        or max(plan.placement.white[0], plan.placement.black[0]) + size > height
        or max(plan.placement.white[1], plan.placement.black[1]) + size > width
    ):
        raise ValueError(f"the plan {plan} does not fit in a {height}x{width} image")
    words = _padded_words(image)
    if words is not None:  # counted in place
        return _count_words(
            words[cy : cy + ch, cx : cx + cw], plan=plan, params=params, transposed=False
        )
    # A contiguous copy of the crop plus one spare byte, for the packed reading in _count_packed.
    data = np.empty(ch * cw * 3 + 1, dtype=np.uint8)
    data[:-1].reshape(ch, cw, 3)[...] = image[cy : cy + ch, cx : cx + cw]
    return _count_packed(
        data,
        offset=0,
        shape=(ch, cw),
        strides=(cw * 3, 3),
        plan=plan,
        params=params,
        transposed=False,
    )


def synthetic_counts(
    seed: int, batch_id: str, image_name: str, *, params: EngineParams
) -> tuple[int, int]:
    """Counts of a generated image, producing only the pixel columns inside its crop.

    Equal to ``process_image(synthetic_image(seed, batch_id, image_name, params=params),
    rng=image_rng(seed, batch_id, image_name), params=params)``, with one generator instead of two.
    """
    return synthetic_batch_counts(seed, batch_id, [image_name], params=params)[0]


def synthetic_batch_counts(
    seed: int, batch_id: str, image_names: Sequence[str], *, params: EngineParams
) -> list[tuple[int, int]]:
    """:func:`synthetic_counts` of several images of one batch, in the order of ``image_names``.

    All the draws are made first and all the pixel work after: keeping the interpreter-heavy and
    the memory-heavy steps apart is markedly faster than alternating them image by image.
    """
    planned = []
    for name in image_names:
        bit_generator = image_bit_generator(seed, batch_id, name)
        draws = UniformIntegers(bit_generator)
        plan = _plan(draws, height=params.image_height, width=params.image_width, params=params)
        planned.append((bit_generator, draws.words, plan))
    counts = []
    for bit_generator, position, plan in planned:
        cx = plan.crop[1]
        data, column_bytes = column_bytes_from(
            bit_generator,
            position,
            height=params.image_height,
            start=cx,
            stop=cx + params.crop_width,
        )
        counts.append(count_columns(data, column_bytes=column_bytes, plan=plan, params=params))
    return counts


#: Above this many candidate pairs, count_columns hands over to _count_packed (never for random
#: pixels, which give about 2.3 per crop; always for images full of pure colour).
_MAX_CANDIDATES = 64
_PURE = {b"\xff\xff\xff": 0, b"\x00\x00\x00": 1}


def count_columns(
    data: npt.NDArray[np.uint8], *, column_bytes: int, plan: ImagePlan, params: EngineParams
) -> tuple[int, int]:
    """White and black counts of a crop whose columns lie in ``data``, fast when few are pure.

    ``data`` holds the crop's columns, column ``cx`` first, ``column_bytes`` (an even number) each,
    top to bottom, plus at least one spare byte. Every pixel whose three bytes are all 0xFF (or all
    0x00) contains an aligned pair of them: bytes 3r, 3r+1 when 3r is even, else 3r+1, 3r+2. One
    vectorised pass over the aligned pairs (as int16: 0xFFFF is -1, and -1 and 0 are the values
    equal to their own sign) finds the candidates, about 2.3 per 200x200 crop of random pixels;
    each is checked exactly. The counts are the squares' areas inside the crop plus the pure pixels
    outside them. Many candidates (large pure areas) go to :func:`_count_packed` instead.
    """
    cy = plan.crop[0]
    ch, cw = params.crop_height, params.crop_width
    pairs = data[: cw * column_bytes].view("<i2")
    candidates = np.flatnonzero((pairs >> 15) == pairs)
    if candidates.size > _MAX_CANDIDATES:
        return _count_packed(
            data,
            offset=3 * cy,
            shape=(cw, ch),
            strides=(column_bytes, 3),
            plan=plan,
            params=params,
            transposed=True,
        )
    squares = [
        _clipped(corner, plan.placement.size, plan, params)
        for corner in (plan.placement.white, plan.placement.black)
    ]
    counts = [max(0, r1 - r0) * max(0, c1 - c0) for r0, r1, c0, c1 in squares]
    seen: set[tuple[int, int]] = set()
    for pair in candidates.tolist():
        column, byte = divmod(2 * pair, column_bytes)
        for row in {byte // 3 - cy, (byte + 1) // 3 - cy}:  # relative to the crop
            if not 0 <= row < ch or (column, row) in seen:
                continue
            seen.add((column, row))
            if any(r0 <= row < r1 and c0 <= column < c1 for r0, r1, c0, c1 in squares):
                continue  # painted over
            start = column * column_bytes + 3 * (row + cy)
            colour = _PURE.get(data[start : start + 3].tobytes())
            if colour is not None:
                counts[colour] += 1
    return counts[0], counts[1]
