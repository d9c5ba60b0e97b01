"""Size limits checked before any long work starts, and the unique assignment's time estimate.

- The rendered mosaic is held in memory (a uint8 array and Pillow's copy, 7 bytes per pixel):
  at most :data:`MAX_MOSAIC_PIXELS` pixels (about 0.7 GB while rendering) and at most
  :data:`MAX_MOSAIC_SIDE` pixels per side (the JPEG format's limit).
- The exact unique assignment's time grows a little faster than the square of the cells: at most
  :data:`MAX_UNIQUE_CELLS` cells (measured 5.3-5.9 minutes at 100,000 x 100,000 on 2 cores, with
  the solver before its more-tiles changes).
"""

from __future__ import annotations

import math

__all__ = [
    "MAX_MOSAIC_PIXELS",
    "MAX_MOSAIC_SIDE",
    "MAX_UNIQUE_CELLS",
    "check_mosaic_size",
    "check_unique_size",
    "estimate_unique_seconds",
    "format_seconds",
]

MAX_MOSAIC_PIXELS = 100_000_000
MAX_MOSAIC_SIDE = 65_500
MAX_UNIQUE_CELLS = 100_000

# Measured with benchmarks/bench_photo_mosaic.py on the 2-core development machine (1x1 grid,
# realistic descriptors): 2.1-2.5 s at 10,000 cells and 320-356 s at 100,000, i.e. about
# n ** 2.1; finer descriptor grids (more dimensions) take longer per pair.
_SECONDS_AT_10K = 2.5
_EXPONENT = 2.1


def check_mosaic_size(rows: int, cols: int, thumb_size: int) -> None:
    """Refuse a mosaic that cannot be rendered in memory or saved (see the module limits)."""
    width, height = cols * thumb_size, rows * thumb_size
    pixels = width * height
    if pixels <= MAX_MOSAIC_PIXELS and max(width, height) <= MAX_MOSAIC_SIDE:
        return
    # The largest number of columns that fits, at this aspect ratio and thumbnail size.
    aspect = rows / cols
    by_pixels = math.sqrt(MAX_MOSAIC_PIXELS / (aspect * thumb_size * thumb_size))
    by_side = MAX_MOSAIC_SIDE / (thumb_size * max(1.0, aspect))
    most = max(1, math.floor(min(by_pixels, by_side)))
    raise ValueError(
        f"a mosaic of {cols} x {rows} cells of {thumb_size} px is {width:,} x {height:,} px "
        f"({pixels / 1e6:,.0f} megapixels); the limit is {MAX_MOSAIC_PIXELS / 1e6:.0f} megapixels "
        f"and {MAX_MOSAIC_SIDE:,} px per side (the mosaic is rendered in memory): use at most "
        f"{most} columns or a smaller --thumb-size"
    )


def estimate_unique_seconds(n_cells: int, n_tiles: int, dim: int = 3) -> float:
    """Rough time of :func:`photo_mosaic.assign_unique` on a 2-core machine, in seconds.

    From the benchmark's measurements (about ``n ** 2.1``); the real time depends on how far the
    target's colours are from the tiles' and on the machine, so take it as an order of magnitude.
    """
    n = max(n_cells, 1)
    dims = max(1.0, dim / 3.0) ** 0.3
    more_tiles = 1.0 + 0.1 * math.log2(max(1.0, n_tiles / n))
    return float(_SECONDS_AT_10K * (n / 10_000) ** _EXPONENT * dims * more_tiles)


def format_seconds(seconds: float) -> str:
    if seconds < 1.0:
        return "under a second"
    if seconds < 90.0:
        return f"about {seconds:.0f} s"
    if seconds < 5400.0:
        return f"about {seconds / 60:.0f} minutes"
    return f"about {seconds / 3600:.0f} hours"


def check_unique_size(n_cells: int, n_tiles: int, dim: int, *, cols: int | None = None) -> None:
    """Refuse a unique assignment above :data:`MAX_UNIQUE_CELLS` cells, saying how long it takes.

    ``cols`` (the cells across the target) lets the message say how many columns would fit.
    """
    if n_cells <= MAX_UNIQUE_CELLS:
        return
    advice = "use fewer cells"
    if cols:
        rows_per_col = n_cells / (cols * cols)
        most = max(1, math.floor(math.sqrt(MAX_UNIQUE_CELLS / rows_per_col)))
        advice = f"use at most {most} columns"
    estimate = format_seconds(estimate_unique_seconds(n_cells, n_tiles, dim))
    limit = format_seconds(estimate_unique_seconds(MAX_UNIQUE_CELLS, MAX_UNIQUE_CELLS, dim))
    tiles = f" to {n_tiles:,} tiles" if n_tiles else ""
    raise ValueError(
        f"the unique assignment of {n_cells:,} cells{tiles} would take "
        f"{estimate} on 2 cores; the limit is {MAX_UNIQUE_CELLS:,} cells ({limit}): "
        f"{advice}, or --method nearest"
    )
