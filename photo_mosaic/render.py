"""Render stage: paste the matched thumbnails into the mosaic and save it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from photo_mosaic._images import display_name
from photo_mosaic.index import TileIndex
from photo_mosaic.limits import check_mosaic_size
from photo_mosaic.match import Matches

__all__ = ["OUTPUT_SUFFIXES", "check_output_path", "render_mosaic", "save_mosaic"]

OUTPUT_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


def render_mosaic(index: TileIndex, matches: Matches, *, blend: float = 0.0) -> Image.Image:
    """Build the mosaic: cell ``(r, c)`` holds the thumbnail of ``matches.tile_for_cell[r, c]``.

    Args:
        index: the tiles the matches were computed against (checked by fingerprint).
        matches: the output of the match stage.
        blend: 0 (off, the default) to 1: mix each tile linearly towards its cell's mean target
            colour; a little (0.1-0.3) sharpens the picture at the cost of tinted photos.

    Raises:
        ValueError: a bad blend, matches from other tiles, or a mosaic above the size limits
            of :mod:`photo_mosaic.limits` (checked before anything is allocated).
    """
    if not (0.0 <= blend <= 1.0):
        raise ValueError(f"blend must be between 0 and 1, got {blend}")
    if matches.fingerprint != index.fingerprint():
        raise ValueError(
            "the matches were computed against another set of tiles; run the match stage again"
        )
    rows, cols = matches.shape
    size = index.thumb_size
    check_mosaic_size(rows, cols, size)
    # One row of cells at a time into the final array: no (rows, cols, s, s, 3) temporary.
    mosaic = np.empty((rows * size, cols * size, 3), dtype=np.uint8)
    for r in range(rows):
        tiles: npt.NDArray[np.uint8] = index.thumbnails[matches.tile_for_cell[r]]  # (cols, s, s, 3)
        if blend > 0.0:
            target = matches.cell_rgb[r].astype(np.float32)[:, None, None, :]
            mixed = (1.0 - blend) * tiles.astype(np.float32) + blend * target
            tiles = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
        mosaic[r * size : (r + 1) * size] = tiles.transpose(1, 0, 2, 3).reshape(size, -1, 3)
    return Image.fromarray(mosaic)


def check_output_path(output: str | os.PathLike[str]) -> Path:
    """Check that the mosaic can be saved there (suffix, not a folder, a writable folder)."""
    out = Path(output)
    name = display_name(str(out))
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"the output must end in .jpg, .jpeg or .png, got {name!r}")
    if out.is_dir():
        raise ValueError(f"the output {name!r} is a folder; name a .jpg, .jpeg or .png file")
    if not out.parent.is_dir():
        raise ValueError(f"the output folder {display_name(str(out.parent))!r} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise ValueError(f"the output folder {display_name(str(out.parent))!r} is not writable")
    return out


def save_mosaic(image: Image.Image, output: str | os.PathLike[str], *, quality: int = 92) -> Path:
    """Save as JPEG or PNG (chosen by the suffix); clear errors for a bad suffix or folder."""
    out = check_output_path(output)
    try:
        if out.suffix.lower() == ".png":
            image.save(out, format="PNG")
        else:
            image.save(out, format="JPEG", quality=quality)
    except OSError as exc:
        raise ValueError(f"cannot write the mosaic to {display_name(str(out))!r}: {exc}") from exc
    return out
