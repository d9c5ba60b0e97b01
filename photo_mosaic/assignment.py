"""Matching cells to tiles: nearest tile (repeats allowed) and the exact unique assignment.

Costs are squared Euclidean distances between descriptors. Neither method builds a dense
cells x tiles matrix:

- :func:`assign_nearest` is one k-d tree query per cell.
- :func:`assign_unique` solves the assignment problem exactly on a sparse candidate graph (each
  cell's nearest tiles, its best tiles under the potentials of a coarse transport problem between
  k-means clusters, and rank matchings along several directions) and then certifies the result on
  the *full* bipartite graph with the dual potentials: an exact scan per cell over the tiles,
  stored leaf by leaf, that skips every leaf which cannot hold a pair with negative reduced cost
  (with 4 or more dimensions: over every pair, through a float32 filter with a safety margin
  and exact values for the pairs that pass it). Cells with violated pairs get their best tiles
  under the current potentials as new candidates and the problem is re-solved (the exact
  repair, after a warm auction when many cells violate) until no pair violates, which proves
  the assignment optimal for the full problem (linear-programming duality). A cell is scanned
  again only when the previous scan's proof no longer covers its new potential.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import get_num_threads
from scipy.spatial import cKDTree
from threadpoolctl import threadpool_limits

from photo_mosaic._sparse_lap import (
    auction,
    best_in_groups,
    best_pairs_blocked,
    build_csr,
    pair_costs,
    refine_dense,
    solve_sparse_lap,
)

# Final auction step (and half the tightness tolerance of the exact solver), relative to the
# largest candidate cost.
AUCTION_EPS = 1e-11
# Rows of the warm start within this many final auction steps of tight stay matched in the
# exact repair.
REPAIR_TOLERANCE = 4.0
# The certificate also returns each cell's best slots up to this much (relative to the largest
# candidate cost) above its potential: new candidates for the cells with a violated pair.
CANDIDATE_SLACK = 1e-3
# Slots per leaf of the certificate's scan.
LEAF_SIZE = 32
# The certificate's scan computes every pair (a float32 filter that vectorises, then the exact
# value of the pairs that pass it) instead of skipping leaves when descriptors have more than
# this many dimensions (finer grids: in 12 or 27 dimensions the leaf bounds open 30-45% of
# the leaves anyway) and there are at most DENSE_MAX_SLOTS slots (its work grows with cells x
# slots).
DENSE_MIN_DIM = 4
DENSE_MAX_SLOTS = 50_000
# Float32 filter values computed at a time by the dense scan (a block of cells x every slot):
# 4 MB, so that the exact pass reads them back from the cache.
DENSE_BLOCK_FLOATS = 1 << 20
# Margin of that float32 filter, per dimension, relative to |x|^2 + 2 max |y|^2 + max |v|: the
# rounding error of a float32 sum of n products is below about n * 2^-23 of those magnitudes
# (2^-23 is about 1.2e-7), so this is about a hundred times larger.
DENSE_MARGIN = 1e-5
# The second round, and a later round where more than this share of the cells has a violated
# pair, starts with a new auction (from the current prices, with a small first step) before
# the exact repair: re-matching thousands of rows one shortest path at a time costs more (with
# more tiles than cells, several times more).
REAUCTION_SHARE = 0.2
REAUCTION_EPS = 1e-3
# The first round's auction stops at this step (relative to the largest candidate cost), ten
# times below where the second round's starts: its potentials only choose the candidates that
# the first certificate scan adds (nothing is certified in that round), so the fine scaling
# phases and the exact repair would be spent on a graph that is about to grow.
FIRST_AUCTION_EPS = 1e-4
# The first round's scan adds this many times k_add of each violated cell's best slots: its
# potentials are rough, so more of them are needed; with fewer, a third auction was needed (2x2
# at 10,000 x 10,000 with k_add=16: 16 slots 3.5 s, 32 3.0 s, 48 2.8 s, 64 2.8 s).
FIRST_K_ADD_FACTOR = 3
# Lloyd iterations of the k-means that builds the coarse problem.
KMEANS_ITERATIONS = 3

__all__ = ["UniqueAssignment", "assign_nearest", "assign_unique", "max_uses"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class UniqueAssignment:
    """Result of :func:`assign_unique`.

    Attributes:
        tile_for_cell: index of the tile given to each cell, shape ``(n_cells,)``.
        total_cost: sum of the squared descriptor distances of the chosen pairs.
        max_uses: the most times any tile may be used (1 when there are at least as many tiles
            as cells, else ``ceil(n_cells / n_tiles)``).
        rounds: how many solve-and-certify rounds were needed (the first only gathers
            candidates under approximate potentials).
        n_edges: size of the final sparse candidate graph.
    """

    tile_for_cell: IntArray
    total_cost: float
    max_uses: int
    rounds: int
    n_edges: int


def max_uses(n_cells: int, n_tiles: int) -> int:
    """How often one tile may be used in unique mode: ``ceil(n_cells / n_tiles)``, at least 1."""
    if n_cells < 1 or n_tiles < 1:
        raise ValueError(f"need at least one cell and one tile, got {n_cells} and {n_tiles}")
    return max(1, math.ceil(n_cells / n_tiles))


def _check_descriptors(cells: npt.ArrayLike, tiles: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    c = np.asarray(cells, dtype=np.float64)
    t = np.asarray(tiles, dtype=np.float64)
    for name, arr in (("cells", c), ("tiles", t)):
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(
                f"{name} must be a non-empty 2-D array (one descriptor per row), got shape "
                f"{arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
    if c.shape[1] != t.shape[1]:
        raise ValueError(
            f"cells and tiles must have descriptors of the same length, got {c.shape[1]} and "
            f"{t.shape[1]}"
        )
    return np.ascontiguousarray(c), np.ascontiguousarray(t)


def assign_nearest(cells: npt.ArrayLike, tiles: npt.ArrayLike) -> IntArray:
    """Index of the closest tile (squared Euclidean distance) for each cell; tiles may repeat.

    Ties go to the tile with the lower index.
    """
    c, t = _check_descriptors(cells, tiles)
    tree = cKDTree(t)
    _, idx = tree.query(c, k=1)
    return np.asarray(idx, dtype=np.int64)


def _pair_costs(
    cells: FloatArray, tiles: FloatArray, rows: IntArray, tile_idx: IntArray
) -> FloatArray:
    """``|cells[rows[e]] - tiles[tile_idx[e]]|^2`` for each pair ``e`` (no temporaries)."""
    return pair_costs(cells, tiles, rows.astype(np.int64), tile_idx.astype(np.int64))


def _sliced_matchings(
    cells: FloatArray, slot_tiles: FloatArray, n_directions: int
) -> tuple[IntArray, IntArray]:
    """Rank-to-rank matchings of cells and slots along several directions (sliced transport).

    Each is a matching of every cell to a distinct slot, so the sparse graph always has a full
    matching; together they reach the far tiles that the optimal transport uses and the nearest
    neighbours miss. The first direction is the first descriptor axis (lightness); the others are
    fixed pseudo-random directions, so results are reproducible.
    """
    n_cells, n_slots = cells.shape[0], slot_tiles.shape[0]
    dim = cells.shape[1]
    directions = np.random.default_rng(0).normal(size=(max(n_directions, 1), dim))
    directions[0] = np.eye(dim)[0]
    picks = (np.arange(n_cells, dtype=np.int64) * n_slots) // n_cells
    rows, cols = [], []
    for direction in directions:
        cell_order = np.argsort(cells @ direction, kind="stable")
        slot_order = np.argsort(slot_tiles @ direction, kind="stable")
        rows.append(cell_order.astype(np.int64))
        cols.append(slot_order[picks].astype(np.int64))
    return np.concatenate(rows), np.concatenate(cols)


def _kmeans(points: FloatArray, n_clusters: int) -> tuple[FloatArray, FloatArray, IntArray]:
    """Centres, sizes and each point's cluster of ``n_clusters`` k-means clusters (few Lloyd
    steps, seeded, k-d tree)."""
    rng = np.random.default_rng(0)
    centres = points[rng.choice(points.shape[0], min(n_clusters, points.shape[0]), replace=False)]
    counts = np.ones(centres.shape[0])
    label = np.zeros(points.shape[0], dtype=np.int64)
    for _ in range(KMEANS_ITERATIONS + 1):
        _, nearest = cKDTree(centres).query(points, k=1, workers=-1)
        label = np.asarray(nearest, dtype=np.int64)
        counts = np.bincount(label, minlength=centres.shape[0]).astype(np.float64)
        sums = np.stack(
            [
                np.bincount(label, weights=points[:, a], minlength=centres.shape[0])
                for a in range(points.shape[1])
            ],
            axis=1,
        )
        keep = counts > 0
        label = (np.cumsum(keep) - 1)[label]
        centres, counts = sums[keep] / counts[keep][:, None], counts[keep]
    return centres, counts, label


@dataclass(frozen=True)
class _Coarse:
    """The coarse transport problem's answer: approximate slot potentials, and for each cell
    the slots of the tile clusters that its cluster sends mass to (``group_slots[group_ptr[g]:
    group_ptr[g + 1]]`` for the cell's cluster ``g = cell_cluster[i]``)."""

    v: FloatArray
    cell_cluster: IntArray
    group_ptr: IntArray
    group_slots: IntArray


def _coarse_potentials(cells: FloatArray, tiles: FloatArray, uses: int, n_clusters: int) -> _Coarse:
    """Approximate tile potentials from an exact transport problem between k-means clusters.

    Cells and tiles are clustered (``n_clusters`` each); POT's network simplex solves the small
    transport problem with the cluster sizes as masses (spare tile slots go to a dummy cluster
    at cost 0) and returns its duals ``alpha``. A tile then gets the c-transform
    ``v(y) = min_A |x_A - y|^2 - alpha_A`` over the cell clusters A (a nearest-neighbour query
    after lifting), which follows the potential inside a cluster far better than the cluster's
    own dual. Returns one potential per slot, and where the coarse plan sends each cell
    cluster.
    """
    import ot  # POT: imported here, only large problems need it

    n_cells, n_slots = cells.shape[0], tiles.shape[0] * uses
    cell_centres, cell_mass, cell_cluster = _kmeans(cells, n_clusters)
    tile_centres, tile_mass, tile_cluster = _kmeans(tiles, n_clusters)
    diff = cell_centres[:, None, :] - tile_centres[None, :, :]
    cost = np.einsum("ijk,ijk->ij", diff, diff)
    tile_mass = tile_mass * uses
    spare = n_slots - n_cells
    if spare > 0:
        cost = np.vstack([cost, np.zeros(tile_centres.shape[0])])
        cell_mass = np.append(cell_mass, float(spare))
    plan, log = ot.emd(cell_mass, tile_mass, cost, numItermax=10**8, log=True)
    alpha = np.asarray(log["u"], dtype=np.float64)
    if spare > 0:
        alpha = alpha[:-1] - alpha[-1]
    top = float(alpha.max())
    tree = cKDTree(np.column_stack([cell_centres, np.sqrt(np.maximum(top - alpha, 0.0))]))
    dist, _ = tree.query(np.column_stack([tiles, np.zeros(tiles.shape[0])]), k=1, workers=-1)
    v = np.asarray(dist, dtype=np.float64) ** 2 - top
    if spare > 0:
        v = np.minimum(v, 0.0)  # as in the exact duals: unused slots sit at the top, 0
    # The slots of each tile cluster, then those of the clusters each cell cluster sends to.
    slot_cluster = np.tile(tile_cluster, uses)
    by_cluster = np.argsort(slot_cluster, kind="stable").astype(np.int64)
    size = np.bincount(slot_cluster, minlength=tile_centres.shape[0])
    first = np.cumsum(size) - size
    src, dst = np.nonzero(np.asarray(plan)[: cell_centres.shape[0]] > 0)
    length = size[dst]
    group_ptr = np.zeros(cell_centres.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, weights=length, minlength=cell_centres.shape[0]), out=group_ptr[1:])
    offset = np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
    group_slots = by_cluster[np.repeat(first[dst], length) + offset]
    return _Coarse(np.tile(v, uses), cell_cluster, group_ptr, group_slots)


