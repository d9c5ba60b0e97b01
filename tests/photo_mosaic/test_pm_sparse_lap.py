"""The sparse shortest-augmenting-path solver against scipy's dense solver, from any warm start."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from photo_mosaic._sparse_lap import auction, best_in_groups, build_csr, solve_sparse_lap

MISSING = 1e6  # cost of a pair that is not an edge, in the dense comparison


def matching(gen: np.random.Generator, n_rows: int, n_cols: int) -> np.ndarray:
    """A random injection rows -> columns, drawn from ``gen`` (the same draw twice from
    generators in the same state)."""
    return gen.permutation(n_cols)[:n_rows]


def sparse_graph(
    gen: np.random.Generator, n_rows: int, n_cols: int, density: float, levels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CSR graph holding a full matching (a random injection rows -> columns) plus random edges;
    few distinct costs (ties). Returns (indptr, indices, costs, dense matrix)."""
    dense = np.full((n_rows, n_cols), MISSING)
    keep = gen.random((n_rows, n_cols)) < density
    keep[np.arange(n_rows), matching(gen, n_rows, n_cols)] = True
    dense[keep] = gen.integers(0, levels + 1, size=int(keep.sum())) * 7.0
    rows, cols = np.nonzero(keep)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr, cols.astype(np.int64), dense[rows, cols], dense


