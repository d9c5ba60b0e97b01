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
from numba import njit, prange

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
def _by_column(
    n_cols: int,
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int64],
    costs: npt.NDArray[np.float64],
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]
]:  # pragma: no cover - compiled
    """The CSR graph's edges column by column: ``(col_ptr, col_rows, col_costs)``, column ``j``'s
    edges at ``col_ptr[j]:col_ptr[j + 1]``."""
    n_edges = indices.shape[0]
    col_ptr = np.zeros(n_cols + 1, dtype=np.int64)
    col_rows = np.empty(n_edges, dtype=np.int64)
    col_costs = np.empty(n_edges, dtype=np.float64)
    for e in range(n_edges):
        col_ptr[indices[e] + 1] += 1
    for j in range(n_cols):
        col_ptr[j + 1] += col_ptr[j]
    fill = col_ptr[:-1].copy()
    for i in range(indptr.shape[0] - 1):
        for e in range(indptr[i], indptr[i + 1]):
            j = indices[e]
            col_rows[fill[j]] = i
            col_costs[fill[j]] = costs[e]
            fill[j] += 1
    return col_ptr, col_rows, col_costs


# Reverse iterations per column and scaling phase at most. Identical rows can make them lower
# a price by only epsilon at a time (a price war); the free columns still priced above the
# lowest taken price after that many are left to the exact repair, which raises them to the top
# potential.
REVERSE_BUDGET = 20


