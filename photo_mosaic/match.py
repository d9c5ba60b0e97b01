"""Match stage: split the target into square cells and choose a tile for each cell."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from photo_mosaic._images import open_picture, to_rgb
from photo_mosaic.assignment import assign_nearest, assign_unique, max_uses
from photo_mosaic.colour import block_descriptors
from photo_mosaic.index import TileIndex
from photo_mosaic.limits import check_mosaic_size, check_unique_size

__all__ = [
    "METHODS",
    "Matches",
    "cell_costs",
    "cell_grid",
    "load_matches",
    "load_target",
    "match_tiles",
    "matches_path_for",
    "save_matches",
]

Method = Literal["nearest", "unique"]
METHODS: tuple[Method, ...] = ("nearest", "unique")


@dataclass(frozen=True)
class Matches:
    """The tile chosen for every cell, with what render needs to check and blend."""

    tile_for_cell: npt.NDArray[np.int64]  # (rows, cols) indices into the cache's tiles
    cell_rgb: npt.NDArray[np.uint8]  # (rows, cols, 3) mean target colour of each cell
    method: str
    total_cost: float
    fingerprint: str  # TileIndex.fingerprint() of the tiles matched against

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.tile_for_cell.shape
        return int(rows), int(cols)


def matches_path_for(cache_path: str | os.PathLike[str]) -> Path:
    """Where the matches are saved: next to the cache (``tiles.h5`` -> ``tiles.matches.npz``)."""
    cache = Path(cache_path)
    return cache.with_name(cache.stem + ".matches.npz")


def cell_grid(target_size: tuple[int, int], cols: int, grid: int) -> tuple[int, int]:
    """Rows and columns of square cells for a target of ``(width, height)`` pixels."""
    width, height = target_size
    if cols < 1:
        raise ValueError(f"cols must be at least 1, got {cols}")
    rows = max(1, round(cols * height / width))
    if cols * grid > width or rows * grid > height:
        most = max(1, min(width // grid, (height // grid) * width // max(height, 1)))
        raise ValueError(
            f"a grid of {cols} x {rows} cells (descriptor grid {grid}) needs at least "
            f"{cols * grid} x {rows * grid} target pixels, the target has {width} x {height}: "
            f"use at most {most} columns"
        )
    return rows, cols


def load_target(target: str | os.PathLike[str] | Image.Image) -> Image.Image:
    """The target as 8-bit RGB, upright (EXIF orientation applied), with clear errors.

    Raises:
        ValueError: an unreadable or damaged file, or a decompression bomb (more pixels than
            Pillow's safety limit).
    """
    if isinstance(target, Image.Image):
        return to_rgb(ImageOps.exif_transpose(target))
    return open_picture(target, what="target image")


def _cells(
    target: Image.Image, rows: int, cols: int, grid: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    # Each cell becomes grid x grid pixels; a box filter averages the pixels it covers.
    small = ImageOps.fit(target, (cols * grid, rows * grid), Image.Resampling.BOX)
    arr = np.asarray(small, dtype=np.uint8)
    cells = (
        arr.reshape(rows, grid, cols, grid, 3).transpose(0, 2, 1, 3, 4).reshape(-1, grid, grid, 3)
    )
    means = np.asarray(ImageOps.fit(target, (cols, rows), Image.Resampling.BOX), dtype=np.uint8)
    return block_descriptors(cells, grid), means.astype(np.float64)


def match_tiles(
    index: TileIndex,
    target: str | os.PathLike[str] | Image.Image,
    *,
    cols: int,
    method: Method = "nearest",
) -> Matches:
    """Choose a tile for each cell of the target.

    Args:
        index: the tiles (see :func:`photo_mosaic.load_index`).
        target: the picture to rebuild (a path or a Pillow image); its EXIF orientation is
            applied, as a photo viewer shows it.
        cols: cells across; rows follow from the target's aspect ratio.
        method: ``"nearest"`` (closest tile per cell, tiles repeat) or ``"unique"`` (exact
            minimum total distance with each tile used at most ``ceil(cells / tiles)`` times,
            i.e. at most once when there are enough tiles).

    Raises:
        ValueError: bad arguments, an unreadable target, or sizes above the limits of
            :mod:`photo_mosaic.limits` (checked before any work: the rendered mosaic's pixels,
            and the cells of a unique assignment).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    image = load_target(target)
    rows, cols = cell_grid(image.size, cols, index.grid)
    if method == "unique":
        check_unique_size(rows * cols, len(index.paths), index.descriptors.shape[1], cols=cols)
    check_mosaic_size(rows, cols, index.thumb_size)
    descriptors, means = _cells(image, rows, cols, index.grid)
    if method == "nearest":
        chosen = assign_nearest(descriptors, index.descriptors)
    else:
        max_uses(len(descriptors), len(index.paths))
        chosen = assign_unique(descriptors, index.descriptors).tile_for_cell
    diff = descriptors - index.descriptors[chosen]
    return Matches(
        tile_for_cell=chosen.reshape(rows, cols),
        cell_rgb=np.clip(np.rint(means), 0, 255).astype(np.uint8),
        method=method,
        total_cost=float(np.einsum("ij,ij->", diff, diff)),
        fingerprint=index.fingerprint(),
    )


def cell_costs(
    index: TileIndex, target: str | os.PathLike[str] | Image.Image, matches: Matches
) -> npt.NDArray[np.float64]:
    """Each cell's cost, shape ``(rows, cols)``: the squared distance between the cell's
    descriptor and its tile's (their sum is ``matches.total_cost``)."""
    if matches.fingerprint != index.fingerprint():
        raise ValueError("the matches were computed against another set of tiles")
    rows, cols = matches.shape
    descriptors, _ = _cells(load_target(target), rows, cols, index.grid)
    diff = descriptors - index.descriptors[matches.tile_for_cell.ravel()]
    costs: npt.NDArray[np.float64] = np.einsum("ij,ij->i", diff, diff)
    return costs.reshape(rows, cols)


def save_matches(matches: Matches, path: str | os.PathLike[str]) -> Path:
    """Save matches as ``.npz`` (see :func:`matches_path_for`)."""
    out = Path(path)
    try:
        with out.open("wb") as fh:
            np.savez(
                fh,
                tile_for_cell=matches.tile_for_cell,
                cell_rgb=matches.cell_rgb,
                method=np.array(matches.method),
                total_cost=np.array(matches.total_cost),
                fingerprint=np.array(matches.fingerprint),
            )
    except OSError as exc:
        raise ValueError(f"cannot write the matches to {str(out)!r}: {exc}") from exc
    return out


def load_matches(path: str | os.PathLike[str]) -> Matches:
    """Load matches saved by :func:`save_matches`."""
    src = Path(path)
    if not src.is_file():
        raise ValueError(f"no matches at {str(src)!r}: run the match stage first")
    with np.load(src) as data:
        return Matches(
            tile_for_cell=data["tile_for_cell"].astype(np.int64),
            cell_rgb=data["cell_rgb"].astype(np.uint8),
            method=str(data["method"]),
            total_cost=float(data["total_cost"]),
            fingerprint=str(data["fingerprint"]),
        )
