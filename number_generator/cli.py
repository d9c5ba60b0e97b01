"""Command-line entry points: ``generate-numbers-sequence``, ``generate-phone-numbers`` and
``python -m number_generator download``.

Each prints what it wrote on stdout; on bad input it prints one line,
``<program>: error: <what is wrong and what is allowed>``, on stderr and exits with status 2
(usage) or 1 (the work failed, e.g. an unwritable output path or a corrupt MNIST file).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import numpy.typing as npt
from PIL import Image

from number_generator._dataset import (
    BOXES_FILE,
    DATASET_FORMATS,
    DEFAULT_SHARD_SIZE,
    LABELS_FILE,
    MANIFEST_FILE,
    default_workers,
    write_phone_dataset,
    write_phone_splits,
)
from number_generator._download import DEFAULT_MIRROR, MIRROR_ENV, download_mnist
from number_generator._phone import JAPANESE_FORMATS, generate_phone_numbers
from number_generator._png import save_png
from number_generator._preview import save_preview
from number_generator._sequence import generate_numbers_sequence, generator
from number_generator._source import CACHE_DIR_ENV, MNIST_DIR_ENV, to_float
from number_generator.augment import PRESETS

__all__ = ["download_main", "phone_main", "preview_main", "sequence_main"]

_EPILOG_SOURCE = (
    f"Digits come from --mnist-dir, else ${MNIST_DIR_ENV}, else the download cache "
    f"(${CACHE_DIR_ENV}; fill it with `python -m number_generator download`), else the MNIST "
    "test set shipped with the package. MNIST: Yann LeCun and Corinna Cortes, CC BY-SA 3.0."
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _non_negative(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = _integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _split_weights(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise argparse.ArgumentTypeError(
            f"must be three non-negative proportions TRAIN,VALIDATION,TEST such as 8,1,1; "
            f"got {text!r}"
        )
    return parts[0], parts[1], parts[2]


def _split_counts(count: int, weights: tuple[float, float, float]) -> dict[str, int]:
    """``count`` shared by ``weights`` (largest remainders); empty splits are left out."""
    total = sum(weights)
    exact = [count * w / total for w in weights]
    counts = [int(x) for x in exact]
    for i in sorted(range(3), key=lambda i: counts[i] - exact[i])[: count - sum(counts)]:
        counts[i] += 1
    names = ("train", "validation", "test")
    return {name: n for name, n in zip(names, counts, strict=True) if n > 0}


def _digit_string(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("the sequence is empty: give digits 0-9, e.g. 0451")
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"must contain only the digits 0-9, got {text!r}")
    return text


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("min_spacing", type=_non_negative, help="minimum gap between digits (px)")
    parser.add_argument("max_spacing", type=_non_negative, help="maximum gap between digits (px)")
    parser.add_argument("image_width", type=_positive, help="width of each image (px)")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed", type=_non_negative, default=None, help="seed (>= 0) for reproducible output"
    )
    parser.add_argument(
        "--align",
        choices=("left", "center", "right", "random"),
        default="center",
        help="where the leftover width goes (default: center)",
    )
    parser.add_argument(
        "--overflow",
        choices=("resample", "raise"),
        default="resample",
        help="when a draw may not fit the width: redraw it, or refuse up front (default: resample)",
    )
    parser.add_argument("--mnist-dir", type=Path, default=None, help="directory of MNIST files")
    parser.add_argument(
        "--augment",
        choices=tuple(PRESETS),
        default=None,
        help="augment each image (elastic, affine, stroke width per digit; blur, noise, paper, "
        "occlusion per image): light, medium or heavy (default: none, the MNIST pixels as they "
        "are)",
    )


@contextlib.contextmanager
def _warnings_as_lines(prog: str) -> Iterator[None]:
    """Show warnings (e.g. a tight width's measured bias) as one line each on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for warning in caught:
                message = " ".join(str(warning.message).split())
                print(f"{prog}: warning: {message}", file=sys.stderr)


def _not_a_directory(path: Path) -> str | None:
    """The first ancestor of ``path`` that exists but is not a directory, as a message."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else f"{parent} is not a directory"
    return None


def _fail(prog: str, exc: BaseException) -> int:
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 1


def sequence_main(argv: Sequence[str] | None = None) -> int:
    """``generate-numbers-sequence``: one PNG of a digit sequence."""
    parser = _Parser(
        prog="generate-numbers-sequence",
        description="Write an 8-bit grayscale PNG (black digits on white, 28 px high) of a "
        "digit sequence built from random MNIST images.",
        epilog=_EPILOG_SOURCE,
    )
    parser.add_argument("sequence", type=_digit_string, help="the digits, e.g. 0451 (zeros kept)")
    _common(parser)
    parser.add_argument(
        "output",
        nargs="?",
        type=Path,
        default=Path("."),
        help="a directory (default: the current one) or a .png path; in a directory the file "
        "is named <sequence>_w<width>_s<min>-<max>[_seed<seed>].png",
    )
    _options(parser)
    parser.add_argument(
        "--boxes",
        action="store_true",
        help="also write <png name>.json: the digits and each digit's ink box [x0, y0, x1, y1] "
        "(x1, y1 exclusive)",
    )
    args = parser.parse_args(argv)
    if args.min_spacing > args.max_spacing:
        parser.error(
            f"min_spacing ({args.min_spacing}) must not exceed max_spacing ({args.max_spacing})"
        )
    output: Path = args.output
    if output.suffix.lower() != ".png" or output.is_dir():
        seed = "" if args.seed is None else f"_seed{args.seed}"
        name = f"{args.sequence}_w{args.image_width}_s{args.min_spacing}-{args.max_spacing}{seed}"
        output = output / f"{name}.png"
    blocked = _not_a_directory(output)
    if blocked:
        return _fail(parser.prog, OSError(f"cannot write {output}: {blocked}"))
    try:
        with _warnings_as_lines(parser.prog):
            image = generate_numbers_sequence(
                [int(c) for c in args.sequence],
                (args.min_spacing, args.max_spacing),
                args.image_width,
                rng=args.seed,
                source=args.mnist_dir,
                align=args.align,
                overflow=args.overflow,
                augment=args.augment,
                with_boxes=True,
            )
    except (ValueError, TypeError, OSError) as exc:
        return _fail(parser.prog, exc)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        save_png(image.image, output)
        if args.boxes:
            record = {"file": output.name, "digits": args.sequence, "boxes": image.boxes.tolist()}
            output.with_suffix(".json").write_text(json.dumps(record) + "\n", encoding="utf-8")
    except OSError as exc:
        return _fail(parser.prog, OSError(f"cannot write {output}: {exc.strerror or exc}"))
    print(output)
    return 0


def phone_main(argv: Sequence[str] | None = None) -> int:
    """``generate-phone-numbers``: a dataset of unique Japanese phone-number images."""
    formats = ", ".join(f"{f.pattern} ({f.weight:.0%})" for f in JAPANESE_FORMATS)
    parser = _Parser(
        prog="generate-phone-numbers",
        description="Write PNG images of unique, realistic Japanese phone numbers (digits only, "
        f"black on white), {LABELS_FILE} (file, digits, formatted) and {BOXES_FILE} (one JSON "
        f"line per image: the same and each digit's ink box). Formats: {formats}.",
        epilog=_EPILOG_SOURCE,
    )
    _common(parser)
    parser.add_argument("count", type=_positive, help="how many images (distinct numbers)")
    parser.add_argument(
        "output",
        nargs="?",
        type=Path,
        default=Path("phone-numbers"),
        help="output directory, created if needed (default: ./phone-numbers)",
    )
    _options(parser)
    parser.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help=f"worker processes (default: the CPUs available, here {default_workers()})",
    )
    parser.add_argument(
        "--compress-level",
        type=int,
        choices=range(10),
        default=1,
        metavar="0-9",
        help="0 stores raw pixels (files several times larger); 1-9 (default 1) compress "
        "with zlib's run-length strategy, where the level barely matters for these images",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--format",
        choices=DATASET_FORMATS,
        default="png",
        help="png: one PNG per image (default); npz: images.npz (uncompressed arrays); hdf5: "
        "images.h5 (needs h5py); shards: tar files of PNG + JSON pairs for streaming loaders",
    )
    parser.add_argument(
        "--shard-size",
        type=_positive,
        default=DEFAULT_SHARD_SIZE,
        help=f"samples per tar file with --format shards (default {DEFAULT_SHARD_SIZE:,})",
    )
    parser.add_argument(
        "--splits",
        type=_split_weights,
        default=None,
        metavar="TRAIN,VALIDATION,TEST",
        help="write train/, validation/ and test/ with count shared in these proportions (e.g. "
        "8,1,1); train digits come from MNIST's training set, validation and test digits from "
        "the two halves of its test set (disjoint writers); needs the full MNIST files "
        "(--mnist-dir or `python -m number_generator download`)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the contents of a non-empty output directory (once the new dataset is "
        "complete); without it a non-empty directory is refused",
    )
    args = parser.parse_args(argv)
    if args.min_spacing > args.max_spacing:
        parser.error(
            f"min_spacing ({args.min_spacing}) must not exceed max_spacing ({args.max_spacing})"
        )
    options = {
        "rng": args.seed,
        "align": args.align,
        "overflow": args.overflow,
        "workers": args.workers,
        "compress_level": args.compress_level,
        "progress": not args.quiet,
        "overwrite": args.overwrite,
        "format": args.format,
        "shard_size": args.shard_size,
        "augment": args.augment,
    }
    try:
        with _warnings_as_lines(parser.prog):
            if args.splits is None:
                written = write_phone_dataset(
                    args.output, args.count, (args.min_spacing, args.max_spacing),
                    args.image_width, source=args.mnist_dir, **options,
                )  # fmt: skip
            else:
                counts = _split_counts(args.count, args.splits)
                written = write_phone_splits(
                    args.output, counts, (args.min_spacing, args.max_spacing),
                    args.image_width, source_arg=args.mnist_dir, **options,
                ) / MANIFEST_FILE  # fmt: skip
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        return _fail(parser.prog, exc)
    print(written)
    return 0


def download_main(argv: Sequence[str] | None = None) -> int:
    """``python -m number_generator download``: fill the MNIST cache (all 70,000 digits)."""
    parser = _Parser(
        prog="python -m number_generator download",
        description="Download the MNIST files, check the SHA-256 of their decompressed "
        "contents and store them (atomically) in the cache, which then becomes the default "
        "digit source.",
    )
    parser.add_argument(
        "--mirror",
        default=None,
        help=f"base URL of the files (default: ${MIRROR_ENV}, else {DEFAULT_MIRROR})",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"target directory (default: ${CACHE_DIR_ENV}, else the platform's user cache)",
    )
    parser.add_argument(
        "--split",
        action="append",
        choices=("train", "t10k"),
        default=None,
        help="only this split (repeatable; default: both, 70,000 digits)",
    )
    parser.add_argument("--force", action="store_true", help="download even valid files again")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    args = parser.parse_args(argv)
    try:
        directory = download_mnist(
            mirror=args.mirror,
            directory=args.dir,
            splits=args.split or ("train", "t10k"),
            force=args.force,
            timeout=args.timeout,
        )
    except (ValueError, OSError) as exc:
        return _fail(parser.prog, exc)
    print(directory)
    return 0


def preview_main(argv: Sequence[str] | None = None) -> int:
    """``number-generator preview``: a sheet of samples with their labels and boxes."""
    parser = _Parser(
        prog="number-generator preview",
        description="Write a PNG sheet of samples, enlarged, with each digit's box and label: "
        "fresh phone numbers, or the first images of a dataset folder (png or npz format).",
        epilog=_EPILOG_SOURCE,
    )
    parser.add_argument("output", type=Path, help="the PNG file to write")
    parser.add_argument("--dataset", type=Path, default=None, help="a dataset folder to show")
    parser.add_argument("--count", type=_positive, default=12, help="samples (default 12)")
    parser.add_argument("--width", type=_positive, default=280, help="image width (default 280)")
    parser.add_argument(
        "--spacing", type=_non_negative, nargs=2, default=(1, 6), metavar=("MIN", "MAX")
    )
    parser.add_argument("--columns", type=_positive, default=2, help="columns (default 2)")
    parser.add_argument("--scale", type=_positive, default=3, help="enlargement (default 3)")
    parser.add_argument("--seed", type=_non_negative, default=None)
    parser.add_argument("--mnist-dir", type=Path, default=None, help="directory of MNIST files")
    parser.add_argument("--augment", choices=tuple(PRESETS), default=None, help="a preset")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a trained recogniser (model.pt): show what it reads, errors in magenta (needs the "
        "train extra)",
    )
    args = parser.parse_args(argv)
    lo, hi = args.spacing
    if lo > hi:
        parser.error(f"--spacing min ({lo}) must not exceed max ({hi})")
    blocked = _not_a_directory(args.output)
    if blocked:
        return _fail(parser.prog, OSError(f"cannot write {args.output}: {blocked}"))
    try:
        with _warnings_as_lines(parser.prog):
            if args.dataset is None:
                images, digits, boxes = _fresh_samples(args)
            else:
                images, digits, boxes = _dataset_samples(args.dataset, args.count)
        predictions = None if args.model is None else _predict(args.model, images)
        save_preview(
            args.output, images, digits, boxes, predictions=predictions, scale=args.scale,
            columns=args.columns,
        )  # fmt: skip
    except (ValueError, TypeError, OSError, KeyError) as exc:
        return _fail(parser.prog, exc)
    print(args.output)
    return 0


def _predict(model: Path, images: list[npt.NDArray[np.float32]]) -> list[str]:
    try:
        from number_generator.recognizer import Recognizer
    except ModuleNotFoundError:
        raise ValueError("--model needs PyTorch: pip install 'imgpipe[train]'") from None
    return Recognizer.load(model).predict(np.stack(images))


Samples = tuple[list[npt.NDArray[np.float32]], list[str], list[npt.NDArray[np.int32]]]


def _fresh_samples(args: argparse.Namespace) -> Samples:
    gen = generator(args.seed)
    numbers = generate_phone_numbers(args.count, rng=gen)
    images, digits, boxes = [], [], []
    for number in numbers:
        sample = generate_numbers_sequence(
            [int(c) for c in number.digits], tuple(args.spacing), args.width, rng=gen,
            source=args.mnist_dir, augment=args.augment, with_boxes=True,
        )  # fmt: skip
        images.append(sample.image)
        digits.append(number.digits)
        boxes.append(sample.boxes)
    return images, digits, boxes


def _dataset_samples(folder: Path, count: int) -> Samples:
    records_file = folder / BOXES_FILE
    if not records_file.is_file():
        raise FileNotFoundError(f"{folder} holds no {BOXES_FILE}: not a dataset folder")
    records = []
    with records_file.open(encoding="utf-8") as fh:
        for line in fh:
            records.append(json.loads(line))
            if len(records) == count:
                break
    images: list[npt.NDArray[np.float32]] = []
    npz = folder / "images.npz"
    if npz.is_file():
        with np.load(npz, mmap_mode="r") as arrays:
            stored = arrays["images"][: len(records)]
        images = [to_float(image) for image in stored]
    else:
        for record in records:
            with Image.open(folder / record["file"]) as png:
                images.append(to_float(np.asarray(png.convert("L"))))
    boxes = [np.asarray(r["boxes"], dtype=np.int32) for r in records]
    return images, [r["digits"] for r in records], boxes