@njit(cache=True, nogil=True)
def auction(
    n_cols: int,
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int64],
    costs: npt.NDArray[np.float64],
    prices_start: npt.NDArray[np.float64],
    eps_start: float,
    eps_end: float,
    big: float,
    col4row_start: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:  # pragma: no cover - compiled
    """Forward-reverse auction with epsilon scaling (Bertsekas), Gauss-Seidel bidding.

    Returns ``(col4row, prices)`` of an assignment of every row satisfying epsilon-complementary
    slackness with ``eps_end`` on the sparse graph: a fast, nearly optimal warm start
    (``v = -prices``) for :func:`solve_sparse_lap`. ``big`` is the bid increment of a row with a
    single edge.

    Each scaling phase keeps the rows (``col4row_start`` at the first) that satisfy
    epsilon-complementary slackness at its epsilon, and the others bid (forward auction: a row
    takes its best column and raises its price until the second best is as good, plus
    epsilon). With more columns than rows, a forward auction alone leaves columns that a row
    gave up at the high price it had paid, where the optimum needs every free column at the
    lowest price level: the phase then runs reverse iterations (Bertsekas and Castanon 1992)
    for the free columns priced above ``lam``, the lowest price of a taken column. Such a
    column lowers its price to what its best row would pay for it, and takes that row when
    that is above ``lam`` (the row's old column is then free in turn), else parks at ``lam``.
    Lowering a price that way keeps every row's slackness, so at the end every row is
    epsilon-optimal, every taken column is priced at least ``lam`` and every free column at
    most ``lam``; free columns are then raised to ``lam`` (raising a free column's price keeps
    every row's slackness), the top potential that the repair needs them at. The reverse
    iterations of a phase stop after ``REVERSE_BUDGET`` per column (a price war between
    identical rows); the free columns left above ``lam`` then are ordinary warm-start input for
    the repair.
    """
    n_rows = indptr.shape[0] - 1
    prices = prices_start.copy()
    col4row = np.full(n_rows, -1, dtype=np.int64)
    row4col = np.full(n_cols, -1, dtype=np.int64)
    matched_cost = np.zeros(n_rows, dtype=np.float64)
    queue = np.empty(n_rows, dtype=np.int64)
    reverse = n_cols > n_rows
    # Column-wise edges, for the reverse iterations.
    if reverse:
        col_ptr, col_rows, col_costs = _by_column(n_cols, indptr, indices, costs)
    else:
        col_ptr, col_rows, col_costs = _by_column(0, indptr[:1], indices[:0], costs[:0])
    col_queue = np.empty(n_cols if reverse else 0, dtype=np.int64)
    for i in range(n_rows):
        j = col4row_start[i]
        if j < 0 or row4col[j] >= 0:
            continue
        for e in range(indptr[i], indptr[i + 1]):
            if indices[e] == j:
                col4row[i] = j
                row4col[j] = i
                matched_cost[i] = costs[e]
                break
    eps = eps_start
    lam = 0.0
    while True:
        # Keep the rows that satisfy epsilon-complementary slackness at this epsilon.
        count = 0
        for i in range(n_rows):
            j = col4row[i]
            if j >= 0:
                best = _INF
                for e in range(indptr[i], indptr[i + 1]):
                    best = min(best, costs[e] + prices[indices[e]])
                if matched_cost[i] + prices[j] <= best + eps:
                    continue
                row4col[j] = -1
                col4row[i] = -1
            queue[count] = i
            count += 1
        # Forward iterations: every row gets a column.
        head = 0
        while count > 0:
            i = queue[head]
            head = head + 1 if head + 1 < n_rows else 0
            count -= 1
            best1 = _INF
            best2 = _INF
            j1 = -1
            c1 = 0.0
            for e in range(indptr[i], indptr[i + 1]):
                val = costs[e] + prices[indices[e]]
                if val < best1:
                    best2 = best1
                    best1 = val
                    j1 = indices[e]
                    c1 = costs[e]
                elif val < best2:
                    best2 = val
            if best2 == _INF:
                best2 = best1 + big
            prices[j1] += best2 - best1 + eps
            old = row4col[j1]
            row4col[j1] = i
            col4row[i] = j1
            matched_cost[i] = c1
            if old >= 0:
                col4row[old] = -1
                tail = head + count
                queue[tail if tail < n_rows else tail - n_rows] = old
                count += 1
        if reverse:
            # Reverse iterations: free columns priced above the lowest taken price come down.
            lam = _INF
            for j in range(n_cols):
                if row4col[j] >= 0:
                    lam = min(lam, prices[j])
            count = 0
            for j in range(n_cols):
                if row4col[j] < 0 and prices[j] > lam:
                    col_queue[count] = j
                    count += 1
            head = 0
            budget = REVERSE_BUDGET * n_cols
            while count > 0 and budget > 0:
                budget -= 1
                j = col_queue[head]
                head = head + 1 if head + 1 < n_cols else 0
                count -= 1
                # What each row would pay for j: its current cost and price, less c_ij.
                pay1 = -_INF
                pay2 = -_INF
                i1 = -1
                c1 = 0.0
                for e in range(col_ptr[j], col_ptr[j + 1]):
                    i = col_rows[e]
                    pay = matched_cost[i] + prices[col4row[i]] - col_costs[e]
                    if pay > pay1:
                        pay2 = pay1
                        pay1 = pay
                        i1 = i
                        c1 = col_costs[e]
                    elif pay > pay2:
                        pay2 = pay
                if i1 < 0 or pay1 <= lam + eps:
                    prices[j] = lam
                    continue
                old = col4row[i1]
                prices[j] = max(lam, pay2 - eps)
                row4col[j] = i1
                col4row[i1] = j
                matched_cost[i1] = c1
                row4col[old] = -1
                if prices[old] > lam:
                    tail = head + count
                    col_queue[tail if tail < n_cols else tail - n_cols] = old
                    count += 1
        if eps <= eps_end:
            break
        eps = max(eps / 5.0, eps_end)
    if reverse:
        for j in range(n_cols):
            if row4col[j] < 0 and prices[j] < lam:
                prices[j] = lam
    return col4row, prices


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


