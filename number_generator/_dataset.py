"""A phone-number image dataset on disk: PNGs rendered in parallel, labels written by the parent.

The numbers are drawn first (in the parent, so they are unique across the whole dataset), then cut
into fixed-size chunks. Each chunk has its own seed spawned from the run's seed, so the images are
the same whatever the number of worker processes. Workers render their chunk with the batch
renderer, encode the PNGs and write them; the parent shows progress and finally writes
``labels.csv`` atomically (``file,digits,formatted``).
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Never

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from number_generator._phone import JAPANESE_FORMATS, PhoneFormat, generate_phone_numbers
from number_generator._png import PNGWriter
from number_generator._sequence import (
    Align,
    Overflow,
    _check_fit,
    _check_options,
    _spacing,
    _width,
    render_batch_u8,
)
from number_generator._source import HEIGHT, DigitSource, SourceLike, load_source

__all__ = ["LABELS_FILE", "default_workers", "write_phone_dataset"]

LABELS_FILE: Final = "labels.csv"


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
) -> Path:
    """Write ``count`` PNGs of unique phone numbers and ``labels.csv`` into ``output_dir``.

    Image ``i`` is ``<i>_<digits>.png`` (zero-padded index): 8-bit grayscale, black ink on white,
    only the digits (the hyphens are in the ``formatted`` column of the labels). ``workers``
    defaults to every CPU this process may use; ``workers=1`` renders in this process.
    Returns the path of ``labels.csv``.
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
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    numbers = generate_phone_numbers(count, rng=gen, formats=formats)
    src = load_source(source)
    for rows in _by_length([n.digits for n in numbers]).values():
        _check_fit(rows, lo, hi, width, src, overflow)  # every length fits before any work
    directory = _writable_directory(Path(output_dir))

    digits_width = max(6, len(str(count - 1)))
    files = [f"{i:0{digits_width}d}_{n.digits}.png" for i, n in enumerate(numbers)]
    seeds = np.random.SeedSequence(gen.integers(0, 2**63, size=4).tolist())
    bounds = range(0, count, chunk_size)
    chunks = [
        _Chunk([n.digits for n in numbers[a : a + chunk_size]], files[a : a + chunk_size], seed)
        for a, seed in zip(bounds, seeds.spawn(len(bounds)), strict=True)
    ]
    job = _Job(str(directory), (lo, hi), width, align, overflow, compress_level)
    if workers == 1 or len(chunks) == 1:
        with _progress(count, progress) as bar:
            for chunk in chunks:
                bar.update(_render_chunk(job, src, chunk))
    else:
        _run_pool(job, source, chunks, min(workers, len(chunks)), count, progress)

    labels = directory / LABELS_FILE
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".labels-", suffix=".csv")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(("file", "digits", "formatted"))
            writer.writerows(
                (name, n.digits, n.formatted) for name, n in zip(files, numbers, strict=True)
            )
        os.replace(tmp, labels)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return labels


def _writable_directory(directory: Path) -> Path:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise OSError(f"cannot write to output directory {directory}: {exc.strerror}") from exc
    return directory


def _by_length(numbers: Sequence[str]) -> dict[int, npt.NDArray[np.intp]]:
    """Digit matrices per number length (rows in input order within each length)."""
    groups: dict[int, list[str]] = {}
    for digits in numbers:
        groups.setdefault(len(digits), []).append(digits)
    return {length: _digit_rows(group, length) for length, group in groups.items()}


def _digit_rows(numbers: list[str], length: int) -> npt.NDArray[np.intp]:
    raw = np.frombuffer("".join(numbers).encode("ascii"), dtype=np.uint8)
    return (raw.reshape(-1, length) - ord("0")).astype(np.intp)


def _render_chunk(job: _Job, source: DigitSource, chunk: _Chunk) -> int:
    gen = np.random.default_rng(chunk.seed)
    writer = PNGWriter(HEIGHT, job.width, compress_level=job.compress_level)
    positions: dict[int, list[int]] = {}
    for i, digits in enumerate(chunk.numbers):
        positions.setdefault(len(digits), []).append(i)
    for length in sorted(positions):
        index = positions[length]
        rows = _digit_rows([chunk.numbers[i] for i in index], length)
        pixels = render_batch_u8(
            rows, job.spacing, job.width, rng=gen, source=source, align=job.align,
            overflow=job.overflow,
        )  # fmt: skip
        for i, data in zip(index, writer.encode_batch(pixels), strict=True):
            writer.write(os.path.join(job.directory, chunk.files[i]), data)
    return len(chunk.numbers)


def _init_worker(source: SourceLike) -> None:
    _worker_state["source"] = load_source(source)


def _worker(job: _Job, chunk: _Chunk) -> int:
    source = _worker_state["source"]
    assert isinstance(source, DigitSource)
    return _render_chunk(job, source, chunk)


def _progress(count: int, progress: bool) -> tqdm[Never]:
    return tqdm(total=count, unit="img", disable=not progress, desc="phone numbers")


def _run_pool(
    job: _Job,
    source: SourceLike,
    chunks: list[_Chunk],
    workers: int,
    count: int,
    progress: bool,
) -> None:
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker, initargs=(source,)
    ) as pool:
        # Submitting starts the workers; the progress bar (and its monitor thread) comes after,
        # so that no thread exists in this process when the workers are forked.
        futures: list[Future[int]] = [pool.submit(_worker, job, chunk) for chunk in chunks]
        try:
            with _progress(count, progress) as bar:
                for future in as_completed(futures):
                    bar.update(future.result())
        except BrokenProcessPool as exc:
            for future in futures:
                future.cancel()
            raise RuntimeError(
                "a worker process died (killed, or out of memory?); try fewer --workers"
            ) from exc
        except BaseException:
            for future in futures:
                future.cancel()
            raise