def _identical_groups(cells: FloatArray) -> tuple[FloatArray, list[IntArray]]:
    """Distinct descriptors and, for each, the cells that have it (a flat sky: many cells)."""
    distinct, inverse = np.unique(cells, axis=0, return_inverse=True)
    inverse = np.asarray(inverse, dtype=np.int64).ravel()
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=distinct.shape[0]))[:-1]
    return distinct, [g.astype(np.int64) for g in np.split(order, bounds)]


class _SlotSearch:
    """The slots with the smallest ``|x - y_j|^2 - v_j`` for query points x, exactly.

    Slots are stored leaf by leaf (:func:`_leaf_order`); a query first takes the ``k`` nearest
    slots by plain distance (k-d tree) as an upper bound on the k-th best value, then scans only
    the leaves that can beat it (:func:`best_pairs_blocked`). With many dimensions and not too
    many slots the scan goes over every pair instead (:meth:`_scan_dense`: a float32 filter from
    a matrix product, with a safety margin, and exact values for the pairs that pass it), which
    is faster there.
    """

    def __init__(self, slot_tiles: FloatArray, leaf_size: int) -> None:
        self.order, self.leaf_ptr = _leaf_order(slot_tiles, leaf_size)
        self.slots = np.ascontiguousarray(slot_tiles[self.order])
        self.lo = np.minimum.reduceat(self.slots, self.leaf_ptr[:-1], axis=0)
        self.hi = np.maximum.reduceat(self.slots, self.leaf_ptr[:-1], axis=0)
        self.tree = cKDTree(slot_tiles)
        self.n_slots = slot_tiles.shape[0]
        self.slot_tiles = slot_tiles
        dim = slot_tiles.shape[1]
        self.dense = dim >= DENSE_MIN_DIM and self.n_slots <= DENSE_MAX_SLOTS
        if self.dense:
            self.slots_t32 = np.ascontiguousarray(slot_tiles.T, dtype=np.float32)
            self.norms = np.einsum("ij,ij->i", slot_tiles, slot_tiles)

    def scan(
        self, points: FloatArray, v: FloatArray, bound: FloatArray, k: int
    ) -> tuple[FloatArray, IntArray]:
        """Up to ``k`` best slots below ``bound`` per point: values and slot indices (-1: none)."""
        if self.dense:
            return self._scan_dense(points, v, bound, k)
        v_leaf = v[self.order]
        vals, found = best_pairs_blocked(
            points,
            self.slots,
            v_leaf,
            self.leaf_ptr,
            self.lo,
            self.hi,
            np.maximum.reduceat(v_leaf, self.leaf_ptr[:-1]),
            bound,
            k,
        )
        return vals, np.where(found >= 0, self.order[np.maximum(found, 0)], -1)

    def _scan_dense(
        self, points: FloatArray, v: FloatArray, bound: FloatArray, k: int
    ) -> tuple[FloatArray, IntArray]:
        """:meth:`scan` over every pair: the float32 filter values come from a matrix product
        (BLAS), a block of cells at a time, and :func:`refine_dense` checks the pairs that pass
        exactly."""
        n_points = points.shape[0]
        point_norms = np.einsum("ij,ij->i", points, points)
        size = point_norms + 2.0 * float(self.norms.max()) + float(np.abs(v).max())
        filter_shift = DENSE_MARGIN * (points.shape[1] + 2) * size - point_norms
        lifted32 = (self.norms - v).astype(np.float32)
        scaled32 = (-2.0 * points).astype(np.float32)
        vals = np.full((n_points, k), np.inf)
        idx = np.full((n_points, k), -1, dtype=np.int64)
        block = max(1, min(n_points, DENSE_BLOCK_FLOATS // self.n_slots))
        starts = range(0, n_points, block)
        n_workers = max(1, min(len(starts), get_num_threads()))
        buffers = [np.empty((block, self.n_slots), dtype=np.float32) for _ in range(n_workers)]

        def run(worker: int) -> None:
            products = buffers[worker]
            for start in starts[worker::n_workers]:
                stop = min(start + block, n_points)
                out = products[: stop - start]
                np.dot(scaled32[start:stop], self.slots_t32, out=out)
                refine_dense(
                    out, lifted32, points, self.slot_tiles, v, bound, filter_shift, start, vals, idx
                )

        # One BLAS thread per worker: BLAS's own threads would wait for work by spinning while
        # the exact pass runs, which costs CPU time and gains nothing.
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(n_workers) as pool:
            list(pool.map(run, range(n_workers)))
        return vals, idx

    def best(self, points: FloatArray, v: FloatArray, k: int) -> IntArray:
        """The ``k`` best slots of each point, shape ``(n_points, k)``."""
        k = min(k, self.n_slots)
        _, near = self.tree.query(points, k=k, workers=-1)
        near = np.asarray(near, dtype=np.int64).reshape(points.shape[0], k)
        if not v.any():
            return near  # plain distances: the tree's answer is already the k best
        pairs = np.repeat(np.arange(points.shape[0], dtype=np.int64), k)
        known = _pair_costs(points, self.slot_tiles, pairs, near.ravel()) - v[near.ravel()]
        top = known.reshape(points.shape[0], k).max(axis=1)
        _, found = self.scan(points, v, top + 1e-9 * (np.abs(top) + 1.0), k)
        return found


def _banded_candidates(
    search: _SlotSearch,
    v: FloatArray,
    points: FloatArray,
    members: list[IntArray],
    k: int,
) -> tuple[IntArray, IntArray]:
    """Edges from groups of identical cells to their best slots under the potentials ``v``.

    For a group of ``m`` identical cells at ``points[g]`` the ``m + k - 1`` slots with the smallest
    ``|x - y_j|^2 - v_j`` are shared out in overlapping bands: member r gets slots r .. r + k - 1
    of that list. Identical cells then reach as many distinct slots as they need (a query per
    cell would give them all the same ``k``), with ``k`` edges each.
    """
    n_slots = search.n_slots
    sizes = np.array([g.shape[0] for g in members], dtype=np.int64)
    need = np.minimum(sizes + k - 1, n_slots)
    # Query in a few batches of equal k (powers of two), not once per group.
    batch_k = np.minimum(2 ** np.ceil(np.log2(np.maximum(need, k))).astype(np.int64), n_slots)
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    for kq in np.unique(batch_k):
        sel = np.nonzero(batch_k == kq)[0]
        found = search.best(np.ascontiguousarray(points[sel]), v, int(kq))
        width = min(k, int(kq))
        # Member r of a group (rank r within it) gets slots r .. r + width - 1 of its list.
        cells = np.concatenate([members[g] for g in sel])
        group_pos = np.repeat(np.arange(sel.shape[0]), sizes[sel])
        rank = np.arange(cells.shape[0]) - np.repeat(np.cumsum(sizes[sel]) - sizes[sel], sizes[sel])
        offsets = (rank[:, None] + np.arange(width)[None, :]) % int(kq)
        rows.append(np.repeat(cells, width))
        cols.append(found[group_pos[:, None], offsets].ravel())
    return np.concatenate(rows), np.concatenate(cols)


def assign_unique(
    cells: npt.ArrayLike,
    tiles: npt.ArrayLike,
    *,
    k: int = 12,
    k_coarse: int = 32,
    k_add: int = 16,
    n_slices: int = 32,
    coarse: int = 300,
    rtol: float = 1e-9,
    max_rounds: int = 200,
) -> UniqueAssignment:
    """Exact minimum-cost assignment of tiles to cells, each tile used at most ``max_uses`` times.

    With at least as many tiles as cells every tile is used at most once; with fewer tiles each is
    used at most ``ceil(n_cells / n_tiles)`` times. The cost of a pair is the squared Euclidean
    distance of the descriptors, and the returned total is the optimum over *all* pairs (the same
    as a dense solver such as ``scipy.optimize.linear_sum_assignment``), without a dense matrix.

    Args:
        cells: descriptors of the cells, shape ``(n_cells, d)``.
        tiles: descriptors of the tiles, shape ``(n_tiles, d)``.
        k: initial candidate edges per cell (its ``k`` nearest tile slots; none with 4 or more
            dimensions when the coarse problem seeds the graph).
        k_coarse: more initial edges per cell: its best slots under the potentials of the
            coarse problem (only with ``coarse``).
        k_add: edges added per cell and round during certification (the cell's best slots
            under the current potentials, for each cell with a violated pair; three times as
            many in the first round, whose potentials are rough).
        n_slices: rank-to-rank matchings along this many directions added to the initial graph
            (they guarantee a full matching and shorten the certification).
        coarse: clusters per side of the coarse transport problem that seeds the candidate graph
            when there are at least ``4 * coarse`` cells (0: never).
        rtol: floating-point tolerance of the optimality check, relative to the largest cost
            or potential (a pair violates when its reduced cost is below ``-rtol * scale``).
        max_rounds: give up (``RuntimeError``) after this many solve-and-certify rounds.

    Raises:
        ValueError: on empty, non-finite or mismatched descriptors, or bad options.
    """
    c, t = _check_descriptors(cells, tiles)
    if k < 1 or k_coarse < 1 or k_add < 1 or n_slices < 1:
        raise ValueError(
            f"k, k_coarse, k_add and n_slices must be at least 1, got k={k}, "
            f"k_coarse={k_coarse}, k_add={k_add}, n_slices={n_slices}"
        )
    if coarse < 0:
        raise ValueError(f"coarse must be 0 or more, got {coarse}")
    if not (0.0 <= rtol <= 1e-3):
        raise ValueError(f"rtol must be in [0, 1e-3], got {rtol}")
    n_cells, n_tiles = c.shape[0], t.shape[0]
    uses = max_uses(n_cells, n_tiles)
    c_orig, t_orig = c, t
    c, t = _principal_axes(c, t)
    n_slots = n_tiles * uses
    # Slot s is copy s // n_tiles of tile s % n_tiles.
    slot_tiles = np.tile(t, (uses, 1)) if uses > 1 else t

    # Initial candidate graph: nearest slots (identical cells share them out in bands) plus
    # rank matchings along several directions, each a full matching. With finer grids and the
    # coarse problem, not the nearest slots: a k-d tree query in 12 or 27 dimensions costs
    # as much as a dense scan, and the coarse candidates and the first round's scan find the
    # edges that matter (3x3 at 10,000 x 10,000: 2.8 s instead of 3.1 s).
    distinct, members = _identical_groups(c)
    search = _SlotSearch(slot_tiles, LEAF_SIZE)
    use_coarse = bool(coarse) and n_cells >= 4 * coarse
    if use_coarse and search.dense:
        rows, cols = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    else:
        rows, cols = _banded_candidates(search, np.zeros(n_slots), distinct, members, k)
    if use_coarse:
        # The optimal transport moves colours far when the target's palette differs from the
        # tiles': add each cell's best slots under approximate potentials from a coarse problem.
        c_rows, c_cols = _coarse_candidates(
            c,
            slot_tiles,
            _coarse_potentials(c, t, uses, coarse),
            search,
            distinct,
            members,
            k_coarse,
        )
        rows = np.concatenate([rows, c_rows])
        cols = np.concatenate([cols, c_cols])
    r_rows, r_cols = _sliced_matchings(c, slot_tiles, n_slices)
    rows = np.concatenate([rows, r_rows])
    cols = np.concatenate([cols, r_cols])
    costs = _pair_costs(c, t, rows, cols % n_tiles)
    group_of = np.empty(n_cells, dtype=np.int64)
    for g, group in enumerate(members):
        group_of[group] = g

    k_query = min(n_slots, k_add)
    all_cells = np.arange(n_cells, dtype=np.int64)
    bad = np.zeros(n_cells, dtype=bool)
    # What each cell's last scan proved: its best slots (-1: none) and a lower bound on
    # |x_i - y_j|^2 - v_j over every other slot, carried to the current potentials.
    listed = np.full((n_cells, k_query), -1, dtype=np.int64)
    floor = np.full(n_cells, -np.inf)
    col4row = np.full(n_cells, -1, dtype=np.int64)
    v = np.zeros(n_slots)
    tol = 0.0
    for round_no in range(1, max_rounds + 1):
        indptr, indices, csr_costs = build_csr(n_cells, n_slots, rows, cols, costs)
        # The first two rounds, and later rounds where many cells violate: an epsilon-scaling
        # auction gives a nearly optimal matching and potentials fast (later rounds start from
        # the current prices and matching with a small first step); the shortest-augmenting-path
        # solver then repairs them into an exact, dual-feasible state (not in the first round,
        # see FIRST_AUCTION_EPS). It leaves every row
        # within eps (= tight) of tight and the free columns at the top price; the repair keeps
        # rows within 4 eps (rounding margin).
        reauction = round_no == 2 or (round_no > 1 and bad.sum() > REAUCTION_SHARE * n_cells)
        if round_no == 1:
            scale = max(1.0, float(csr_costs.max()))
            tight = scale * AUCTION_EPS
        rise = 0.0
        if round_no == 1 or reauction:
            col4row, prices = auction(
                n_slots,
                indptr,
                indices,
                csr_costs,
                -v,
                scale / 4.0 if round_no == 1 else scale * REAUCTION_EPS,
                scale * FIRST_AUCTION_EPS if round_no == 1 else tight,
                scale,
                col4row,
            )
            # Its reverse iterations lower the prices of some free slots: their potentials rise.
            rise = max(0.0, float((-prices - v).max()))
            v = -prices
        if round_no == 1:
            # A rough first round: the candidates only need potentials as good as the second
            # round's auction starts from, which then goes on to the final step. Rows get their
            # best potential under these prices; nothing is certified.
            shift = 0.0
            u = np.minimum.reduceat(csr_costs - v[indices], indptr[:-1])
            raised = np.ones(n_cells, dtype=bool)
        else:
            # Later rounds: the repair, after that auction or from the previous exact solution
            # (only the rows that the new edges undercut are re-matched, along shortest paths).
            col4row, u, v, feasible, raised, shift = solve_sparse_lap(
                n_slots, indptr, indices, csr_costs, col4row, v, REPAIR_TOLERANCE * tight
            )
            if not feasible:  # pragma: no cover - the rank matching makes the graph feasible
                raise RuntimeError("internal error: the candidate graph has no full matching")
        # Certify on the full graph: every pair needs c_ij - u_i - v_j >= 0, i.e. no slot with
        # |x_i - y_j|^2 - v_j below u_i. One exact scan per cell over the slots, stored leaf by
        # leaf, skips every leaf whose box and largest potential show it cannot go below
        # u_i + slack; it returns the cell's best slots below that bound, which are the new
        # candidates of the cells that have a violated pair. After a repair from the previous
        # exact solution only the cells whose potential rose, and those that violated before,
        # can violate: every other pair's reduced cost has only grown. A raised cell needs no
        # new scan either when its potential stays below what its last scan proved: every
        # |x_i - y_j|^2 - v_j grew by at least the repair's shift, and its listed slots are
        # checked exactly under the new potentials. After a new auction every cell is checked
        # that way (less what the auction raised any potential by; the repair's raised rows are
        # relative to the auction's potentials, not to the last scan's).
        if round_no == 1:
            tol = rtol * max(scale, float(np.abs(v).max()), float(np.abs(u).max()))
            check = all_cells
        else:
            floor += shift - rise
            check = all_cells if reauction else np.nonzero(raised | bad)[0]
            check = check[
                bad[check] | ~_still_certified(c, slot_tiles, v, u, listed, floor, check, tol)
            ]
        bound = u[check] + CANDIDATE_SLACK * scale
        k_round = min(n_slots, FIRST_K_ADD_FACTOR * k_add) if round_no == 1 else k_query
        vals, found_check = search.scan(np.ascontiguousarray(c[check]), v, bound, k_round)
        listed[check] = found_check[:, :k_query]
        floor[check] = np.minimum(bound, vals[:, k_query - 1])
        bad = np.zeros(n_cells, dtype=bool)
        bad[check] = vals[:, 0] < u[check] - tol
        if round_no > 1 and not bad.any():
            chosen = col4row % n_tiles
            return UniqueAssignment(
                tile_for_cell=chosen,
                total_cost=float(_pair_costs(c_orig, t_orig, all_cells, chosen).sum()),
                max_uses=uses,
                rounds=round_no,
                n_edges=int(indices.shape[0]),
            )
        found = np.full((n_cells, k_round), -1, dtype=np.int64)
        found[check] = found_check
        # Each cell with a violated pair gets its k_add best slots under the current potentials
        # (violated or not: that saves rounds); identical cells share a longer list out in bands
        # (else they would all get the same slots).
        n_bad = np.bincount(group_of[bad], minlength=len(members))
        single = bad & (n_bad[group_of] == 1)
        new_rows = np.zeros(0, dtype=np.int64)
        new_cols = np.zeros(0, dtype=np.int64)
        if single.any():
            single_cells = np.nonzero(single)[0].astype(np.int64)
            ok = found[single_cells] >= 0
            new_rows = np.repeat(single_cells, k_round).reshape(-1, k_round)[ok]
            new_cols = found[single_cells][ok]
            n_bad[group_of[single_cells]] = 0
        groups = np.nonzero(n_bad)[0]
        if groups.shape[0]:
            bad_members = [members[g][bad[members[g]]] for g in groups]
            b_rows, b_cols = _banded_candidates(search, v, distinct[groups], bad_members, k_add)
            new_rows = np.concatenate([new_rows, b_rows])
            new_cols = np.concatenate([new_cols, b_cols])
        rows = np.concatenate([rows, new_rows])
        cols = np.concatenate([cols, new_cols])
        costs = np.concatenate([costs, _pair_costs(c, t, new_rows, new_cols % n_tiles)])
    raise RuntimeError(
        f"the assignment was not certified optimal within max_rounds={max_rounds} rounds"
    )


def _coarse_candidates(
    cells: FloatArray,
    slot_tiles: FloatArray,
    coarse: _Coarse,
    search: _SlotSearch,
    distinct: FloatArray,
    members: list[IntArray],
    k: int,
) -> tuple[IntArray, IntArray]:
    """Each cell's ``k`` best slots under the coarse potentials (an exact scan); groups of
    identical cells share a longer list out in bands.

    The scan's bound is the ``k``-th best value among the slots of the tile clusters that the
    coarse plan sends the cell's cluster to (a few dozen slots): far tighter than the ``k``-th
    value among the nearest slots, so the scan opens fewer leaves, and its result is the same.
    """
    sizes = np.array([g.shape[0] for g in members], dtype=np.int64)
    alone = np.concatenate([members[g] for g in np.nonzero(sizes == 1)[0]] or [np.zeros(0, int)])
    points = np.ascontiguousarray(cells[alone])
    k = min(k, slot_tiles.shape[0])
    seed = best_in_groups(
        points,
        coarse.cell_cluster[alone],
        slot_tiles,
        coarse.v,
        coarse.group_ptr,
        coarse.group_slots,
        k,
    )
    last = seed[:, -1]
    top = np.full(alone.shape[0], np.inf)
    has = last >= 0
    top[has] = _pair_costs(cells, slot_tiles, alone[has], last[has]) - coarse.v[last[has]]
    _, found = search.scan(points, coarse.v, top + 1e-9 * (np.abs(top) + 1.0), k)
    ok = found >= 0
    rows = np.repeat(alone.astype(np.int64), ok.sum(axis=1))
    cols = found[ok]
    shared = np.nonzero(sizes > 1)[0]
    if shared.shape[0]:
        b_rows, b_cols = _banded_candidates(
            search, coarse.v, distinct[shared], [members[g] for g in shared], k
        )
        rows, cols = np.concatenate([rows, b_rows]), np.concatenate([cols, b_cols])
    return rows, cols


def _still_certified(
    cells: FloatArray,
    slot_tiles: FloatArray,
    v: FloatArray,
    u: FloatArray,
    listed: IntArray,
    floor: FloatArray,
    which: IntArray,
    tol: float,
) -> npt.NDArray[np.bool_]:
    """For the cells ``which``: does their last scan still prove ``|x_i - y_j|^2 - v_j >= u_i``
    for every slot? Their listed slots are checked exactly under ``v``; every other slot is at
    least ``floor`` (the scan's bound, carried to the current potentials)."""
    ok = floor[which] >= u[which] - tol
    sel = which[ok]
    slots = listed[sel]
    has = slots >= 0
    pair_rows = np.repeat(sel, has.sum(axis=1))
    pair_slots = slots[has]
    values = np.full(slots.shape, np.inf)
    values[has] = _pair_costs(cells, slot_tiles, pair_rows, pair_slots) - v[pair_slots]
    ok[ok] = values.min(axis=1, initial=np.inf) >= u[sel] - tol
    return ok


def _principal_axes(cells: FloatArray, tiles: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Cells and tiles in the coordinates of their principal axes, largest spread first.

    A rotation (and shift) keeps every squared distance, up to rounding far below the
    certificate's tolerance. Descriptors of finer grids are strongly correlated (neighbouring
    blocks of a photo have similar colours), so a few leading axes hold most of the spread:
    the leaf boxes are split along them and the certificate's partial sums reach their bound
    after a few coordinates.
    """
    if cells.shape[1] <= 3:
        return cells, tiles  # one colour: L*, a*, b* are already the natural axes
    both = np.vstack([cells, tiles])
    centre = both.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov(both - centre, rowvar=False))
    basis = np.ascontiguousarray(vectors[:, ::-1])
    return (
        np.ascontiguousarray((cells - centre) @ basis),
        np.ascontiguousarray((tiles - centre) @ basis),
    )


def _leaf_order(points: FloatArray, leaf_size: int) -> tuple[IntArray, IntArray]:
    """Permutation that stores ``points`` leaf by leaf (median splits along the widest axis).

    Returns ``(order, leaf_ptr)``: leaf ``b`` is ``points[order[leaf_ptr[b]:leaf_ptr[b + 1]]]``.
    """
    order = np.arange(points.shape[0], dtype=np.int64)
    bounds = [0]
    stack = [(0, points.shape[0])]
    while stack:
        start, stop = stack.pop()
        if stop - start <= leaf_size:
            bounds.append(stop)
            continue
        part = points[order[start:stop]]
        axis = int(np.argmax(part.max(axis=0) - part.min(axis=0)))
        half = (stop - start) // 2
        sub = np.argpartition(part[:, axis], half)
        order[start:stop] = order[start:stop][sub]
        # Right half pushed first, so leaves come out left to right.
        stack.append((start + half, stop))
        stack.append((start, start + half))
    return order, np.asarray(bounds, dtype=np.int64)
