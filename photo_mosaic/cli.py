"""``photo-mosaic``: index tile photos, match them to a target, render the mosaic."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from photo_mosaic._images import display_name
from photo_mosaic.index import build_index, load_index
from photo_mosaic.limits import (
    check_mosaic_size,
    check_unique_size,
    estimate_unique_seconds,
    format_seconds,
)
from photo_mosaic.match import (
    METHODS,
    cell_grid,
    load_matches,
    load_target,
    match_tiles,
    matches_path_for,
    save_matches,
)
from photo_mosaic.render import check_output_path, render_mosaic, save_mosaic

DEFAULT_CACHE = Path("mosaic-cache") / "tiles.h5"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {value}")
    return value


def _add_index_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--thumb-size", type=_positive, default=32, help="thumbnail side (default 32)")
    p.add_argument(
        "--grid",
        type=_positive,
        default=1,
        help="descriptor blocks per side: 1 = mean colour (default), 2-4 = finer matching",
    )
    p.add_argument(
        "--scheduler",
        default="threads",
        help="threads (default), processes, sync, or a dask.distributed address tcp://host:port",
    )


def _add_match_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cols", type=_positive, required=True, help="cells across the target")
    p.add_argument(
        "--method",
        choices=METHODS,
        default="nearest",
        help="nearest: closest tile per cell, tiles repeat (default); "
        "unique: exact assignment, each tile at most once (or ceil(cells/tiles) times)",
    )


def _add_render_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, help="mosaic file (.jpg, .jpeg or .png)")
    p.add_argument(
        "--blend",
        type=_fraction,
        default=0.0,
        help="mix tiles towards the target colour, 0 (off, default) to 1",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photo-mosaic",
        description="Rebuild a picture as a mosaic of many tile photos.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cache_help = f"HDF5 tile cache (default {DEFAULT_CACHE}); matches are saved next to it"

    p = sub.add_parser("index", help="thumbnail and cache the photos under a folder")
    p.add_argument("folder", help="folder with .jpg/.jpeg/.png tile photos (searched recursively)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=cache_help)
    _add_index_options(p)

    p = sub.add_parser("match", help="choose a tile for every cell of the target")
    p.add_argument("target", help="the picture to rebuild")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=cache_help)
    _add_match_options(p)

    p = sub.add_parser("render", help="paste the matched tiles into the mosaic")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=cache_help)
    _add_render_options(p)

    p = sub.add_parser("run", help="index, match and render in one go")
    p.add_argument("folder", help="folder with the tile photos")
    p.add_argument("target", help="the picture to rebuild")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=cache_help)
    _add_index_options(p)
    _add_match_options(p)
    _add_render_options(p)

    p = sub.add_parser("demo", help="offline demo with generated tiles (needs scikit-image)")
    p.add_argument("--out", type=Path, default=Path("out") / "mosaic", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated tiles")
    p.add_argument("--tiles", type=_positive, default=2000, help="tile photos to generate")
    return parser


def _index(args: argparse.Namespace) -> None:
    report = build_index(
        args.folder,
        args.cache,
        thumb_size=args.thumb_size,
        grid=args.grid,
        scheduler=args.scheduler,
        progress=sys.stderr.isatty(),
    )
    print(report.summary())


def _precheck(args: argparse.Namespace) -> Image.Image:
    """Before indexing (minutes for many photos): the target reads and the sizes are allowed."""
    target = load_target(args.target)
    rows, cols = cell_grid(target.size, args.cols, args.grid)
    if args.method == "unique":
        check_unique_size(rows * cols, 0, 3 * args.grid * args.grid, cols=cols)
    check_mosaic_size(rows, cols, args.thumb_size)
    return target


def _match(args: argparse.Namespace, target: Image.Image | None = None) -> None:
    start = time.perf_counter()
    index = load_index(args.cache)
    image = load_target(args.target) if target is None else target
    if args.method == "unique":
        rows, cols = cell_grid(image.size, args.cols, index.grid)
        n_tiles, dim = len(index.paths), index.descriptors.shape[1]
        check_unique_size(rows * cols, n_tiles, dim, cols=cols)
        guess = format_seconds(estimate_unique_seconds(rows * cols, n_tiles, dim))
        print(
            f"unique assignment of {rows * cols:,} cells to {n_tiles:,} tiles: expect {guess} "
            "(measured on 2 cores; colours far from the tiles' take longer)",
            file=sys.stderr,
            flush=True,
        )
    matches = match_tiles(index, image, cols=args.cols, method=args.method)
    path = save_matches(matches, matches_path_for(args.cache))
    rows, cols = matches.shape
    print(
        f"matched {rows} x {cols} cells to {len(index.paths)} tiles ({args.method}, total "
        f"distance {matches.total_cost:.6g}) in {time.perf_counter() - start:.2f} s: "
        f"{display_name(str(path))}"
    )


def _render(args: argparse.Namespace) -> None:
    index = load_index(args.cache)
    matches = load_matches(matches_path_for(args.cache))
    image = render_mosaic(index, matches, blend=args.blend)
    out = save_mosaic(image, args.output)
    print(f"mosaic {image.width} x {image.height} px written to {display_name(str(out))}")


def _demo(args: argparse.Namespace) -> None:
    from photo_mosaic.demo import make_demo_data

    data = make_demo_data(args.out, n_tiles=args.tiles, seed=args.seed)
    print(
        f"demo data: {data.n_written} tile photos, {data.n_duplicates} duplicate copies and "
        f"{data.n_broken} broken files under {data.tiles}; target {data.target}"
    )
    cache = args.out / "cache" / "tiles.h5"
    report = build_index(data.tiles, cache, progress=sys.stderr.isatty())
    print(report.summary())
    index = load_index(cache)
    for method in METHODS:
        start = time.perf_counter()
        matches = match_tiles(index, data.target, cols=36, method=method)
        save_matches(matches, matches_path_for(cache))
        out = save_mosaic(render_mosaic(index, matches), args.out / f"mosaic_{method}.jpg")
        rows, cols = matches.shape
        print(
            f"{method}: {rows} x {cols} cells, total distance {matches.total_cost:.6g}, "
            f"{time.perf_counter() - start:.2f} s -> {out.resolve()}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "index":
            _index(args)
        elif args.command == "match":
            _match(args)
        elif args.command == "render":
            check_output_path(args.output)
            _render(args)
        elif args.command == "run":
            check_output_path(args.output)
            target = _precheck(args)
            _index(args)
            _match(args, target)
            _render(args)
        else:
            _demo(args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"photo-mosaic: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
