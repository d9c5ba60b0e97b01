"""A phone-number image dataset on disk: PNGs rendered in parallel, labels written by the parent.

The numbers are drawn lazily, one chunk at a time (:func:`iter_phone_numbers`: unique across the
whole dataset without holding them all), so memory stays bounded whatever the count. Each chunk
has its own seed spawned from the run's seed, so the images are the same whatever the number of
worker processes. Workers render their chunk with the batch renderer, encode the PNGs and write
them; the parent keeps a few chunks in flight, shows progress and appends each finished chunk's
rows to ``labels.csv`` in order (``file,digits,formatted``).

Everything is written into a hidden staging folder beside the output folder, which is renamed into
place only once complete: a run that fails (an error, Ctrl-C) removes it and leaves nothing; a run
killed outright leaves only the hidden ``.<name>.partial-*`` folder, safe to delete.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Never, Protocol, TextIO

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from number_generator._phone import (
    JAPANESE_FORMATS,
    PhoneFormat,
    PhoneNumber,
    _check_request,
    iter_phone_numbers,
)
from number_generator._png import PNGWriter
from number_generator._sequence import (
    Align,
    Overflow,
    _check_fit,
    _check_options,
    _spacing,
    _width,
    generator,
    render_batch_boxes_u8,
    warn_if_biased,
)
from number_generator._source import HEIGHT, DigitSource, SourceLike, load_source

__all__ = [
    "BOXES_FILE",
    "CHUNK_BYTES",
    "LABELS_FILE",
    "check_output",
    "default_workers",
    "make_staging",
    "publish",
    "write_phone_dataset",
]

LABELS_FILE: Final = "labels.csv"
#: One JSON object per image, in the order of labels.csv: file, digits, formatted and the ink
#: box ``[x0, y0, x1, y1]`` of every digit (x1, y1 exclusive).
BOXES_FILE: Final = "boxes.jsonl"
#: Pixels one chunk may hold while it is rendered (the chunk size shrinks for very wide images).
CHUNK_BYTES: Final = 64 * 1024 * 1024


class _RowWriter(Protocol):
    def writerows(self, rows: Iterable[Iterable[str]], /) -> object: ...


@dataclass(frozen=True)
class _Job:
    directory: str
    spacing: tuple[int, int]
    width: int
    align: Align
    overflow: Overflow
    compress_level: int


@dataclass(frozen=True)
class _Chunk:
    numbers: list[str]
    files: list[str]
    seed: np.random.SeedSequence


_worker_state: dict[str, object] = {}


def default_workers() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        return os.cpu_count() or 1


def write_phone_dataset(
    output_dir: str | os.PathLike[str],
    count: int,
    spacing_range: tuple[int, int],
    image_width: int,
    *,
    rng: np.random.Generator | int | None = None,
    source: SourceLike = None,
    align: Align = "center",
    overflow: Overflow = "resample",
    formats: tuple[PhoneFormat, ...] = JAPANESE_FORMATS,
    workers: int | None = None,
    chunk_size: int = 1000,
    compress_level: int = 1,
    progress: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write ``count`` PNGs of unique phone numbers, ``labels.csv`` and ``boxes.jsonl``.

    Image ``i`` is ``<i>_<digits>.png`` (zero-padded index): 8-bit grayscale, black ink on white,
    only the digits (the hyphens are in the ``formatted`` column of the labels). ``workers``
    defaults to every CPU this process may use; ``workers=1`` renders in this process.
    ``output_dir`` must not exist or be empty, unless ``overwrite`` (then its old contents are
    replaced once the new dataset is complete). Returns the path of ``labels.csv``.
    """
    lo, hi = _spacing(spacing_range)
    width = _width(image_width)
    _check_options(align, overflow)
    workers = default_workers() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be 0-9, got {compress_level}")
    _check_request(count, formats)
    target = Path(output_dir)
    check_output(target, overwrite=overwrite)
    gen = generator(rng)
    src = load_source(source)
    for length in sorted({f.length for f in formats}):
        # Check the hardest number each format can produce before any work: the one with the
        # widest narrowest glyphs (must fit) and the one with the widest glyphs (fits exactly?).
        same = [f for f in formats if f.length == length]
        narrowest = np.array([_extreme(f, src.min_widths) for f in same], dtype=np.intp)
        widest = np.array([_extreme(f, src.max_widths) for f in same], dtype=np.intp)
        _check_fit(narrowest, lo, hi, width, src, overflow)
        if not _check_fit(widest, lo, hi, width, src, overflow):
            wide = np.asarray(src.max_widths)[widest].sum(axis=1)
            row = widest[int(np.argmax(wide))].tolist()
            warn_if_biased(row, lo, hi, width, src, stacklevel=3)
    # A chunk's canvas (rows x 28 x width) stays within CHUNK_BYTES.
    chunk_size = max(1, min(chunk_size, CHUNK_BYTES // (HEIGHT * (width + 32))))
    staging = make_staging(target)
    try:
        labels = staging / LABELS_FILE
        digits_width = max(6, len(str(count - 1)))
        seeds = np.random.SeedSequence(gen.integers(0, 2**63, size=4).tolist())
        chunks = _chunks(count, chunk_size, digits_width, gen, seeds, formats)
        job = _Job(str(staging), (lo, hi), width, align, overflow, compress_level)
        with (
            labels.open("w", newline="", encoding="utf-8") as fh,
            (staging / BOXES_FILE).open("w", encoding="utf-8") as boxes_fh,
        ):
            writer = csv.writer(fh)
            writer.writerow(("file", "digits", "formatted"))
            sinks = _Sinks(writer, boxes_fh)
            if workers == 1 or count <= chunk_size:
                with _progress(count, progress) as bar:
                    for chunk, numbers in chunks:
                        sinks.write(chunk, numbers, _render_chunk(job, src, chunk))
                        bar.update(len(numbers))
            else:
                pool_size = min(workers, -(-count // chunk_size))
                _run_pool(job, source, chunks, pool_size, count, progress, sinks)
        publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target / LABELS_FILE


def _extreme(fmt: PhoneFormat, widths: tuple[int, ...]) -> list[int]:
    """The digits of ``fmt``'s number with the largest total of ``widths`` (a real number)."""
    first = max((int(c) for c in fmt.first_digits), key=lambda d: widths[d])
    free = max(range(10), key=lambda d: widths[d])
    return [int(c) for c in fmt.prefix] + [first] + [free] * (fmt.subscriber_length - 1)


def check_output(target: Path, *, overwrite: bool) -> None:
    """Refuse an output folder that cannot be one, or holds files (unless ``overwrite``).

    ``target`` must not exist, or be an empty folder, unless ``overwrite``; an ancestor that is
    a regular file is reported as "not a directory". Nothing is created.
    """
    for parent in (target, *target.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise NotADirectoryError(
                    f"cannot write to output directory {target}: {parent} is not a directory"
                )
            break
    if target.is_dir() and not overwrite and any(target.iterdir()):
        raise FileExistsError(
            f"output directory {target} is not empty; choose a new or empty folder, or pass "
            "--overwrite (overwrite=True) to replace its contents once the new dataset is complete"
        )


def make_staging(target: Path) -> Path:
    """The hidden staging folder beside ``target`` (missing ancestors are created)."""
    parent = target.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.partial-"))
    except OSError as exc:
        raise OSError(f"cannot write to output directory {target}: {exc.strerror}") from exc


def publish(staging: Path, target: Path) -> None:
    """Move the complete ``staging`` folder to ``target`` (renames; the old contents go last)."""
    old: Path | None = None
    if target.is_dir():
        if any(target.iterdir()):
            old = Path(tempfile.mkdtemp(dir=staging.parent, prefix=f".{target.name}.old-"))
            os.rmdir(old)
            os.replace(target, old)
        else:
            os.rmdir(target)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _chunks(
    count: int,
    chunk_size: int,
    digits_width: int,
    gen: np.random.Generator,
    seeds: np.random.SeedSequence,
    formats: tuple[PhoneFormat, ...],
) -> Iterator[tuple[_Chunk, list[PhoneNumber]]]:
    start = 0
    for numbers in iter_phone_numbers(count, rng=gen, formats=formats, chunk_size=chunk_size):
        files = [f"{start + i:0{digits_width}d}_{n.digits}.png" for i, n in enumerate(numbers)]
        (seed,) = seeds.spawn(1)
        yield _Chunk([n.digits for n in numbers], files, seed), numbers
        start += len(numbers)


@dataclass
class _Sinks:
    labels: _RowWriter
    boxes: TextIO

    def write(self, chunk: _Chunk, numbers: list[PhoneNumber], boxes: Boxes) -> None:
        rows = list(zip(chunk.files, numbers, boxes, strict=True))
        self.labels.writerows((name, n.digits, n.formatted) for name, n, _ in rows)
        self.boxes.writelines(
            json.dumps(
                {"file": name, "digits": n.digits, "formatted": n.formatted, "boxes": b},
                separators=(",", ":"),
            )
            + "\n"
            for name, n, b in rows
        )


def _digit_rows(numbers: list[str], length: int) -> npt.NDArray[np.intp]:
    raw = np.frombuffer("".join(numbers).encode("ascii"), dtype=np.uint8)
    return (raw.reshape(-1, length) - ord("0")).astype(np.intp)


Boxes = list[list[list[int]]]  # per image, per digit: [x0, y0, x1, y1]


def _render_chunk(job: _Job, source: DigitSource, chunk: _Chunk) -> Boxes:
    gen = np.random.default_rng(chunk.seed)
    boxes: Boxes = [[] for _ in chunk.numbers]
    writer = PNGWriter(HEIGHT, job.width, compress_level=job.compress_level)
    positions: dict[int, list[int]] = {}
    for i, digits in enumerate(chunk.numbers):
        positions.setdefault(len(digits), []).append(i)
    for length in sorted(positions):
        index = positions[length]
        rows = _digit_rows([chunk.numbers[i] for i in index], length)
        pixels, found = render_batch_boxes_u8(
            rows, job.spacing, job.width, rng=gen, source=source, align=job.align,
            overflow=job.overflow, warn_bias=False,
        )  # fmt: skip
        for i, data in zip(index, writer.encode_batch(pixels), strict=True):
            writer.write(os.path.join(job.directory, chunk.files[i]), data)
        for i, row in zip(index, found.tolist(), strict=True):
            boxes[i] = row
    return boxes


def _init_worker(source: SourceLike) -> None:
    _worker_state["source"] = load_source(source)


def _worker(job: _Job, chunk: _Chunk) -> Boxes:
    source = _worker_state["source"]
    assert isinstance(source, DigitSource)
    return _render_chunk(job, source, chunk)


def _progress(count: int, progress: bool) -> tqdm[Never]:
    return tqdm(total=count, unit="img", disable=not progress, desc="phone numbers")


def _run_pool(
    job: _Job,
    source: SourceLike,
    chunks: Iterator[tuple[_Chunk, list[PhoneNumber]]],
    workers: int,
    count: int,
    progress: bool,
    sinks: _Sinks,
) -> None:
    """Render ``chunks`` on ``workers`` processes, at most ``2 * workers`` chunks in flight, and
    write their label rows in order as they finish."""
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker, initargs=(source,)
    ) as pool:
        pending: deque[tuple[Future[Boxes], _Chunk, list[PhoneNumber]]] = deque()

        def submit(limit: int) -> None:
            for chunk, numbers in chunks:
                pending.append((pool.submit(_worker, job, chunk), chunk, numbers))
                if len(pending) >= limit:
                    return

        # The first submissions start the workers; the progress bar (and its monitor thread)
        # comes after, so that no thread exists in this process when the workers are forked.
        submit(2 * workers)
        try:
            with _progress(count, progress) as bar:
                while pending:
                    future, chunk, numbers = pending.popleft()
                    sinks.write(chunk, numbers, future.result())
                    bar.update(len(numbers))
                    submit(2 * workers)
        except BrokenProcessPool as exc:
            for future, _, _ in pending:
                future.cancel()
            raise RuntimeError(
                "a worker process died (killed, or out of memory?); try fewer --workers"
            ) from exc
        except BaseException:
            for future, _, _ in pending:
                future.cancel()
            raise
