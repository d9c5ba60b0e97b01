"""Shortest-augmenting-path solver for sparse rectangular assignment problems (numba kernel).

The solver is the Hungarian method in its shortest-augmenting-path form (Jonker-Volgenant,
Crouse 2016) on a sparse bipartite graph stored as CSR: rows are cells, columns are tile slots,
``n_rows <= n_cols``. Every row is matched to one column and every column used at most once.

It keeps dual potentials ``u`` (rows) and ``v`` (columns) with reduced costs
``c_ij - u_i - v_j >= 0`` on every edge, equality on matched edges, ``v_j <= 0`` everywhere and
``v_j == 0`` on unmatched columns: the linear-programming optimality certificate that the caller
extends from the sparse graph to the full bipartite graph.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

_INF = np.inf


@njit(cache=True, nogil=True)
def _heap_push(
    keys: npt.NDArray[np.float64], vals: npt.NDArray[np.int64], size: int, key: float, val: int
) -> int:
    pos = size
    keys[pos] = key
    vals[pos] = val
    while pos > 0:
        parent = (pos - 1) >> 1
        if keys[parent] <= keys[pos]:
            break
        keys[parent], keys[pos] = keys[pos], keys[parent]
        vals[parent], vals[pos] = vals[pos], vals[parent]
        pos = parent
    return size + 1


@njit(cache=True, nogil=True)
def _heap_pop(keys: npt.NDArray[np.float64], vals: npt.NDArray[np.int64], size: int) -> int:
    size -= 1
    keys[0] = keys[size]
    vals[0] = vals[size]
    pos = 0
    while True:
        left = 2 * pos + 1
        if left >= size:
            break
        child = left
        if left + 1 < size and keys[left + 1] < keys[left]:
            child = left + 1
        if keys[pos] <= keys[child]:
            break
        keys[child], keys[pos] = keys[pos], keys[child]
        vals[child], vals[pos] = vals[pos], vals[child]
        pos = child
    return size


@njit(cache=True, nogil=True)
def _row_min(
    i: int,
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int64],
    costs: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
) -> float:
    best = _INF
    for e in range(indptr[i], indptr[i + 1]):
        val = costs[e] - v[indices[e]]
        if val < best:
            best = val
    return best


@njit(cache=True, nogil=True)
def _pop_unsettled(
    heap_keys: npt.NDArray[np.float64],
    heap_vals: npt.NDArray[np.int64],
    size: int,
    dist: npt.NDArray[np.float64],
    done: npt.NDArray[np.int64],
    run: int,
    bound: float,
) -> tuple[int, int]:
    """Pop the closest column not yet settled in this run and closer than ``bound``; -1 if none."""
    while size > 0:
        key = heap_keys[0]
        if key >= bound:
            return -1, 0
        cand = heap_vals[0]
        size = _heap_pop(heap_keys, heap_vals, size)
        if done[cand] != run and key <= dist[cand]:
            return cand, size
    return -1, size


@njit(cache=True, nogil=True)
def solve_sparse_lap(
    n_cols: int,
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int64],
    costs: npt.NDArray[np.float64],
    col4row_start: npt.NDArray[np.int64],
    v_start: npt.NDArray[np.float64],
    tight_tol: float,
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64], bool
]:  # pragma: no cover - compiled
    """Solve the sparse assignment problem exactly from a warm start; return (col4row, u, v, ok).

    ``col4row_start`` (-1 for an unmatched row) and the column potentials ``v_start`` may be
    anything (cold start: all -1 and all 0). They are first repaired into a dual-feasible state:
    matched columns raised until their edge is tight, ``u_i = min_j (c_ij - v_j)``, rows whose
    edge is then not tight (within ``tight_tol``) unmatched, and every matched column lowered to
    at most the lowest potential of a free column (the potential of the implicit sink that free
    columns drain into). Free rows are then augmented along shortest paths (Dijkstra on reduced
    costs) to the sink. On return ``v <= 0`` with ``v == 0`` on free columns. ``ok`` is False when
    some row cannot be matched in the sparse graph.
    """
    n_rows = indptr.shape[0] - 1
    col4row = col4row_start.copy()
    v = v_start.copy()
    row4col = np.full(n_cols, -1, dtype=np.int64)
    u = np.zeros(n_rows, dtype=np.float64)
    matched_cost = np.full(n_rows, _INF, dtype=np.float64)

    # 1. Keep matched edges that exist (one row per column), raise their columns to tightness.
    for i in range(n_rows):
        if indptr[i + 1] == indptr[i]:
            return col4row, u, v, False
        j = col4row[i]
        if j < 0:
            continue
        if row4col[j] >= 0:
            col4row[i] = -1
            continue
        for e in range(indptr[i], indptr[i + 1]):
            if indices[e] == j:
                matched_cost[i] = costs[e]
                break
        if matched_cost[i] == _INF:
            col4row[i] = -1
        else:
            row4col[j] = i
    for i in range(n_rows):
        u[i] = _row_min(i, indptr, indices, costs, v)
    for i in range(n_rows):
        j = col4row[i]
        if j >= 0:
            v[j] = max(v[j], matched_cost[i] - u[i])
    # 2. Row potentials from the final v; unmatch rows whose edge is not tight.
    for i in range(n_rows):
        u[i] = _row_min(i, indptr, indices, costs, v)
        j = col4row[i]
        if j >= 0:
            slack = matched_cost[i] - v[j] - u[i]
            if slack > tight_tol:
                col4row[i] = -1
                row4col[j] = -1
            else:
                u[i] = matched_cost[i] - v[j]
    # 3. The sink: free columns at or above ``top``, matched columns at or below it.
    top = _INF
    for j in range(n_cols):
        if row4col[j] < 0 and v[j] < top:
            top = v[j]
    if top == _INF:
        top = 0.0
        for j in range(n_cols):
            top = max(top, v[j])
    for i in range(n_rows):
        j = col4row[i]
        if j >= 0 and v[j] > top:
            v[j] = top
            u[i] = _row_min(i, indptr, indices, costs, v)
            if matched_cost[i] - v[j] - u[i] > tight_tol:
                col4row[i] = -1
                row4col[j] = -1
            else:
                u[i] = matched_cost[i] - v[j]

    # 4. Shortest augmenting paths.
    dist = np.full(n_cols, _INF, dtype=np.float64)
    pred = np.full(n_cols, -1, dtype=np.int64)
    stamp = np.zeros(n_cols, dtype=np.int64)  # == run: dist/pred valid in this search
    done = np.zeros(n_cols, dtype=np.int64)  # == run: column settled in this search
    settled = np.empty(n_cols, dtype=np.int64)
    heap_size = indices.shape[0] + n_rows + 1
    heap_keys = np.empty(heap_size, dtype=np.float64)
    heap_vals = np.empty(heap_size, dtype=np.int64)
    run = 0
    for source in range(n_rows):
        if col4row[source] >= 0:
            continue
        run += 1
        size = 0
        n_settled = 0
        sink = -1
        sink_dist = _INF
        row = source
        d_row = 0.0
        while True:
            if row >= 0:
                u_row = u[row]
                for e in range(indptr[row], indptr[row + 1]):
                    j = indices[e]
                    if done[j] == run:
                        continue
                    r = costs[e] - u_row - v[j]
                    nd = d_row + (r if r > 0.0 else 0.0)
                    if nd < sink_dist and (stamp[j] != run or nd < dist[j]):
                        stamp[j] = run
                        dist[j] = nd
                        pred[j] = row
                        size = _heap_push(heap_keys, heap_vals, size, nd, j)
            j, size = _pop_unsettled(heap_keys, heap_vals, size, dist, done, run, sink_dist)
            if j < 0:
                break
            done[j] = run
            settled[n_settled] = j
            n_settled += 1
            if row4col[j] < 0:
                through = dist[j] + (v[j] - top if v[j] > top else 0.0)
                if through < sink_dist:
                    sink_dist = through
                    sink = j
                row = -1
            else:
                row = row4col[j]
                d_row = dist[j]
        if sink < 0:
            return col4row, u, v, False
        # Potentials: settled nodes closer than the sink move by sink_dist - dist.
        u[source] += sink_dist
        for t in range(n_settled):
            j = settled[t]
            delta = sink_dist - dist[j]
            if delta <= 0.0:
                continue
            v[j] -= delta
            if row4col[j] >= 0:
                u[row4col[j]] += delta
        # Augment along the predecessor chain.
        j = sink
        while True:
            i = pred[j]
            prev = col4row[i]
            col4row[i] = j
            row4col[j] = i
            if i == source:
                break
            j = prev
    # Normalise: free columns at the top, then shift so that the top is 0.
    for j in range(n_cols):
        if row4col[j] < 0:
            v[j] = top
        v[j] -= top
    for i in range(n_rows):
        u[i] += top
    return col4row, u, v, True
