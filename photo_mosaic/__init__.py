"""Photo mosaics from many tile photos: nearest-colour or every-tile-once (exact assignment).

Three stages, usable separately: :func:`build_index` (thumbnails + HDF5 cache, in parallel with
dask), :func:`match_tiles` (nearest or exact unique assignment), :func:`render_mosaic`.
"""

from photo_mosaic.assignment import UniqueAssignment, assign_nearest, assign_unique, max_uses
from photo_mosaic.index import IndexReport, TileIndex, build_index, load_index
from photo_mosaic.match import Matches, load_matches, match_tiles, matches_path_for, save_matches
from photo_mosaic.render import render_mosaic, save_mosaic

__all__ = [
    "IndexReport",
    "Matches",
    "TileIndex",
    "UniqueAssignment",
    "assign_nearest",
    "assign_unique",
    "build_index",
    "load_index",
    "load_matches",
    "match_tiles",
    "matches_path_for",
    "max_uses",
    "render_mosaic",
    "save_matches",
    "save_mosaic",
]
