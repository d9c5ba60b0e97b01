"""``batch-stats``: generate runs of random images, and compute their batch statistics.

The commands only parse arguments and show progress; the work is done by
:mod:`batch_stats.engine`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Never

from tqdm import tqdm

from batch_stats.engine import (
    EngineParams,
    SchemaError,
    format_table,
    iter_folder_stats,
    run_metadata,
    run_seed,
    scan_run_folder,
    utf8_name,
    write_batch_stats,
    write_synthetic_run,
)
from batch_stats.local.commands import register as register_serverless_commands

__all__ = ["build_parser", "main"]

PROG = "batch-stats"
DEFAULT_OUTPUT = Path("out/batch_stats.parquet")
Handler = Callable[[argparse.Namespace], int]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if not 0 <= value < 2**128:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**128 - 1, got {value}")
    return value


def _add_shape_options(parser: argparse.ArgumentParser, *, generation: bool) -> None:
    defaults = EngineParams()
    group = parser.add_argument_group("image processing")
    group.add_argument(
        "--square-size",
        type=_positive,
        default=defaults.square_size,
        metavar="PX",
        help="side of the white and black squares (default: %(default)s)",
    )
    group.add_argument(
        "--crop-height",
        type=_positive,
        default=defaults.crop_height,
        metavar="PX",
        help="height of the crop (default: %(default)s)",
    )
    group.add_argument(
        "--crop-width",
        type=_positive,
        default=defaults.crop_width,
        metavar="PX",
        help="width of the crop (default: %(default)s)",
    )
    if generation:
        group = parser.add_argument_group("generated run")
        group.add_argument(
            "--batches",
            type=_positive,
            default=defaults.batches,
            metavar="N",
            help="number of batches (default: %(default)s)",
        )
        group.add_argument(
            "--images-per-batch",
            type=_positive,
            default=defaults.images_per_batch,
            metavar="N",
            help="images in each batch (default: %(default)s)",
        )
        group.add_argument(
            "--image-height",
            type=_positive,
            default=defaults.image_height,
            metavar="PX",
            help="image height (default: %(default)s)",
        )
        group.add_argument(
            "--image-width",
            type=_positive,
            default=defaults.image_width,
            metavar="PX",
            help="image width (default: %(default)s)",
        )


def params_from_args(args: argparse.Namespace) -> EngineParams:
    """EngineParams from the shape options present in ``args`` (defaults for the others)."""
    names = (
        "square_size",
        "crop_height",
        "crop_width",
        "batches",
        "images_per_batch",
        "image_height",
        "image_width",
    )
    return EngineParams(**{n: getattr(args, n) for n in names if hasattr(args, n)})


def _progress(total: int, description: str) -> tqdm[Never]:
    # Progress goes to stderr, and only to a terminal, so piped output stays clean.
    return tqdm(total=total, desc=description, unit="img", file=sys.stderr, disable=None)


def _shown(path: Path) -> str:
    """A path for messages: bytes that are not UTF-8 shown as escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _folder_run_id(folder: Path, option: str) -> str:
    """The run id a folder's name gives; the name must be valid UTF-8."""
    try:
        return utf8_name(folder.resolve(), "run folder")
    except ValueError as error:
        raise ValueError(f"{error}, or give {option}") from None


def _generate(args: argparse.Namespace) -> int:
    params = params_from_args(args)
    seed = args.seed if args.seed is not None else run_seed(_folder_run_id(args.out, "--seed"))
    with _progress(params.batches * params.images_per_batch, "generate") as bar:
        folders = write_synthetic_run(args.out, seed, params=params, progress=bar.update)
    print(
        f"wrote {len(folders)} batches x {params.images_per_batch} PNG images "
        f"({params.image_height}x{params.image_width}) to {_shown(args.out)} with seed {seed}"
    )
    return 0