# pred[] marker: the column was reached from the implicit dummy rows (see solve_sparse_lap).
_FROM_DUMMY = -2


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
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    bool,
    npt.NDArray[np.bool_],
    float,
]:  # pragma: no cover - compiled
    """Solve the sparse assignment problem exactly from a warm start.

    Returns ``(col4row, u, v, ok, raised, shift)``.

    ``col4row_start`` (-1 for an unmatched row) and the column potentials ``v_start`` may be
    anything (cold start: all -1 and all 0). They are first repaired into a dual-feasible state:
    matched columns raised until their edge is tight, ``u_i = min_j (c_ij - v_j)``, rows whose
    edge is then not tight (within ``tight_tol``) unmatched. Free rows are then augmented along
    shortest paths (Dijkstra on reduced costs). On return ``v <= 0`` with ``v == 0`` on free
    columns. ``ok`` is False when some row cannot be matched in the sparse graph. ``raised`` marks
    the rows whose potential ``u_i`` ended above ``min_j (c_ij - v_j)`` under the starting
    potentials, shifted as ``u`` and ``v`` are (every row when a column had to be raised): from an
    exact solution of a smaller graph, every other row's reduced costs can only have grown, for
    every column, in the sparse graph and outside it. ``shift`` bounds how the column potentials
    moved: ``v_j + shift <= v_start_j`` for every column (so every ``c_ij - v_j`` rose by at least
    ``shift``, in the sparse graph and outside it); ``-inf`` when no full matching was found.

    With more columns than rows the problem is solved as the square one with
    ``n_cols - n_rows`` implicit dummy rows of cost 0 to every column. Those rows are identical,
    so they share one potential ``-top`` and the columns they hold (the free columns of the
    real problem) all sit at ``v == top``, the largest potential. The dummy rows are one node of
    the shortest-path search: reached through any column they hold, they reach every other
    column ``j`` at reduced cost ``top - v_j`` (visited in decreasing order of ``v``, only as far
    as the search needs). Columns that a warm start frees below ``top`` are then ordinary free
    columns of the square problem that paths end at: nothing is raised in a cascade.
    """
    n_rows = indptr.shape[0] - 1
    col4row = col4row_start.copy()
    v = v_start.copy()
    row4col = np.full(n_cols, -1, dtype=np.int64)
    u = np.zeros(n_rows, dtype=np.float64)
    matched_cost = np.full(n_rows, _INF, dtype=np.float64)

    # 1. Keep the matched edges that exist (one row per column).
    for i in range(n_rows):
        if indptr[i + 1] == indptr[i]:
            return col4row, u, v, False, np.ones(n_rows, dtype=np.bool_), -_INF
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
    free_in = row4col < 0
    # 2. Row potentials u_i = min_j (c_ij - v_j); unmatch rows whose edge is no longer tight
    #    (a new edge undercuts it).
    for i in range(n_rows):
        u[i] = _row_min(i, indptr, indices, costs, v)
        j = col4row[i]
        if j >= 0 and matched_cost[i] - v[j] - u[i] > tight_tol:
            col4row[i] = -1
            row4col[j] = -1
    # 3. With more columns than rows, the dummy rows take n_cols - n_rows of the columns that
    #    were free on entry, at the top potential: raise those below it, and unmatch the rows
    #    that a raised column now undercuts (their columns become free columns of the square
    #    problem, left where they are).
    square = n_rows == n_cols
    top = -_INF
    for j in range(n_cols):
        top = max(top, v[j])
    held = np.zeros(n_cols, dtype=np.bool_)  # held by a dummy row
    raise_any = False
    max_raise = 0.0
    if not square:
        for j in range(n_cols):
            if free_in[j] and v[j] < top:
                raise_any = True
                break
        if raise_any:
            col_ptr, col_rows, col_costs = _by_column(n_cols, indptr, indices, costs)
            for j0 in range(n_cols):
                if not free_in[j0] or v[j0] >= top:
                    continue
                max_raise = max(max_raise, top - v[j0])
                v[j0] = top
                for e in range(col_ptr[j0], col_ptr[j0 + 1]):
                    k = col_rows[e]
                    val = col_costs[e] - top
                    if val < u[k]:
                        u[k] = val
                        jk = col4row[k]
                        if jk >= 0 and matched_cost[k] - v[jk] - val > tight_tol:
                            col4row[k] = -1
                            row4col[jk] = -1
        n_held = 0
        for j in range(n_cols):
            if n_held == n_cols - n_rows:
                break
            if free_in[j]:
                held[j] = True
                n_held += 1

    # Rows whose potential rises from here on (all of them when a column was raised): the only
    # places where a pair that satisfied the optimality conditions before can now violate them.
    u_base = u.copy()
    if not square and raise_any:
        u_base[:] = -_INF
    # 4. Shortest augmenting paths. The dummy rows' node has the heap value n_cols.
    dist = np.full(n_cols, _INF, dtype=np.float64)
    pred = np.full(n_cols, -1, dtype=np.int64)
    stamp = np.zeros(n_cols, dtype=np.int64)  # == run: dist/pred valid in this search
    done = np.zeros(n_cols, dtype=np.int64)  # == run: column settled in this search
    settled = np.empty(n_cols, dtype=np.int64)
    # Columns in decreasing order of their potential at this point: potentials only go down
    # during the searches, so top - v_sorted[j] is a lower bound of the dummy's reduced cost.
    by_v = np.argsort(-v)
    v_sorted = v.copy()
    heap_size = 2 * indices.shape[0] + n_cols + n_rows + 2
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
        dummy_dist = _INF
        dummy_entry = -1
        dummy_done = False
        stream = n_cols  # position in by_v while the dummy node is settled; n_cols: off
        row = source
        d_row = 0.0
        while True:
            if row >= 0:
                u_row = u[row]
                for e in range(indptr[row], indptr[row + 1]):
                    j = indices[e]
                    if held[j]:
                        if not dummy_done:
                            r = costs[e] - u_row - top
                            nd = d_row + (r if r > 0.0 else 0.0)
                            if nd < sink_dist and nd < dummy_dist:
                                dummy_dist = nd
                                dummy_entry = j
                                pred[j] = row
                                size = _heap_push(heap_keys, heap_vals, size, nd, n_cols)
                        continue
                    if done[j] == run:
                        continue
                    r = costs[e] - u_row - v[j]
                    nd = d_row + (r if r > 0.0 else 0.0)
                    if nd < sink_dist and (stamp[j] != run or nd < dist[j]):
                        stamp[j] = run
                        dist[j] = nd
                        pred[j] = row
                        size = _heap_push(heap_keys, heap_vals, size, nd, j)
            # Pop the closest node not yet settled in this search and closer than the sink. Once
            # the dummy node is settled, its edges are fed to the heap in order of their lower
            # bounds, each when it could beat the heap's top.
            j = -1
            while True:
                while size > 0:  # drop outdated entries
                    cand = heap_vals[0]
                    if cand == n_cols:
                        stale = dummy_done or heap_keys[0] > dummy_dist
                    else:
                        stale = done[cand] == run or heap_keys[0] > dist[cand]
                    if not stale:
                        break
                    size = _heap_pop(heap_keys, heap_vals, size)
                heap_top = heap_keys[0] if size > 0 else _INF
                low = _INF
                while stream < n_cols:
                    jd = by_v[stream]
                    if held[jd] or done[jd] == run:
                        stream += 1
                        continue
                    low = dummy_dist + (top - v_sorted[jd])
                    if low >= sink_dist:
                        stream = n_cols
                        low = _INF
                    break
                if low < heap_top:
                    jd = by_v[stream]
                    stream += 1
                    r = top - v[jd]
                    nd = dummy_dist + (r if r > 0.0 else 0.0)
                    if nd < sink_dist and (stamp[jd] != run or nd < dist[jd]):
                        stamp[jd] = run
                        dist[jd] = nd
                        pred[jd] = _FROM_DUMMY
                        size = _heap_push(heap_keys, heap_vals, size, nd, jd)
                    continue
                if heap_top < sink_dist:
                    j = heap_vals[0]
                    size = _heap_pop(heap_keys, heap_vals, size)
                break
            if j < 0:
                break
            row = -1
            if j == n_cols:
                dummy_done = True
                stream = 0
                continue
            done[j] = run
            settled[n_settled] = j
            n_settled += 1
            if row4col[j] < 0:
                if dist[j] < sink_dist:
                    sink_dist = dist[j]
                    sink = j
            else:
                row = row4col[j]
                d_row = dist[j]
        if sink < 0:
            return col4row, u, v, False, np.ones(n_rows, dtype=np.bool_), -_INF
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
        if dummy_done and dummy_dist < sink_dist:
            top -= sink_dist - dummy_dist
        # Augment along the predecessor chain; through the dummy node, the dummy rows take the
        # column after it and give up the one the path entered them by.
        j = sink
        while True:
            i = pred[j]
            if i == _FROM_DUMMY:
                held[j] = True
                row4col[j] = -1
                j = dummy_entry
                held[j] = False
                v[j] = top
                continue
            prev = col4row[i]
            col4row[i] = j
            row4col[j] = i
            if i == source:
                break
            j = prev
    raised = u > u_base
    # Normalise: free columns at the top, then shift so that the top is 0.
    if square:
        top = -_INF
        for j in range(n_cols):
            top = max(top, v[j])
    for j in range(n_cols):
        if row4col[j] < 0:
            v[j] = top
        v[j] -= top
    for i in range(n_rows):
        u[i] += top
    # Potentials only went down during the searches (and free columns to the top, which is at
    # most their starting value), except the columns raised in step 3, by at most max_raise.
    return col4row, u, v, True, raised, top - max_raise


