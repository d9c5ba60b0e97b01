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

Each pair therefore has probability ``w(p)/T * 1/w(p) = 1/T``. Integer arithmetic throughout:
every draw is an exact uniform integer made from the generator's raw 64-bit words
(:class:`UniformIntegers`).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from ._params import check_square_room

__all__ = [
    "Placement",
    "UniformIntegers",
    "count_valid_pairs",
    "crop_origin",
    "draw_crop",
    "draw_squares",
    "squares_placement",
]

_I64 = npt.NDArray[np.int64]
_WORD = 2**64


class UniformIntegers:
    """Exact uniform integers from a bit generator's raw 64-bit words, counting the words read.

    ``below(n)`` rejects the top ``2**64 mod n`` word values so that every residue is equally
    likely (for the sizes used here a rejection has a probability under 1e-12). Reading the words
    directly is several times faster than ``Generator.integers`` for single values, and the count
    lets a caller continue the same stream at a known position.
    """

    __slots__ = ("_next", "words")

    def __init__(self, bit_generator: np.random.BitGenerator) -> None:
        self._next = bit_generator.random_raw
        self.words = 0

    def below(self, n: int) -> int:
        """A uniform integer in ``[0, n)``, ``1 <= n <= 2**64``."""
        limit = _WORD - _WORD % n
        while True:
            word = int(self._next())
            self.words += 1
            if word < limit:
                return word % n


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
        ry = _near_counts(self.ny, size)
        rx_cumsum = np.cumsum(_near_counts(self.nx, size))
        # Weight of a row: sum over its columns of (N - ry * rx). Python ints: exact, and fast to
        # search with bisect for one value at a time.
        row_weights = self.nx * self.positions - ry * int(rx_cumsum[-1])
        self.row_cdf: list[int] = np.cumsum(row_weights).tolist()
        self.ry: list[int] = ry.tolist()
        self.rx_cumsum: list[int] = rx_cumsum.tolist()
        self.pairs: int = self.row_cdf[-1]
        if self.pairs <= 0:  # pragma: no cover - excluded by check_square_room
            raise ValueError("no valid placement for the two squares")

    def _col_cdf(self, near_rows: int, col: int) -> int:
        """Total weight of columns 0..col in a row whose overlap spans ``near_rows`` rows."""
        return self.positions * (col + 1) - near_rows * self.rx_cumsum[col]

    def draw(self, draws: UniformIntegers) -> Placement:
        s, ny, nx = self.size, self.ny, self.nx
        wy = bisect_right(self.row_cdf, draws.below(self.pairs))
        near_rows = self.ry[wy]
        k = draws.below(self._col_cdf(near_rows, nx - 1))
        wx = bisect_right(range(nx), k, key=lambda col: self._col_cdf(near_rows, col))
        # Positions of the black corner that would overlap: rows ya..yb, columns xa..xb.
        ya, yb = max(0, wy - s + 1), min(ny - 1, wy + s - 1)
        xa, xb = max(0, wx - s + 1), min(nx - 1, wx + s - 1)
        band_cols = nx - (xb - xa + 1)
        before = ya * nx
        band = (yb - ya + 1) * band_cols
        k = draws.below(self.positions - (yb - ya + 1) * (xb - xa + 1))
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
    return _sampler(height, width, size).draw(UniformIntegers(rng.bit_generator))


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
    return crop_origin(
        UniformIntegers(rng.bit_generator),
        height=height,
        width=width,
        crop_height=crop_height,
        crop_width=crop_width,
    )


def squares_placement(draws: UniformIntegers, *, height: int, width: int, size: int) -> Placement:
    """:func:`draw_squares` on an existing stream of draws."""
    return _sampler(height, width, size).draw(draws)


def crop_origin(
    draws: UniformIntegers, *, height: int, width: int, crop_height: int, crop_width: int
) -> tuple[int, int]:
    """:func:`draw_crop` on an existing stream of draws: the row, then the column."""
    if crop_height > height or crop_width > width:
        raise ValueError(
            f"the image ({height}x{width}) is smaller than the {crop_height}x{crop_width} crop "
            "(height x width)"
        )
    row = draws.below(height - crop_height + 1)
    return row, draws.below(width - crop_width + 1)