def check_exact(
    indptr: np.ndarray,
    indices: np.ndarray,
    costs: np.ndarray,
    dense: np.ndarray,
    result: tuple[np.ndarray, np.ndarray, np.ndarray, bool, np.ndarray, float],
) -> None:
    col4row, u, v, ok, _, _ = result
    n_rows, n_cols = dense.shape
    assert ok
    assert np.all(col4row >= 0)
    assert np.unique(col4row).shape[0] == n_rows  # every column at most once
    rows, cols = linear_sum_assignment(dense)
    assert dense[np.arange(n_rows), col4row].sum() == dense[rows, cols].sum()
    # The certificate the caller relies on: reduced costs >= 0 on every edge, 0 on the chosen
    # pairs, v <= 0 and v == 0 on unused columns.
    row_of_edge = np.repeat(np.arange(n_rows), np.diff(indptr))
    reduced = costs - u[row_of_edge] - v[indices]
    assert reduced.min() >= -1e-9
    np.testing.assert_allclose(dense[np.arange(n_rows), col4row] - u - v[col4row], 0, atol=1e-9)
    assert v.max() <= 1e-12
    free = np.ones(n_cols, dtype=bool)
    free[col4row] = False
    np.testing.assert_allclose(v[free], 0, atol=1e-12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_rows=st.integers(1, 25),
    extra_cols=st.integers(0, 30),
    density=st.floats(0.05, 1.0),
    levels=st.integers(1, 6),
    start=st.sampled_from(["cold", "previous", "junk"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_sparse_lap_is_exact_from_any_warm_start(
    n_rows: int,
    extra_cols: int,
    density: float,
    levels: int,
    start: str,
    seed: int,
) -> None:
    gen = np.random.default_rng(seed)
    n_cols = n_rows + extra_cols
    indptr, indices, costs, dense = sparse_graph(gen, n_rows, n_cols, density, levels)
    tol = 1e-9
    if start == "cold":
        col4row = np.full(n_rows, -1, dtype=np.int64)
        v = np.zeros(n_cols)
    elif start == "previous":
        # As between certification rounds: the exact solution on a subgraph (about half of the
        # edges, always with the full matching the graph was built around), then the graph
        # grows and new edges undercut it.
        replay = np.random.default_rng(seed)
        replay.random((n_rows, n_cols))
        full = matching(replay, n_rows, n_cols)
        rows_all = np.repeat(np.arange(n_rows), np.diff(indptr))
        sub_keep = (gen.random(indices.shape[0]) < 0.5) | (indices == full[rows_all])
        sub_dense = np.full_like(dense, MISSING)
        sub_dense[rows_all[sub_keep], indices[sub_keep]] = costs[sub_keep]
        sub_rows, sub_cols = np.nonzero(sub_dense < MISSING)
        sub_ptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(sub_rows, minlength=n_rows), out=sub_ptr[1:])
        sub_indices = sub_cols.astype(np.int64)
        first = solve_sparse_lap(
            n_cols,
            sub_ptr,
            sub_indices,
            sub_dense[sub_rows, sub_cols],
            np.full(n_rows, -1, dtype=np.int64),
            np.zeros(n_cols),
            tol,
        )
        assert first[3]
        col4row, v = first[0], first[2]
        u_first, v_first = first[1], first[2]
    else:
        # Anything: repeated and missing columns, potentials of both signs.
        col4row = gen.integers(-1, n_cols, size=n_rows).astype(np.int64)
        v = gen.normal(0, 20, size=n_cols)

    result = solve_sparse_lap(n_cols, indptr, indices, costs, col4row, v, tol)

    check_exact(indptr, indices, costs, dense, result)
    # Every column potential went down by at least the reported shift: every c_ij - v_j, edge
    # or not, grew by at least the shift, which lets the caller carry a lower bound from one
    # certificate to the next.
    assert (result[2] + result[5] - v).max() <= 1e-9
    if start == "previous":
        # Rows not reported as raised: the reduced cost of every pair (edge or not) has only
        # grown since the previous solution, which is what lets the caller skip them.
        _, u_new, v_new, _, raised, _ = result
        grown = (u_new - u_first)[~raised][:, None] + (v_new - v_first)[None, :]
        assert grown.size == 0 or grown.max() <= 1e-9


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_rows=st.integers(1, 25),
    extra_cols=st.integers(0, 30),
    density=st.floats(0.05, 1.0),
    levels=st.integers(1, 6),
    warm=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_auction_leaves_every_row_eps_optimal_and_free_columns_at_the_lowest_price(
    n_rows: int,
    extra_cols: int,
    density: float,
    levels: int,
    warm: bool,
    seed: int,
) -> None:
    gen = np.random.default_rng(seed)
    n_cols = n_rows + extra_cols
    indptr, indices, costs, dense = sparse_graph(gen, n_rows, n_cols, density, levels)
    eps_end = 1e-10  # far below the cost steps (7), so the repair keeps every row it can
    if warm:  # any prices and any (partly invalid) previous matching
        prices = gen.normal(0, 20, size=n_cols)
        col4row = gen.integers(-1, n_cols, size=n_rows).astype(np.int64)
    else:
        prices = np.zeros(n_cols)
        col4row = np.full(n_rows, -1, dtype=np.int64)

    col4row, prices = auction(n_cols, indptr, indices, costs, prices, 50.0, eps_end, 100.0, col4row)

    assert np.all(col4row >= 0)
    assert np.unique(col4row).shape[0] == n_rows
    assert np.all(dense[np.arange(n_rows), col4row] < MISSING)  # only edges
    # Epsilon-complementary slackness on every row ...
    paid = dense[np.arange(n_rows), col4row] + prices[col4row]
    row_of_edge = np.repeat(np.arange(n_rows), np.diff(indptr))
    best = np.full(n_rows, np.inf)
    np.minimum.at(best, row_of_edge, costs + prices[indices])
    assert (paid - best).max() <= eps_end + 1e-9
    # ... and every free column at the lowest price level (the top potential), which is what
    # makes this a nearly optimal solution of the rectangular problem.
    free = np.ones(n_cols, dtype=bool)
    free[col4row] = False
    if free.any():
        assert np.ptp(prices[free]) == 0.0
        assert prices[free][0] <= prices[col4row].min()
    # The repair turns it into the exact optimum.
    check_exact(
        indptr,
        indices,
        costs,
        dense,
        solve_sparse_lap(n_cols, indptr, indices, costs, col4row, -prices, 4 * eps_end),
    )


def test_sparse_lap_reports_a_graph_without_a_full_matching() -> None:
    # Two rows that can only use column 0.
    indptr = np.array([0, 1, 2], dtype=np.int64)
    indices = np.array([0, 0], dtype=np.int64)
    costs = np.array([1.0, 2.0])

    ok = solve_sparse_lap(
        3, indptr, indices, costs, np.full(2, -1, dtype=np.int64), np.zeros(3), 1e-9
    )[3]

    assert not ok


@settings(max_examples=50, deadline=None)
@given(
    n_rows=st.integers(1, 30),
    n_cols=st.integers(1, 30),
    n_edges=st.integers(0, 200),
    seed=st.integers(0, 2**32 - 1),
)
def test_build_csr_sorts_each_row_and_keeps_one_of_each_pair(
    n_rows: int, n_cols: int, n_edges: int, seed: int
) -> None:
    gen = np.random.default_rng(seed)
    rows = gen.integers(0, n_rows, size=n_edges).astype(np.int64)
    cols = gen.integers(0, n_cols, size=n_edges).astype(np.int64)
    costs = gen.normal(size=n_edges)

    indptr, indices, csr_costs = build_csr(n_rows, n_cols, rows, cols, costs)

    keys, first = np.unique(rows * n_cols + cols, return_index=True)
    np.testing.assert_array_equal(np.repeat(np.arange(n_rows), np.diff(indptr)), keys // n_cols)
    np.testing.assert_array_equal(indices, keys % n_cols)
    np.testing.assert_array_equal(csr_costs, costs[first])


@settings(max_examples=50, deadline=None)
@given(
    n_cells=st.integers(1, 20),
    n_slots=st.integers(1, 40),
    n_groups=st.integers(1, 5),
    k=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_best_in_groups_finds_the_k_best_slots_of_each_cells_group(
    n_cells: int, n_slots: int, n_groups: int, k: int, seed: int
) -> None:
    gen = np.random.default_rng(seed)
    cells = gen.integers(0, 4, size=(n_cells, 3)).astype(float)
    slots = gen.integers(0, 4, size=(n_slots, 3)).astype(float)
    v = -gen.integers(0, 3, size=n_slots).astype(float)
    members = [np.nonzero(gen.random(n_slots) < 0.5)[0] for _ in range(n_groups)]
    group_ptr = np.concatenate([[0], np.cumsum([m.shape[0] for m in members])]).astype(np.int64)
    group_slots = np.concatenate(members).astype(np.int64)
    cell_group = gen.integers(0, n_groups, size=n_cells).astype(np.int64)

    found = best_in_groups(cells, cell_group, slots, v, group_ptr, group_slots, k)

    for i in range(n_cells):
        mine = members[cell_group[i]]
        values = ((cells[i] - slots[mine]) ** 2).sum(axis=1) - v[mine]
        n_found = min(k, mine.shape[0])
        assert np.all(found[i, n_found:] == -1)
        got = found[i, :n_found]
        assert np.all(np.isin(got, mine))
        assert np.unique(got).shape[0] == n_found
        got_values = ((cells[i] - slots[got]) ** 2).sum(axis=1) - v[got]
        np.testing.assert_array_equal(got_values, np.sort(values)[:n_found])