@njit(cache=True, nogil=True, inline="always")
def _reduced_cost(
    cells: npt.NDArray[np.float64],
    i: int,
    slots: npt.NDArray[np.float64],
    j: int,
    v: npt.NDArray[np.float64],
    worst: float,
) -> float:  # pragma: no cover - compiled
    """``|x_i - y_j|^2 - v_j``, or any value at least ``worst`` once the partial sum reaches it
    (partial sums only grow: with the coordinates in decreasing order of spread, most pairs stop
    after a few)."""
    d = -v[j]
    for a in range(cells.shape[1]):
        diff = cells[i, a] - slots[j, a]
        d += diff * diff
        if d >= worst:
            break
    return float(d)


@njit(cache=True, nogil=True, inline="always")
def _insert_best(
    vals: npt.NDArray[np.float64], idx: npt.NDArray[np.int64], found: int, d: float, j: int
) -> int:  # pragma: no cover - compiled
    """Insert value ``d`` of slot ``j`` into the ascending lists ``vals``/``idx`` of the ``k``
    best (``found`` of them filled, the last dropped when full); return how many are filled."""
    k = vals.shape[0]
    pos = found if found < k else k - 1
    while pos > 0 and vals[pos - 1] > d:
        if pos < k:
            vals[pos] = vals[pos - 1]
            idx[pos] = idx[pos - 1]
        pos -= 1
    vals[pos] = d
    idx[pos] = j
    return found + 1 if found < k else found


