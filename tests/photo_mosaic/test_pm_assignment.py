"""Nearest and exact unique assignment against brute force and scipy's dense solver."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from photo_mosaic import assign_nearest, assign_unique, assignment, max_uses


def dense_optimum(cells: np.ndarray, tiles: np.ndarray) -> float:
    """Optimal total with each tile used at most ceil(cells / tiles) times (tiles replicated)."""
    cost = cdist(cells, tiles, "sqeuclidean")
    cost = np.tile(cost, (1, max_uses(len(cells), len(tiles))))
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].sum())


@pytest.mark.parametrize(
    ("n_cells", "n_tiles", "dim"),
    [(40, 40, 3), (60, 150, 3), (150, 60, 3), (90, 90, 12), (200, 7, 3), (1, 5, 3), (5, 1, 3)],
)
def test_unique_total_equals_the_dense_optimum(
    rng: np.random.Generator, n_cells: int, n_tiles: int, dim: int
) -> None:
    cells = rng.normal(50, 20, size=(n_cells, dim))
    tiles = rng.normal(45, 25, size=(n_tiles, dim))

    result = assign_unique(cells, tiles)

    assert result.total_cost == pytest.approx(dense_optimum(cells, tiles), rel=1e-9)
    chosen_cost = ((cells - tiles[result.tile_for_cell]) ** 2).sum()
    assert result.total_cost == pytest.approx(chosen_cost, rel=1e-12)


def test_unique_is_exact_when_many_cells_share_one_colour(rng: np.random.Generator) -> None:
    # A flat sky: the cells' nearest tiles coincide, so the candidate graph must grow.
    cells = np.repeat(rng.uniform(0, 100, size=(4, 3)), 60, axis=0)
    tiles = rng.uniform(0, 100, size=(300, 3))

    # A small initial graph, so that the certificate has to find the missing pairs.
    result = assign_unique(cells, tiles, k=3, n_slices=1, k_add=4)

    assert result.total_cost == pytest.approx(dense_optimum(cells, tiles), rel=1e-9)
    assert result.rounds > 1


@pytest.mark.parametrize(("n_cells", "n_tiles"), [(100, 100), (100, 250), (100, 30), (101, 10)])
def test_unique_never_uses_a_tile_more_than_allowed(
    rng: np.random.Generator, n_cells: int, n_tiles: int
) -> None:
    cells = rng.uniform(0, 100, size=(n_cells, 3))
    tiles = rng.uniform(0, 100, size=(n_tiles, 3))

    result = assign_unique(cells, tiles)

    allowed = -(-n_cells // n_tiles) if n_tiles < n_cells else 1
    assert result.max_uses == allowed
    assert np.bincount(result.tile_for_cell, minlength=n_tiles).max() <= allowed
    assert result.tile_for_cell.min() >= 0
    assert result.tile_for_cell.max() < n_tiles


def test_unique_handles_identical_tiles(rng: np.random.Generator) -> None:
    cells = rng.uniform(0, 100, size=(30, 3))
    tiles = np.repeat(rng.uniform(0, 100, size=(5, 3)), 8, axis=0)

    result = assign_unique(cells, tiles)

    assert result.total_cost == pytest.approx(dense_optimum(cells, tiles), rel=1e-9)
    assert len(set(result.tile_for_cell.tolist())) == 30


def test_nearest_picks_the_closest_tile(rng: np.random.Generator) -> None:
    cells = rng.uniform(0, 100, size=(500, 6))
    tiles = rng.uniform(0, 100, size=(80, 6))

    chosen = assign_nearest(cells, tiles)

    dist = cdist(cells, tiles, "sqeuclidean")
    np.testing.assert_allclose(dist[np.arange(500), chosen], dist.min(axis=1))


@pytest.mark.parametrize(
    ("cells", "tiles", "message"),
    [
        (np.zeros((0, 3)), np.zeros((4, 3)), "cells must be a non-empty 2-D array"),
        (np.zeros((3, 3)), np.zeros((0, 3)), "tiles must be a non-empty 2-D array"),
        (np.zeros(3), np.zeros((4, 3)), "cells must be a non-empty 2-D array"),
        (np.zeros((3, 3)), np.zeros((4, 2)), "same length, got 3 and 2"),
        (np.full((3, 3), np.nan), np.zeros((4, 3)), "cells contains NaN"),
    ],
)
def test_bad_descriptors_are_rejected(cells: np.ndarray, tiles: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        assign_unique(cells, tiles)
    with pytest.raises(ValueError, match=message):
        assign_nearest(cells, tiles)


def test_bad_solver_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="k, k_coarse, k_add and n_slices must be at least 1"):
        assign_unique(np.zeros((2, 3)), np.ones((2, 3)), k=0)
    with pytest.raises(ValueError, match="coarse must be 0 or more, got -1"):
        assign_unique(np.zeros((2, 3)), np.ones((2, 3)), coarse=-1)


@pytest.mark.parametrize("coarse", [0, 20])
@pytest.mark.parametrize(("n_cells", "n_tiles"), [(300, 300), (300, 500), (300, 140)])
def test_unique_is_exact_when_the_target_colours_are_far_from_the_tiles(
    rng: np.random.Generator,
    n_cells: int,
    n_tiles: int,
    coarse: int,
) -> None:
    # As in the benchmark: a photo with a flat white area (many identical cells) against tiles
    # whose colours are shifted and spread differently, so optimal pairs are far apart.
    cells = rng.normal([60, 10, -20], [15, 20, 20], size=(n_cells, 3))
    cells[: n_cells // 3] = [100.0, 0.0, 0.0]
    tiles = rng.normal([40, -15, 25], [25, 10, 10], size=(n_tiles, 3))

    # Small options, so that the certificate has work to do; coarse=20: the graph is seeded
    # from a 20 x 20 cluster problem.
    result = assign_unique(cells, tiles, k=4, k_coarse=4, n_slices=2, k_add=4, coarse=coarse)

    assert result.total_cost == pytest.approx(dense_optimum(cells, tiles), rel=1e-9)
    assert np.bincount(result.tile_for_cell, minlength=n_tiles).max() <= result.max_uses


@pytest.mark.parametrize(("n_cells", "n_tiles"), [(300, 300), (300, 500), (200, 900)])
def test_unique_is_exact_when_every_round_starts_with_a_new_auction(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, n_cells: int, n_tiles: int
) -> None:
    # A new auction moves potentials both ways (its reverse iterations lower the prices of
    # free tiles): what each cell's last scan proved must be carried over with that taken
    # into account, or a violated pair goes unseen.
    monkeypatch.setattr(assignment, "REAUCTION_SHARE", 0.0)
    cells = rng.normal([60, 10, -20], [15, 20, 20], size=(n_cells, 3))
    tiles = rng.normal([40, -15, 25], [25, 10, 10], size=(n_tiles, 3))

    result = assign_unique(cells, tiles, k=2, k_coarse=2, n_slices=1, k_add=2, coarse=20)

    assert result.rounds > 2
    assert result.total_cost == pytest.approx(dense_optimum(cells, tiles), rel=1e-12)


@pytest.mark.parametrize("leaf_size", [1, 8, 1000])
def test_slot_search_finds_the_smallest_reduced_values_below_the_bound(
    rng: np.random.Generator, leaf_size: int
) -> None:
    from photo_mosaic.assignment import _SlotSearch

    cells = rng.normal(size=(200, 3)) * 10
    slots = rng.normal(size=(300, 3)) * 10
    v = -rng.uniform(0, 50, size=300)
    bound = rng.uniform(-30, 60, size=200)
    search = _SlotSearch(slots, leaf_size)

    vals, idx = search.scan(cells, v, bound, 5)
    best = search.best(cells, v, 7)

    full = cdist(cells, slots, "sqeuclidean") - v[None, :]
    for i in range(200):
        expected = np.sort(full[i][full[i] < bound[i]])[:5]
        np.testing.assert_allclose(vals[i, : expected.shape[0]], expected)
        np.testing.assert_allclose(full[i, idx[i, : expected.shape[0]]], expected)
        assert np.all(idx[i, expected.shape[0] :] == -1)
        np.testing.assert_allclose(np.sort(full[i, best[i]]), np.sort(full[i])[:7])


@pytest.mark.parametrize("block_cells", [None, 7])
@pytest.mark.parametrize(("dim", "offset"), [(12, 0.0), (27, 0.0), (27, 1000.37)])
def test_dense_slot_search_finds_the_same_smallest_values_as_every_pair(
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
    dim: int,
    offset: float,
    block_cells: int | None,
) -> None:
    from photo_mosaic.assignment import _SlotSearch

    if block_cells:  # many blocks of 7 cells, shared out between the worker threads
        monkeypatch.setattr(assignment, "DENSE_BLOCK_FLOATS", block_cells * 700)

    # Few distinct values (ties at the bound and between slots); an offset makes the float32
    # filter's rounding larger than the gaps between values.
    cells = rng.integers(0, 4, size=(150, dim)) * 7.0 + offset
    slots = rng.integers(0, 4, size=(700, dim)) * 7.0 + offset
    v = -rng.integers(0, 30, size=700) * 5.0
    full = cdist(cells, slots, "sqeuclidean") - v[None, :]
    bound = np.sort(full, axis=1)[:, 20] + rng.choice([0.0, 1e-3, 5.0], size=150)
    search = _SlotSearch(slots, 32)
    assert search.dense

    vals, idx = search.scan(cells, v, bound, 12)

    for i in range(150):
        expected = np.sort(full[i][full[i] < bound[i]])[:12]
        np.testing.assert_allclose(vals[i, : expected.shape[0]], expected, rtol=1e-12)
        np.testing.assert_allclose(full[i, idx[i, : expected.shape[0]]], expected, rtol=1e-12)
        assert np.unique(idx[i, : expected.shape[0]]).shape[0] == expected.shape[0]
        assert np.all(idx[i, expected.shape[0] :] == -1)


@pytest.mark.parametrize("leaf_size", [1, 8, 1000])
def test_a_scan_certifies_later_potentials_only_where_no_pair_can_violate(
    rng: np.random.Generator, leaf_size: int
) -> None:
    from photo_mosaic.assignment import _SlotSearch, _still_certified

    cells = rng.normal(size=(300, 3)) * 10
    slots = rng.normal(size=(400, 3)) * 10
    v = -rng.uniform(0, 50, size=400)
    u = (cdist(cells, slots, "sqeuclidean") - v).min(axis=1) - rng.uniform(0, 5, size=300)
    search = _SlotSearch(slots, leaf_size)
    bound = u + 20.0
    vals, listed = search.scan(cells, v, bound, 4)
    floor = np.minimum(bound, vals[:, -1])
    # As a repair does: column potentials go down by at least `shift` (some by much more),
    # row potentials go up, some by more than the scan's margin.
    shift = -3.0
    v_new = v + shift - rng.exponential(2.0, size=400) * (rng.random(400) < 0.3)
    u_new = u + shift + rng.exponential(8.0, size=300)
    which = np.arange(300)

    ok = _still_certified(cells, slots, v_new, u_new, listed, floor + shift, which, 1e-9)

    lowest = (cdist(cells, slots, "sqeuclidean") - v_new).min(axis=1)
    assert np.all(lowest[ok] >= u_new[ok] - 1e-9)
    assert 0 < ok.sum() < 300  # some cells kept, some sent back to a scan
    # Cells the check keeps are a subset of those that hold no violated pair.
    assert ok.sum() <= (lowest >= u_new - 1e-9).sum()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_cells=st.integers(1, 40),
    n_tiles=st.integers(1, 60),
    dim=st.sampled_from([3, 12, 27]),
    levels=st.integers(1, 4),
    duplicate_cells=st.booleans(),
    duplicate_tiles=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_unique_fuzz_against_the_dense_solver_with_ties_and_duplicates(
    n_cells: int,
    n_tiles: int,
    dim: int,
    levels: int,
    duplicate_cells: bool,
    duplicate_tiles: bool,
    seed: int,
) -> None:
    # Few distinct integer values: many equal costs (ties); copies: identical cells and tiles.
    gen = np.random.default_rng(seed)
    cells = gen.integers(0, levels + 1, size=(n_cells, dim)).astype(float) * 10
    tiles = gen.integers(0, levels + 1, size=(n_tiles, dim)).astype(float) * 10
    if duplicate_cells:
        cells[n_cells // 2 :] = cells[0]
    if duplicate_tiles:
        tiles[: n_tiles // 2] = tiles[-1]

    # Small options, so that the certificate and its extra rounds are exercised.
    result = assign_unique(cells, tiles, k=2, k_coarse=2, k_add=2, n_slices=1, coarse=3)

    assert result.total_cost == pytest.approx(dense_optimum(cells, tiles), rel=1e-9, abs=1e-9)
    counts = np.bincount(result.tile_for_cell, minlength=n_tiles)
    assert counts.max() <= result.max_uses
    assert result.tile_for_cell.shape == (n_cells,)
