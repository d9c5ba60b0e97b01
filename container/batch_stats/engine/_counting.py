"""Squares, crop and exact white/black counts for one image."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ._geometry import Placement, draw_crop, draw_squares
from ._params import EngineParams, check_square_room
from ._synthetic import synthetic_columns

__all__ = ["ImagePlan", "count_white_black", "draw_plan", "process_image", "synthetic_counts"]

_WHITE_SHIFTED = np.uint32(0xFFFFFF00)


class ImagePlan:
    """The random choices made for one image: the squares, then the crop's top-left corner."""

    __slots__ = ("crop", "placement")

    def __init__(self, placement: Placement, crop: tuple[int, int]) -> None:
        self.placement = placement
        self.crop = crop

    def __repr__(self) -> str:
        return f"ImagePlan(placement={self.placement!r}, crop={self.crop!r})"


def draw_plan(
    rng: np.random.Generator, *, height: int, width: int, params: EngineParams
) -> ImagePlan:
    """Draw, in this order, the white and black squares and the crop for a ``height x width`` image.

    Raises:
        ValueError: the image is smaller than the crop, or the squares cannot be placed.
    """
    if params.crop_height > height or params.crop_width > width:
        raise ValueError(
            f"the image ({height}x{width}) is smaller than the {params.crop_height}x"
            f"{params.crop_width} crop (height x width)"
        )
    check_square_room(height, width, params.square_size)
    placement = draw_squares(rng, height=height, width=width, size=params.square_size)
    crop = draw_crop(
        rng,
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


def _count_painted(
    window: npt.NDArray[np.uint8],
    plan: ImagePlan,
    params: EngineParams,
    *,
    transposed: bool,
) -> tuple[int, int]:
    """Copy the crop ``window``, paint the squares' parts inside it, count white and black pixels.

    ``transposed`` means the window's axes are (column, row), as synthetic columns come.
    """
    n = window.size
    buffer = np.empty(n + 1, dtype=np.uint8)  # one spare byte, see below
    painted = buffer[:n].reshape(window.shape)
    painted[...] = window
    buffer[n] = 0
    size = plan.placement.size
    for corner, value in ((plan.placement.white, 255), (plan.placement.black, 0)):
        r0, r1, c0, c1 = _clipped(corner, size, plan, params)
        if r0 < r1 and c0 < c1:
            if transposed:
                painted[c0:c1, r0:r1] = value
            else:
                painted[r0:r1, c0:c1] = value
    # Read each pixel's 3 bytes as the low 24 bits of a little-endian uint32 (stride 3 bytes; the
    # last pixel reads the spare byte). Shifting left by 8 drops the neighbour's byte, so a pixel is
    # white when the result is 0xFFFFFF00 and black when it is 0.
    pixels = np.ndarray(shape=(n // 3,), dtype="<u4", buffer=buffer.data, strides=(3,))
    shifted = pixels << np.uint32(8)
    return int(np.count_nonzero(shifted == _WHITE_SHIFTED)), int(np.count_nonzero(shifted == 0))


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

    The white square is painted first, then the black one (they never overlap); only the crop is
    copied, so ``image`` is not modified. Noise pixels that happen to be pure white or black count.

    Raises:
        ValueError: not a (height, width, 3) uint8 array, smaller than the crop, or no room for the
            squares.
    """
    image = _check_image(image)
    height, width = image.shape[:2]
    plan = draw_plan(rng, height=height, width=width, params=params)
    cy, cx = plan.crop
    window = image[cy : cy + params.crop_height, cx : cx + params.crop_width]
    return _count_painted(window, plan, params, transposed=False)


def synthetic_counts(
    seed: int, batch_id: str, image_name: str, *, rng: np.random.Generator, params: EngineParams
) -> tuple[int, int]:
    """Counts of a generated image without producing the columns outside its crop.

    Equal to ``process_image(synthetic_image(seed, batch_id, image_name, params=params), rng=rng,
    params=params)``.
    """
    plan = draw_plan(rng, height=params.image_height, width=params.image_width, params=params)
    cy, cx = plan.crop
    columns = synthetic_columns(
        seed,
        batch_id,
        image_name,
        height=params.image_height,
        start=cx,
        stop=cx + params.crop_width,
    )
    return _count_painted(columns[:, cy : cy + params.crop_height], plan, params, transposed=True)