@njit(cache=True, nogil=True, parallel=True)
def best_pairs_blocked(
    cells: npt.NDArray[np.float64],
    slots: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    leaf_ptr: npt.NDArray[np.int64],
    leaf_lo: npt.NDArray[np.float64],
    leaf_hi: npt.NDArray[np.float64],
    leaf_vmax: npt.NDArray[np.float64],
    bound: npt.NDArray[np.float64],
    k: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:  # pragma: no cover - compiled
    """For each cell, the ``k`` slots with the smallest ``|x_i - y_j|^2 - v_j`` below ``bound_i``.

    Returns the values and slot positions (in this storage order) sorted ascending per cell,
    padded with ``inf`` and -1. Parallel over cells. Slots are stored leaf by leaf: leaf ``b``
    holds slots ``leaf_ptr[b]:leaf_ptr[b + 1]`` inside the box ``leaf_lo[b]`` .. ``leaf_hi[b]``
    with potentials at most ``leaf_vmax[b]``, so none of them is below the squared distance from
    the cell to the box minus ``leaf_vmax[b]``; leaves whose bound is not below the cell's
    current k-th best (or ``bound_i``) are skipped. The result is exactly that of scanning every
    pair.
    """
    n_cells, dim = cells.shape
    n_leaves = leaf_ptr.shape[0] - 1
    vals = np.full((n_cells, k), _INF, dtype=np.float64)
    idx = np.full((n_cells, k), -1, dtype=np.int64)
    for i in prange(n_cells):
        worst = bound[i]
        found = 0
        vals_i = vals[i]
        idx_i = idx[i]
        for b in range(n_leaves):
            # Partial sums only grow: stop adding dimensions once the bound is reached (with the
            # coordinates in decreasing order of spread, most leaves and pairs stop early).
            low = -leaf_vmax[b]
            for a in range(dim):
                x = cells[i, a]
                if x < leaf_lo[b, a]:
                    gap = leaf_lo[b, a] - x
                    low += gap * gap
                elif x > leaf_hi[b, a]:
                    gap = x - leaf_hi[b, a]
                    low += gap * gap
                if low >= worst:
                    break
            if low >= worst:
                continue
            for j in range(leaf_ptr[b], leaf_ptr[b + 1]):
                d = _reduced_cost(cells, i, slots, j, v, worst)
                if d >= worst:
                    continue
                found = _insert_best(vals_i, idx_i, found, d, j)
                if found == k:
                    worst = vals_i[k - 1]
    return vals, idx


@njit(cache=True, nogil=True, parallel=True)
def pair_costs(
    cells: npt.NDArray[np.float64],
    tiles: npt.NDArray[np.float64],
    rows: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int64],
) -> npt.NDArray[np.float64]:  # pragma: no cover - compiled
    """``|cells[rows[e]] - tiles[cols[e]]|^2`` for every pair ``e``. Parallel over pairs."""
    out = np.empty(rows.shape[0], dtype=np.float64)
    for e in prange(rows.shape[0]):
        i = rows[e]
        j = cols[e]
        d = 0.0
        for a in range(cells.shape[1]):
            diff = cells[i, a] - tiles[j, a]
            d += diff * diff
        out[e] = d
    return out


