"""photo_mosaic benchmark: exact unique assignment and thumbnails against the lesson baselines.

Assignment: ``photo_mosaic.assign_unique`` against POT's ``ot.emd`` on the dense squared-distance
matrix with uniform weights and ``argmax`` per cell (the lesson's approach it replaces; with more
tiles than cells that solves another problem, so its total is higher), or with ``--emd-exact`` set
up as the same problem (whole-number masses: one per cell, ``ceil(cells / tiles)`` per tile, a
dummy cell at cost 0 for the spare tile slots; the network simplex is then much slower when tiles
outnumber cells), for the 1x1, 2x2 and 3x3 descriptor grids at 10,000 cells with 10,000, 15,000 and
20,000 tiles and at 2,000 cells with 20,000 tiles (10x), plus (1x1 only) 1,000 to 5,000 square and
10,000 cells with 5,000 tiles, and (ours only: the dense matrix would need 80 GB) 100,000 x
100,000. Each measurement runs in a fresh process; its peak memory is the growth of the peak
resident set during the solve (``/proc/self/clear_refs``), its time the wall time of the solve
(and the CPU time of all the process's threads, which a busy machine disturbs less: ours runs
its certificate scan on every core, so its CPU time is above its wall time on an idle machine): for
ours the numba kernels are compiled and POT imported by a small solve beforehand, for ``ot.emd``
POT and scipy are imported beforehand and the timing includes building the dense cost matrix.

Descriptors are realistic: cells are the mean CIELAB colours of the blocks of a grid over
scikit-image's ``astronaut`` photo, tiles those of random crops of its bundled photos with random
brightness and colour shifts (as in ``make demo-mosaic``).

Thumbnails: ``photo_mosaic.build_index`` (JPEG draft decoding, dask.bag with threads and with
processes, hashing, descriptors and the HDF5 cache included) against the lesson's plain
``ImageOps.fit`` loop under dask.bag (with processes, the bag's default, and with threads) and an
anchor (that loop with ``Image.draft``, threads), on 1,000 generated 1024 x 768 JPEG photos to
50 x 50; then a re-run with nothing changed.

Run: ``.venv/bin/python benchmarks/bench_photo_mosaic.py`` (about 20 minutes on 2 cores; add
``--large`` for the 100,000 x 100,000 case or ``--only-large`` for that case alone,
``--grids 2,3``, ``--quick`` (only the grid shapes), ``--skip-thumbnails`` /
``--skip-assignment``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# (cells, tiles) for the 1x1 grid only (skipped with --quick).
SIZES_1X1 = [
    (1_000, 1_000),
    (2_500, 2_500),
    (5_000, 5_000),
    (10_000, 5_000),  # fewer tiles: each used at most twice
]
# (cells, tiles) for every grid: square, and tiles = 1.5x, 2x and 10x the cells (the usual
# mosaic has more tiles than cells; 10x at 2,000 cells: the dense matrix at 10,000 x 100,000
# would need 8 GB for ot.emd).
GRID_SIZES = [
    (10_000, 10_000),
    (10_000, 15_000),
    (10_000, 20_000),
    (2_000, 20_000),
]
LARGE = (100_000, 100_000)
THUMB = 50  # thumbnail side of the thumbnail benchmark


def descriptors(
    n_cells: int, n_tiles: int, seed: int = 0, grid: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Cells from a photo grid, tiles from jittered random crops of photos: the mean CIELAB
    colour of each block of a ``grid`` x ``grid`` split (as the index and match stages do)."""
    from PIL import Image
    from skimage import data

    from photo_mosaic.colour import srgb_to_lab

    rng = np.random.default_rng(seed)
    target = Image.fromarray(data.astronaut())
    side = int(np.ceil(np.sqrt(n_cells)))
    # As the match stage: each cell is grid x grid pixels of a box-filtered target.
    small = srgb_to_lab(np.asarray(target.resize((side * grid, side * grid), Image.Resampling.BOX)))
    cells = (
        small.reshape(side, grid, side, grid, 3)
        .transpose(0, 2, 1, 3, 4)
        .reshape(side * side, grid * grid * 3)[:n_cells]
    )

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    per = -(-n_tiles // len(photos))
    tiles = []
    for photo in photos:
        lab = srgb_to_lab(photo)
        h, w = lab.shape[:2]
        sat = np.zeros((h + 1, w + 1, 3))
        sat[1:, 1:] = lab.cumsum(0).cumsum(1)
        size = rng.integers(min(h, w) // 10, min(h, w) // 2, size=per) // grid * grid
        y = rng.integers(0, h - size)
        x = rng.integers(0, w - size)
        block = size // grid
        means = []
        for by in range(grid):
            for bx in range(grid):
                y0, x0 = y + by * block, x + bx * block
                y1, x1 = y0 + block, x0 + block
                total = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
                means.append(total / (block * block)[:, None])
        tiles.append(np.concatenate(means, axis=1))
    mean = np.concatenate(tiles)[:n_tiles]
    # One brightness and colour shift per tile photo, the same for all its blocks.
    shift = rng.normal(0, [12.0, 8.0, 8.0], size=(mean.shape[0], 3))
    jitter = mean + np.tile(shift, grid * grid)
    jitter[:, 0::3] = np.clip(jitter[:, 0::3], 0, 100)
    return np.ascontiguousarray(cells), np.ascontiguousarray(jitter)


def _peak_reset() -> int:
    Path("/proc/self/clear_refs").write_text("5")
    return _vm("VmRSS")


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(method: str, n_cells: int, n_tiles: int, grid: int = 1) -> dict[str, object]:
    """One measurement, in this (fresh) process."""
    from photo_mosaic import assign_unique

    cells, tiles = descriptors(n_cells, n_tiles, grid=grid)
    if method == "ours":
        # Compile the numba kernels and import POT (the coarse problem) outside the timing, as
        # the baseline imports POT before its timing starts.
        assign_unique(cells[:2000], tiles[:2000])
        base = _peak_reset()
        cpu = time.process_time()
        start = time.perf_counter()
        result = assign_unique(cells, tiles)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        peak = _vm("VmHWM") - base
        counts = np.bincount(result.tile_for_cell, minlength=n_tiles)
        return {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "peak_bytes": peak,
            "cost": result.total_cost,
            "valid": bool(counts.max() <= result.max_uses),
            "rounds": result.rounds,
            "edges": result.n_edges,
        }
    import ot
    from scipy.spatial.distance import cdist

    uses = max(1, -(-n_cells // n_tiles))
    spare = n_tiles * uses - n_cells
    base = _peak_reset()
    cpu = time.process_time()
    start = time.perf_counter()
    cost = cdist(cells, tiles, "sqeuclidean")
    if method == "emd-exact":
        # The same problem as ours: one slot per cell, ceil(cells / tiles) per tile, a dummy
        # cell at cost 0 for the spare slots; whole-number masses, so the plan is a 0/1
        # assignment (much slower for the network simplex when tiles outnumber cells).
        a = np.ones(n_cells)
        if spare:
            cost = np.vstack([cost, np.zeros((1, n_tiles))])
            a = np.append(a, float(spare))
        b = np.full(n_tiles, float(uses))
    else:
        # The lesson's approach: uniform weights on both sides. With more tiles than cells it
        # solves another problem (every tile carries a share of a cell), so its argmax total
        # is not the optimum of choosing one tile per cell.
        a = np.full(n_cells, 1.0 / n_cells)
        b = np.full(n_tiles, 1.0 / n_tiles)
    plan = ot.emd(a, b, cost, numItermax=10**9)
    chosen = plan[:n_cells].argmax(axis=1)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    peak = _vm("VmHWM") - base
    counts = np.bincount(chosen, minlength=n_tiles)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_bytes": peak,
        "cost": float(cost[np.arange(n_cells), chosen].sum()),
        "emd_objective": float((plan[:n_cells] * cost[:n_cells]).sum()),
        "valid": bool(counts.max() <= uses),
    }


def run_child(method: str, n_cells: int, n_tiles: int, grid: int = 1) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", method, str(n_cells), str(n_tiles), str(grid)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def bench_assignment(
    large: bool,
    only_large: bool,
    grids: list[int],
    quick: bool,
    emd_exact: bool,
    shapes: list[tuple[int, int]] | None = None,
) -> None:
    baseline = "emd-exact" if emd_exact else "emd"
    print(
        "== exact unique assignment: photo_mosaic.assign_unique vs ot.emd on the dense matrix "
        + (
            "(the same problem: whole-number masses, a dummy cell for spare tiles)"
            if emd_exact
            else "(the lesson's uniform weights) + argmax"
        )
    )
    header = (
        f"{'grid':>4} {'cells x tiles':>16} {'ours s':>8} {'emd s':>8} {'speed-up':>9} "
        f"{'ours MB':>8} {'emd MB':>8} {'ours/emd mem':>12} {'ours cost':>16} "
        f"{'emd cost':>16} {'rel diff':>9}"
    )
    print(header)
    sizes = shapes or GRID_SIZES
    cases = [] if only_large else [(g, n, m) for n, m in sizes for g in grids]
    if not (only_large or quick) and 1 in grids:
        cases = [(1, n, m) for n, m in SIZES_1X1] + cases
    for grid, n_cells, n_tiles in cases:
        ours = run_child("ours", n_cells, n_tiles, grid)
        emd = run_child(baseline, n_cells, n_tiles, grid)
        o_s, e_s = float(ours["seconds"]), float(emd["seconds"])  # type: ignore[arg-type]
        o_m = float(ours["peak_bytes"]) / 2**20  # type: ignore[arg-type]
        e_m = float(emd["peak_bytes"]) / 2**20  # type: ignore[arg-type]
        o_c, e_c = float(ours["cost"]), float(emd["cost"])  # type: ignore[arg-type]
        print(
            f"{grid}x{grid:<2} {n_cells:>7,} x {n_tiles:<7,} {o_s:8.2f} {e_s:8.2f} "
            f"{e_s / o_s:8.1f}x {o_m:8.0f} {e_m:8.0f} {100 * o_m / max(e_m, 1e-9):11.1f}% "
            f"{o_c:16.6f} {e_c:16.6f} {(e_c - o_c) / o_c:9.2e}",
            flush=True,
        )
        o_cpu, e_cpu = float(ours["cpu_seconds"]), float(emd["cpu_seconds"])  # type: ignore[arg-type]
        print(
            f"{'':>21} ours: {ours['rounds']} rounds, {ours['edges']:,} edges, "
            f"valid={ours['valid']}; emd valid={emd['valid']}; CPU time (all threads): ours "
            f"{o_cpu:.2f} s, emd {e_cpu:.2f} s, {e_cpu / o_cpu:.1f}x",
            flush=True,
        )
    if large or only_large:
        n_cells, n_tiles = LARGE
        print(f"-- {n_cells:,} x {n_tiles:,}: ours only (a dense float64 matrix needs 80 GB)")
        ours = run_child("ours", n_cells, n_tiles)
        print(
            f"{n_cells:>7,} x {n_tiles:<7,} {float(ours['seconds']):8.1f} s, "  # type: ignore[arg-type]
            f"peak {float(ours['peak_bytes']) / 2**20:.0f} MB, cost {ours['cost']}, "  # type: ignore[arg-type]
            f"{ours['rounds']} rounds, {ours['edges']:,} edges, valid={ours['valid']}",
            flush=True,
        )


def _write_photos(folder: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:768, 0:1024]
    for k in range(n):
        r, g, b = rng.uniform(0.2, 1.0, size=3)
        phase = rng.uniform(0, 6.28)
        arr = np.stack(
            [
                128 + 100 * r * np.sin(x / 97.0 + phase),
                128 + 100 * g * np.cos(y / 53.0 + phase),
                128 + 80 * b * np.sin((x + y) / 71.0),
            ],
            axis=-1,
        )
        arr += rng.normal(0, 6, size=(48, 64, 1)).repeat(16, 0).repeat(16, 1)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(
            folder / f"photo_{k:05d}.jpg", quality=90
        )


def _lesson_thumb(path: str) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.fit(im.convert("RGB"), (THUMB, THUMB)))


def _baseline_thumbnails(paths: list[str], scheduler: str) -> int:
    """The lesson's approach: a plain ``ImageOps.fit`` per photo mapped over a dask.bag."""
    import dask.bag as db

    return len(db.from_sequence(paths).map(_lesson_thumb).compute(scheduler=scheduler))


def _draft_thumb(path: str) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.draft("RGB", (THUMB, THUMB))
        return np.asarray(ImageOps.fit(im.convert("RGB"), (THUMB, THUMB)))


def _anchor_thumbnails(paths: list[str]) -> int:
    """An anchor: the lesson's loop with ``Image.draft``, dask.bag with threads (no hash, no cache,
    no descriptors)."""
    import dask.bag as db

    return len(db.from_sequence(paths).map(_draft_thumb).compute(scheduler="threads"))


def _where_the_time_goes(paths: list[str]) -> None:
    """One thread, per photo: reading and hashing, the draft decode + fit, the descriptor."""
    import hashlib

    from photo_mosaic.colour import block_descriptors
    from photo_mosaic.index import make_thumbnail

    read = thumb = 0.0
    smalls = []
    for path in paths:
        t0 = time.perf_counter()
        data = Path(path).read_bytes()
        hashlib.blake2b(data, digest_size=20).hexdigest()
        t1 = time.perf_counter()
        smalls.append(make_thumbnail(data, THUMB))
        t2 = time.perf_counter()
        read, thumb = read + t1 - t0, thumb + t2 - t1
    t0 = time.perf_counter()
    block_descriptors(np.stack(smalls), 1)  # as build_index does: once per partition
    desc = time.perf_counter() - t0
    n = len(paths) / 1000.0
    print(
        f"one thread, per photo: read + hash {read / n:.2f} ms, draft decode + fit "
        f"{thumb / n:.2f} ms, CIELAB descriptor {desc / n:.2f} ms"
    )


def bench_thumbnails(n_photos: int = 1_000) -> None:
    from photo_mosaic import build_index

    print(f"== thumbnails: {n_photos:,} generated 1024 x 768 JPEG photos, {THUMB} px thumbnails")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        _write_photos(folder, n_photos)
        paths = sorted(str(p) for p in folder.iterdir())
        _where_the_time_goes(paths[:200])
        base: dict[str, float] = {}
        for scheduler in ("processes", "threads"):
            start = time.perf_counter()
            _baseline_thumbnails(paths, scheduler)
            base[scheduler] = time.perf_counter() - start
            print(
                f"baseline (lesson): ImageOps.fit under dask.bag, {scheduler:>9}: "
                f"{n_photos / base[scheduler]:8.1f} img/s"
            )
        start = time.perf_counter()
        _anchor_thumbnails(paths)
        anchor = time.perf_counter() - start
        print(
            f"anchor: the same with Image.draft, threads: {n_photos / anchor:8.1f} img/s = "
            f"{base['processes'] / anchor:4.1f}x / {base['threads'] / anchor:4.1f}x the baselines"
        )
        for scheduler in ("threads", "processes"):
            cache = Path(tmp) / f"cache_{scheduler}.h5"
            start = time.perf_counter()
            report = build_index(
                folder, cache, thumb_size=THUMB, scheduler=scheduler, progress=False
            )
            ours = time.perf_counter() - start
            assert report.n_tiles == n_photos
            print(
                f"build_index ({scheduler:>9}, draft + hash + descriptors + cache): "
                f"{n_photos / ours:8.1f} img/s = {base['processes'] / ours:4.1f}x the "
                f"processes baseline, {base['threads'] / ours:4.1f}x the threads baseline",
                flush=True,
            )
        start = time.perf_counter()
        report = build_index(
            folder, Path(tmp) / "cache_threads.h5", thumb_size=THUMB, progress=False
        )
        print(
            f"re-run with the cache (nothing changed): {time.perf_counter() - start:.3f} s, "
            f"cache rewritten: {report.cache_written}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="also solve 100,000 x 100,000")
    parser.add_argument(
        "--only-large", action="store_true", help="solve only 100,000 x 100,000 (no thumbnails)"
    )
    parser.add_argument("--skip-assignment", action="store_true")
    parser.add_argument(
        "--grids", default="1,2,3", help="descriptor grids of the assignment (default 1,2,3)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="assignment: only the 10,000-cell shapes and 10x"
    )
    parser.add_argument(
        "--shapes", help="assignment: only these CELLSxTILES, e.g. 10000x10000,2000x20000"
    )
    parser.add_argument(
        "--emd-exact",
        action="store_true",
        help="baseline: ot.emd set up as the same problem (slow when tiles outnumber cells)",
    )
    parser.add_argument("--skip-thumbnails", action="store_true")
    parser.add_argument(
        "--child", nargs=4, metavar=("METHOD", "CELLS", "TILES", "GRID"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        method, n_cells, n_tiles, grid = args.child
        print(json.dumps(child(method, int(n_cells), int(n_tiles), int(grid))))
        return
    print(f"machine: {os.cpu_count()} CPUs")
    if not args.skip_assignment:
        grids = [int(g) for g in args.grids.split(",")]
        shapes = None
        if args.shapes:
            pairs = [item.split("x") for item in args.shapes.split(",")]
            shapes = [(int(a), int(b)) for a, b in pairs]
        bench_assignment(
            args.large, args.only_large, grids, args.quick or bool(shapes), args.emd_exact, shapes
        )
    if not args.skip_thumbnails and not args.only_large:
        bench_thumbnails()


if __name__ == "__main__":
    main()