def _process_folder(
    run_dir: Path, output: Path, *, seed: int, run_id: str, params: EngineParams
) -> None:
    if output.is_dir():
        raise ValueError(
            f"the output {output} is a folder; name the Parquet file to write, for example "
            f"{output / 'batch_stats.parquet'}"
        )
    run = scan_run_folder(run_dir)
    with _progress(run.image_count, "process") as bar:
        stats = list(iter_folder_stats(run, seed, params=params, progress=bar.update))
    output.parent.mkdir(parents=True, exist_ok=True)
    # Opened here, not by pyarrow: a path that is not valid UTF-8 works like any other.
    with output.open("wb") as sink:
        metadata = run_metadata(params=params, seed=seed, run_id=run_id)
        write_batch_stats(stats, sink, metadata=metadata)
    print(format_table(stats))
    print(f"\nwrote {_shown(output)} ({len(stats)} batches, {run.image_count} images, seed {seed})")


def _process(args: argparse.Namespace) -> int:
    run_id = args.run_id or _folder_run_id(args.run_dir, "--run-id")
    seed = args.seed if args.seed is not None else run_seed(run_id)
    output = args.output or args.run_dir / "batch_stats.parquet"
    _process_folder(args.run_dir, output, seed=seed, run_id=run_id, params=params_from_args(args))
    return 0


def _demo(args: argparse.Namespace) -> int:
    params = params_from_args(args)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="batch-stats-demo-") as tmp:
        run_dir = Path(tmp) / "demo-run"
        with _progress(params.batches * params.images_per_batch, "generate") as bar:
            write_synthetic_run(run_dir, args.seed, params=params, progress=bar.update)
        print(f"generated {params.batches} batches x {params.images_per_batch} images in {run_dir}")
        _process_folder(run_dir, args.output, seed=args.seed, run_id="demo-run", params=params)
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one subcommand per job, each registered with :func:`add_command`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generate batches of random RGB images, draw two squares, crop, count white "
        "and black pixels, and write per-batch statistics to Parquet.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = add_command(
        commands,
        "generate",
        _generate,
        "write a run of random images as <out>/<batch_id>/<name>.png",
    )
    generate.add_argument("out", type=Path, help="folder to write the batch folders into")
    generate.add_argument(
        "--seed",
        type=_seed,
        default=None,
        help="seed of the run's pixels (default: derived from OUT's name)",
    )
    _add_shape_options(generate, generation=True)

    process = add_command(
        commands,
        "process",
        _process,
        "compute batch statistics of a folder of batch folders of PNG images",
    )
    process.add_argument("run_dir", type=Path, help="folder holding <batch_id>/<name>.png")
    process.add_argument(
        "--seed",
        type=_seed,
        default=None,
        help="seed of the squares and crops (default: derived from the run id)",
    )
    process.add_argument(
        "--run-id",
        default=None,
        help="run id stored in the file, and the seed's source when --seed is "
        "not given (default: the folder's name)",
    )
    process.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="Parquet file to write (default: RUN_DIR/batch_stats.parquet)",
    )
    _add_shape_options(process, generation=False)

    demo = add_command(
        commands,
        "demo-folder",
        _demo,
        "generate a run in a temporary folder, process it, write the Parquet file",
    )
    demo.add_argument("--seed", type=_seed, default=2026, help="seed (default: %(default)s)")
    demo.add_argument(
        "-o",
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="Parquet file to write (default: %(default)s)",
    )
    _add_shape_options(demo, generation=True)
    register_serverless_commands(commands, add_command)
    return parser


def add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Handler,
    summary: str,
) -> argparse.ArgumentParser:
    """Register a subcommand whose ``handler(args)`` returns the exit status."""
    command = commands.add_parser(name, help=summary, description=summary)
    command.set_defaults(handler=handler)
    return command


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; bad input prints one line to stderr and exits with status 2."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (ValueError, OSError) as error:
        # ImageRejected and SchemaError are ValueErrors: their messages name the file and reason;
        # an OSError (a folder or file that cannot be written, ...) names its path.
        kind = "schema error" if isinstance(error, SchemaError) else "error"
        print(f"{PROG}: {kind}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