@njit(cache=True, nogil=True)
def build_csr(
    n_rows: int,
    n_cols: int,
    rows: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int64],
    costs: npt.NDArray[np.float64],
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]
]:  # pragma: no cover - compiled
    """CSR form of the edge list ``(rows, cols, costs)``: columns ascending within each row, a
    repeated ``(row, col)`` pair kept once (its first cost). Two stable counting sorts (by
    column, then by row), linear in the number of edges."""
    n_edges = rows.shape[0]
    by_col = np.empty(n_edges, dtype=np.int64)
    start = np.zeros(n_cols + 1, dtype=np.int64)
    for e in range(n_edges):
        start[cols[e] + 1] += 1
    for j in range(n_cols):
        start[j + 1] += start[j]
    for e in range(n_edges):
        by_col[start[cols[e]]] = e
        start[cols[e]] += 1
    order = np.empty(n_edges, dtype=np.int64)
    start = np.zeros(n_rows + 1, dtype=np.int64)
    for e in range(n_edges):
        start[rows[e] + 1] += 1
    for i in range(n_rows):
        start[i + 1] += start[i]
    for t in range(n_edges):
        e = by_col[t]
        order[start[rows[e]]] = e
        start[rows[e]] += 1
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    indices = np.empty(n_edges, dtype=np.int64)
    out_costs = np.empty(n_edges, dtype=np.float64)
    n_out = 0
    last_row = -1
    last_col = -1
    for t in range(n_edges):
        e = order[t]
        if rows[e] == last_row and cols[e] == last_col:
            continue
        last_row = rows[e]
        last_col = cols[e]
        indices[n_out] = last_col
        out_costs[n_out] = costs[e]
        n_out += 1
        indptr[last_row + 1] = n_out
    for i in range(n_rows):
        indptr[i + 1] = max(indptr[i + 1], indptr[i])
    return indptr, indices[:n_out].copy(), out_costs[:n_out].copy()


