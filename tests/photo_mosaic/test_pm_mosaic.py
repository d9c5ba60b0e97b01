"""Match and render: cell grid, methods, saved matches, mosaic pixels, blending, errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photo_mosaic import (
    build_index,
    load_index,
    load_matches,
    match_tiles,
    matches_path_for,
    render_mosaic,
    save_matches,
    save_mosaic,
)
from photo_mosaic.index import TileIndex


@pytest.fixture
def index(tile_folder: Path, cache_path: Path) -> TileIndex:
    build_index(tile_folder, cache_path, thumb_size=16, progress=False)
    return load_index(cache_path)


def test_nearest_match_has_the_target_aspect_and_closest_tiles(
    index: TileIndex, target_path: Path
) -> None:
    matches = match_tiles(index, target_path, cols=12, method="nearest")

    assert matches.shape == (8, 12)  # 120 x 80 px target
    # The descriptor of each cell is its mean Lab colour; the chosen tile is the closest.
    from photo_mosaic.colour import srgb_to_lab

    cell_lab = srgb_to_lab(matches.cell_rgb).reshape(-1, 3)
    dist = ((cell_lab[:, None, :] - index.descriptors[None, :, :]) ** 2).sum(axis=2)
    chosen = matches.tile_for_cell.ravel()
    # cell_rgb is rounded to 8 bits, so compare with a small slack.
    assert np.all(dist[np.arange(len(chosen)), chosen] <= dist.min(axis=1) + 2.0)


def test_unique_match_uses_each_tile_at_most_once(index: TileIndex, target_path: Path) -> None:
    matches = match_tiles(index, target_path, cols=6, method="unique")  # 6 x 4 = 24 cells

    assert matches.shape == (4, 6)
    assert sorted(matches.tile_for_cell.ravel().tolist()) == list(range(24))
    nearest = match_tiles(index, target_path, cols=6, method="nearest")
    assert matches.total_cost >= nearest.total_cost


def test_unique_match_with_fewer_tiles_than_cells(index: TileIndex, target_path: Path) -> None:
    matches = match_tiles(index, target_path, cols=9, method="unique")  # 9 x 6 = 54 cells

    counts = np.bincount(matches.tile_for_cell.ravel(), minlength=24)
    assert counts.max() <= 3  # ceil(54 / 24)
    assert counts.sum() == 54


def test_mosaic_cells_hold_their_matched_thumbnails(
    index: TileIndex, target_path: Path, cache_path: Path, tmp_path: Path
) -> None:
    matches = match_tiles(index, target_path, cols=10, method="unique")
    saved = load_matches(save_matches(matches, matches_path_for(cache_path)))
    assert matches_path_for(cache_path).parent == cache_path.parent

    out = save_mosaic(render_mosaic(index, saved), tmp_path / "mosaic.png")

    mosaic = np.asarray(Image.open(out))
    rows, cols = saved.shape
    assert mosaic.shape == (rows * 16, cols * 16, 3)
    for r in range(rows):
        for c in range(cols):
            cell = mosaic[r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16]
            np.testing.assert_array_equal(cell, index.thumbnails[saved.tile_for_cell[r, c]])


def test_blend_moves_tiles_towards_the_target_colour(index: TileIndex, target_path: Path) -> None:
    matches = match_tiles(index, target_path, cols=4, method="nearest")
    plain = np.asarray(render_mosaic(index, matches), dtype=float)
    blended = np.asarray(render_mosaic(index, matches, blend=0.5), dtype=float)
    full = np.asarray(render_mosaic(index, matches, blend=1.0), dtype=float)

    target = np.kron(matches.cell_rgb.astype(float), np.ones((16, 16, 1)))
    np.testing.assert_allclose(full, target)
    np.testing.assert_allclose(blended, (plain + target) / 2, atol=0.51)


def test_render_refuses_matches_from_other_tiles(
    index: TileIndex, target_path: Path, tile_folder: Path, tmp_path: Path
) -> None:
    matches = match_tiles(index, target_path, cols=4)
    (tile_folder / "album0" / "img_00.png").unlink()
    build_index(tile_folder, tmp_path / "other.h5", thumb_size=16, progress=False)

    with pytest.raises(ValueError, match="computed against another set of tiles"):
        render_mosaic(load_index(tmp_path / "other.h5"), matches)


def test_grid_larger_than_the_target_is_rejected(index: TileIndex, target_path: Path) -> None:
    with pytest.raises(ValueError, match=r"needs at least 121 x 81 target pixels.*120 x 80"):
        match_tiles(index, target_path, cols=121)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"cols": 0}, "cols must be at least 1"), ({"cols": 4, "method": "best"}, "method must be")],
)
def test_bad_match_arguments(
    index: TileIndex, target_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        match_tiles(index, target_path, **kwargs)  # type: ignore[arg-type]


def test_unreadable_target_is_rejected(index: TileIndex, tmp_path: Path) -> None:
    (tmp_path / "t.png").write_text("no")
    with pytest.raises(ValueError, match="cannot read the target image"):
        match_tiles(index, tmp_path / "t.png", cols=4)


def test_unwritable_outputs_are_rejected(
    index: TileIndex, target_path: Path, tmp_path: Path
) -> None:
    image = render_mosaic(index, match_tiles(index, target_path, cols=4))
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(ValueError, match=r"must end in \.jpg, \.jpeg or \.png"):
        save_mosaic(image, tmp_path / "mosaic.gif")
    with pytest.raises(ValueError, match="does not exist"):
        save_mosaic(image, tmp_path / "file" / "mosaic.png")
    with pytest.raises(ValueError, match="blend must be between 0 and 1"):
        render_mosaic(index, match_tiles(index, target_path, cols=4), blend=1.5)


def test_target_exif_orientation_is_applied(index: TileIndex, rotated_jpeg: Path) -> None:
    target = rotated_jpeg
    assert Image.open(target).size == (80, 40)  # stored lying on its side

    matches = match_tiles(index, target, cols=2)

    # Upright 40 x 80: 2 columns give 4 rows, red on top and blue below (a viewer's picture).
    assert matches.shape == (4, 2)
    top, bottom = matches.cell_rgb[0].astype(int), matches.cell_rgb[3].astype(int)
    assert top[:, 0].min() > 180
    assert top[:, 2].max() < 60
    assert bottom[:, 2].min() > 180
    assert bottom[:, 0].max() < 60


@pytest.mark.parametrize(("value", "grey"), [(0, 0), (32768, 128), (65535, 255), (4369, 17)])
def test_16_bit_greyscale_target_keeps_its_grey(
    index: TileIndex, tmp_path: Path, grey16_writer: Callable[..., Path], value: int, grey: int
) -> None:
    target = grey16_writer(tmp_path / "grey16.png", value)

    matches = match_tiles(index, target, cols=4)

    assert np.all(matches.cell_rgb == grey)


def test_decompression_bomb_target_is_rejected(index: TileIndex, bomb_png: Path) -> None:
    with pytest.raises(ValueError, match=r"bomb\.png' is too large to decode safely.*limit is"):
        match_tiles(index, bomb_png, cols=4)


def test_sizes_above_the_limits_are_refused_before_any_work(
    index: TileIndex, tmp_path: Path
) -> None:
    target = tmp_path / "big.png"
    Image.new("RGB", (4000, 3000), (90, 120, 200)).save(target)

    # 3000 x 2250 cells of 16 px: 48,000 x 36,000 px, far above the rendering limit.
    with pytest.raises(ValueError, match=r"48,000 x 36,000 px .* use at most \d+ columns"):
        match_tiles(index, target, cols=3000)
    # 1500 x 1125 cells for 24 tiles with the exact unique assignment.
    with pytest.raises(ValueError, match=r"1,687,500 cells to 24 tiles would take about \d+ hours"):
        match_tiles(index, target, cols=1500, method="unique")
    # Below both limits, nearest still works.
    assert match_tiles(index, target, cols=400).shape == (300, 400)


def test_render_refuses_a_mosaic_above_the_pixel_limit(index: TileIndex, target_path: Path) -> None:
    from dataclasses import replace

    matches = match_tiles(index, target_path, cols=4)
    huge = replace(
        matches,
        tile_for_cell=np.zeros((2600, 2600), dtype=np.int64),
        cell_rgb=np.zeros((2600, 2600, 3), dtype=np.uint8),
    )

    with pytest.raises(ValueError, match="the limit is 100 megapixels"):
        render_mosaic(index, huge)
