"""Exact uniform placement of the two squares and of the crop window.

Positions are top-left corners ``(row, col)``. A ``size`` square fits at rows ``0 .. height - size``
and columns ``0 .. width - size`` (edges included: a square may touch the last row and column).
Two squares overlap when their corners are closer than ``size`` in both directions.

The (white, black) pair is drawn uniformly over *all* valid ordered pairs, without rejection loops:

* Let ``N`` be the number of positions and ``w(p)`` the number of black positions that do not
  overlap a white square at ``p``. The overlapping black positions form a rectangle clipped to the
  bounds, so ``w(p) = N - ry(row) * rx(col)`` in O(1), where ``ry`` and ``rx`` count the rows and
  columns closer than ``size``.
* The white corner is drawn with probability ``w(p) / T`` (``T`` = number of valid pairs): first its
  row from the row marginal (cached per shape), then its column given the row (O(width)).
* The black corner is drawn uniformly among the ``w(p)`` compatible positions by mapping one integer
  onto the positions outside the overlap rectangle, in row-major order.

Each pair therefore has probability ``w(p)/T * 1/w(p) = 1/T``. Integer arithmetic throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from ._params import check_square_room

__all__ = ["Placement", "count_valid_pairs", "draw_crop", "draw_squares"]

_I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Placement:
    """Top-left corners ``(row, col)`` of the white and the black square, and their size."""

    white: tuple[int, int]
    black: tuple[int, int]
    size: int


def _near_counts(positions: int, size: int) -> _I64:
    """For each position p in [0, positions): how many q in range have |p - q| < size."""
    p = np.arange(positions, dtype=np.int64)
    return np.minimum(positions - 1, p + size - 1) - np.maximum(0, p - size + 1) + 1


class _PairSampler:
    """Precomputed tables for one (height, width, size); see the module docstring."""

    def __init__(self, height: int, width: int, size: int) -> None:
        check_square_room(height, width, size)
        self.size = size
        self.ny = height - size + 1
        self.nx = width - size + 1
        self.positions = self.ny * self.nx
        self.ry = _near_counts(self.ny, size)
        self.rx = _near_counts(self.nx, size)
        self.rx_cumsum = np.cumsum(self.rx)
        self.col_index = np.arange(1, self.nx + 1, dtype=np.int64) * self.positions
        # Weight of a row: sum over columns of (N - ry * rx).
        row_weights = self.nx * self.positions - self.ry * int(self.rx_cumsum[-1])
        self.row_cdf = np.cumsum(row_weights)
        self.pairs = int(self.row_cdf[-1])
        if self.pairs <= 0:  # pragma: no cover - excluded by check_square_room
            raise ValueError("no valid placement for the two squares")

    def draw(self, rng: np.random.Generator) -> Placement:
        s, ny, nx = self.size, self.ny, self.nx
        wy = int(np.searchsorted(self.row_cdf, rng.integers(self.pairs), side="right"))
        near_rows = int(self.ry[wy])
        col_cdf = self.col_index - near_rows * self.rx_cumsum
        wx = int(np.searchsorted(col_cdf, rng.integers(int(col_cdf[-1])), side="right"))
        # Positions of the black corner that would overlap: rows ya..yb, columns xa..xb.
        ya, yb = max(0, wy - s + 1), min(ny - 1, wy + s - 1)
        xa, xb = max(0, wx - s + 1), min(nx - 1, wx + s - 1)
        band_cols = nx - (xb - xa + 1)
        before = ya * nx
        band = (yb - ya + 1) * band_cols
        k = int(rng.integers(self.positions - (yb - ya + 1) * (xb - xa + 1)))
        if k < before:
            by, bx = divmod(k, nx)
        elif k < before + band:
            r, c = divmod(k - before, band_cols)
            by, bx = ya + r, (c if c < xa else c + (xb - xa + 1))
        else:
            r, c = divmod(k - before - band, nx)
            by, bx = yb + 1 + r, c
        return Placement(white=(wy, wx), black=(by, bx), size=s)


@lru_cache(maxsize=16)
def _sampler(height: int, width: int, size: int) -> _PairSampler:
    return _PairSampler(height, width, size)


def draw_squares(rng: np.random.Generator, *, height: int, width: int, size: int) -> Placement:
    """Draw the white and black squares uniformly over all valid non-overlapping placements.

    Raises:
        ValueError: the square is larger than the image, or two cannot fit without overlapping.
    """
    return _sampler(height, width, size).draw(rng)


def count_valid_pairs(*, height: int, width: int, size: int) -> int:
    """Number of ordered (white, black) placements that are in bounds and do not overlap."""
    return _sampler(height, width, size).pairs


def draw_crop(
    rng: np.random.Generator, *, height: int, width: int, crop_height: int, crop_width: int
) -> tuple[int, int]:
    """Top-left corner of a crop window, uniform over all ``(H-ch+1) x (W-cw+1)`` positions.

    Raises:
        ValueError: the image is smaller than the crop.
    """
    if crop_height > height or crop_width > width:
        raise ValueError(
            f"the image ({height}x{width}) is smaller than the {crop_height}x{crop_width} crop "
            "(height x width)"
        )
    row = int(rng.integers(height - crop_height + 1))
    col = int(rng.integers(width - crop_width + 1))
    return row, col