@njit(cache=True, nogil=True, parallel=True)
def best_in_groups(
    cells: npt.NDArray[np.float64],
    cell_group: npt.NDArray[np.int64],
    slots: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    group_ptr: npt.NDArray[np.int64],
    group_slots: npt.NDArray[np.int64],
    k: int,
) -> npt.NDArray[np.int64]:  # pragma: no cover - compiled
    """For each cell, the ``k`` slots with the smallest ``|x_i - y_j|^2 - v_j`` among the slots
    ``group_slots[group_ptr[g]:group_ptr[g + 1]]`` of its group ``g = cell_group[i]``, best
    first, padded with -1. Parallel over cells."""
    n_cells = cells.shape[0]
    idx = np.full((n_cells, k), -1, dtype=np.int64)
    for i in prange(n_cells):
        g = cell_group[i]
        vals = np.full(k, _INF, dtype=np.float64)
        found = 0
        idx_i = idx[i]
        for e in range(group_ptr[g], group_ptr[g + 1]):
            j = group_slots[e]
            worst = vals[k - 1]
            d = _reduced_cost(cells, i, slots, j, v, worst)
            if d >= worst:
                continue
            found = _insert_best(vals, idx_i, found, d, j)
    return idx


# Slots per chunk of the dense scan's exact pass: a chunk whose filter values are all above the
# limit (the usual case) is skipped after one vectorised count.
DENSE_CHUNK = 32


@njit(cache=True, nogil=True, inline="always")
def _round_up32(x: float) -> np.float32:  # pragma: no cover - compiled
    """``x`` as a float32 no smaller than ``x`` (a filter limit that can only let more pass)."""
    y = np.float32(x)
    if y < x:
        y = np.nextafter(y, np.float32(np.inf))
    return y


@njit(cache=True, nogil=True)
def refine_dense(
    products: npt.NDArray[np.float32],
    lifted32: npt.NDArray[np.float32],
    cells: npt.NDArray[np.float64],
    slots: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    bound: npt.NDArray[np.float64],
    filter_shift: npt.NDArray[np.float64],
    first: int,
    vals: npt.NDArray[np.float64],
    idx: npt.NDArray[np.int64],
) -> None:  # pragma: no cover - compiled
    """The exact pass of the dense scan over a block of cells ``first, first + 1, ...``: fills
    ``vals``/``idx`` (rows ``first`` on, ascending, padded with ``inf`` and -1) with the ``k``
    smallest ``|x_i - y_j|^2 - v_j`` below ``bound_i``, the same answer as
    :func:`best_pairs_blocked` (slot indices in the given order).

    ``products[r, j]`` is ``-2 x_i . y_j`` in float32 for cell ``i = first + r`` (a matrix
    product, which the caller gets from BLAS), ``lifted32[j] = |y_j|^2 - v_j`` in float32: their
    sum is the float32 filter value of a pair, which is checked exactly in float64 only when it
    is below the cell's current bound plus ``filter_shift[i]`` (``-|x_i|^2`` plus a margin that
    must exceed the float32 rounding error: the caller's choice). One thread; it releases the
    GIL, so the caller runs blocks side by side.
    """
    n_block, n_slots = products.shape
    k = vals.shape[1]
    for r in range(n_block):
        i = first + r
        row = products[r]
        vals_i = vals[i]
        idx_i = idx[i]
        worst = bound[i]
        limit = worst + filter_shift[i]
        limit32 = _round_up32(limit)
        found = 0
        for j0 in range(0, n_slots, DENSE_CHUNK):
            j1 = min(j0 + DENSE_CHUNK, n_slots)
            # A count first: most chunks hold no pair that passes the filter.
            hits = 0
            for j in range(j0, j1):
                hits += row[j] + lifted32[j] < limit32
            if hits == 0:
                continue
            for j in range(j0, j1):
                if row[j] + lifted32[j] >= limit:
                    continue
                d = _reduced_cost(cells, i, slots, j, v, worst)
                if d >= worst:
                    continue
                found = _insert_best(vals_i, idx_i, found, d, j)
                if found == k:
                    worst = vals_i[k - 1]
                    limit = worst + filter_shift[i]
                    limit32 = _round_up32(limit)
