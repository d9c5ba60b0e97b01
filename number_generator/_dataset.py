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

``part=(start, stop)`` writes only those images (the tar shards covering them, their labels):
the chunks before ``start`` are drawn without being built or rendered, so several processes or
machines write disjoint parts of one dataset, byte for byte what one process would write.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Never

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from number_generator._phone import (
    JAPANESE_FORMATS,
    PhoneChunks,
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
    render_batch_float,
    warn_if_biased,
)
from number_generator._source import (
    HEIGHT,
    SPLIT_SOURCES,
    DigitSource,
    SourceLike,
    load_source,
    split_sources,
)
from number_generator.augment import Augment, AugmentLike, resolve

__all__ = [
    "BOXES_FILE",
    "CHUNK_BYTES",
    "LABELS_FILE",
    "check_output",
    "default_workers",
    "make_staging",
    "publish",
    "write_phone_dataset",
    "write_sequence_dataset",
]

LABELS_FILE: Final = "labels.csv"
#: One JSON object per image, in the order of labels.csv: file, digits, formatted and the ink
#: box ``[x0, y0, x1, y1]`` of every digit (x1, y1 exclusive).
BOXES_FILE: Final = "boxes.jsonl"
MANIFEST_FILE: Final = "manifest.json"
SUMS_FILE: Final = "SHA256SUMS"
NPZ_FILE: Final = "images.npz"
HDF5_FILE: Final = "images.h5"
DatasetFormat = Literal["png", "npz", "hdf5", "shards"]
DATASET_FORMATS: Final = ("png", "npz", "hdf5", "shards")
#: Samples per tar file in the shards format (about 25 MB at width 300).
DEFAULT_SHARD_SIZE: Final = 10_000
#: Pixels one chunk may hold while it is rendered (the chunk size shrinks for very wide images).
CHUNK_BYTES: Final = 64 * 1024 * 1024


@dataclass(frozen=True)
class _Job:
    directory: str
    spacing: tuple[int, int]
    width: int
    align: Align
    overflow: Overflow
    compress_level: int
    format: str
    augment: Augment | None = None


@dataclass(frozen=True)
class _Chunk:
    numbers: list[str]
    files: list[str]
    seed: np.random.SeedSequence
    #: The index of the chunk's first image in the dataset.
    start: int = 0


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
    format: DatasetFormat = "png",
    shard_size: int = DEFAULT_SHARD_SIZE,
    augment: AugmentLike = None,
    part: tuple[int, int] | None = None,
    on_shard: Callable[[Path], object] | None = None,
) -> Path:
    """Write ``count`` images of unique phone numbers, ``labels.csv``, ``boxes.jsonl`` and
    ``manifest.json`` into ``output_dir``.

    ``format``: ``"png"`` (image ``i`` is ``<i>_<digits>.png``, zero-padded index, and
    ``SHA256SUMS`` lists every file), ``"npz"`` (``images.npz``), ``"hdf5"`` (``images.h5``,
    needs h5py) or ``"shards"`` (``shard-000000.tar``... of ``shard_size`` samples, each a PNG
    and a JSON record). Images are 8-bit grayscale, black ink on white, only the digits (the
    hyphens are in the ``formatted`` column of the labels). ``workers`` defaults to every CPU
    this process may use; ``workers=1`` renders in this process. ``output_dir`` must not exist
    or be empty, unless ``overwrite`` (then its old contents are replaced once the new dataset
    is complete). ``augment`` (a preset name or an :class:`~number_generator.augment.Augment`)
    augments every image (see :mod:`number_generator.augment`).

    ``part=(start, stop)`` writes only images ``start`` to ``stop - 1`` of the dataset (the
    rest is drawn, so that the numbers stay unique, but not rendered): the same bytes the whole
    dataset holds for them, so that several processes or machines can each write a part. Formats
    ``shards``, ``npz`` and ``hdf5`` only; with ``shards`` the part must start on a shard
    boundary and end on one (or at ``count``), so that its tar files are the whole dataset's.
    ``labels.csv`` and ``boxes.jsonl`` then hold the part's rows.

    ``on_shard`` (format ``shards`` only) is called in this process with the path of each tar
    shard as soon as it is complete, while the next ones render: to upload or index it without
    waiting for the whole dataset. The file is in the hidden staging folder until the dataset is
    complete (then it moves into ``output_dir``): read it, or open it, during the call. An
    exception raised by ``on_shard`` stops the run like any other error. Returns the path of
    ``labels.csv``.
    """
    return write_phone_splits(
        output_dir, {"": count}, spacing_range, image_width, rng=rng,
        sources={"": load_source(source)} if source is not None else None,
        source_arg=source, align=align, overflow=overflow, formats=formats, workers=workers,
        chunk_size=chunk_size, compress_level=compress_level, progress=progress,
        overwrite=overwrite, format=format, shard_size=shard_size, augment=augment, part=part,
        on_shard=on_shard,
    ) / LABELS_FILE  # fmt: skip


def write_sequence_dataset(
    output_dir: str | os.PathLike[str],
    count: int,
    length: int,
    spacing_range: tuple[int, int],
    image_width: int,
    *,
    rng: np.random.Generator | int | None = None,
    source: SourceLike = None,
    align: Align = "center",
    overflow: Overflow = "resample",
    workers: int | None = None,
    chunk_size: int = 1000,
    compress_level: int = 1,
    progress: bool = False,
    overwrite: bool = False,
    format: DatasetFormat = "png",
    shard_size: int = DEFAULT_SHARD_SIZE,
    augment: AugmentLike = None,
    part: tuple[int, int] | None = None,
    on_shard: Callable[[Path], object] | None = None,
) -> Path:
    """Like :func:`write_phone_dataset`, with ``count`` random digit sequences of ``length``
    digits (each digit uniform over 0-9, drawn independently: sequences may repeat) instead of
    phone numbers; the ``formatted`` column repeats the digits. Returns the path of
    ``labels.csv``.
    """
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= MAX_DIGITS:
        raise ValueError(f"length must be an integer from 1 to {MAX_DIGITS}, got {length!r}")
    return write_phone_splits(
        output_dir, {"": count}, spacing_range, image_width, rng=rng,
        sources={"": load_source(source)} if source is not None else None,
        source_arg=source, align=align, overflow=overflow, workers=workers,
        chunk_size=chunk_size, compress_level=compress_level, progress=progress,
        overwrite=overwrite, format=format, shard_size=shard_size, augment=augment, part=part,
        on_shard=on_shard, _sequence_length=length,
    ) / LABELS_FILE  # fmt: skip


def write_phone_splits(
    output_dir: str | os.PathLike[str],
    counts: Mapping[str, int],
    spacing_range: tuple[int, int],
    image_width: int,
    *,
    rng: np.random.Generator | int | None = None,
    sources: Mapping[str, DigitSource] | None = None,
    source_arg: SourceLike = None,
    align: Align = "center",
    overflow: Overflow = "resample",
    formats: tuple[PhoneFormat, ...] = JAPANESE_FORMATS,
    workers: int | None = None,
    chunk_size: int = 1000,
    compress_level: int = 1,
    progress: bool = False,
    overwrite: bool = False,
    format: DatasetFormat = "png",
    shard_size: int = DEFAULT_SHARD_SIZE,
    augment: AugmentLike = None,
    part: tuple[int, int] | None = None,
    on_shard: Callable[[Path], object] | None = None,
    _sequence_length: int | None = None,
) -> Path:
    """Write one dataset per split (``counts``: split name -> images) into ``output_dir/<name>``,
    with one ``manifest.json`` at the top; the numbers are unique across all splits.

    ``sources`` maps each split to its digits; by default :func:`split_sources` (MNIST training
    digits for ``train``, test digits of disjoint writers for ``validation`` and ``test``). The
    split named ``""`` is written into ``output_dir`` itself; ``part`` (one split only) is
    described in :func:`write_phone_dataset`, and so is ``on_shard``. Returns ``output_dir``.
    """
    lo, hi = _spacing(spacing_range)
    width = _width(image_width)
    _check_options(align, overflow)
    workers = default_workers() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be 0-9, got {compress_level}")
    aug = resolve(augment)
    if format not in DATASET_FORMATS:
        raise ValueError(f"format must be one of {', '.join(DATASET_FORMATS)}; got {format!r}")
    if format == "hdf5":
        _h5py()  # a clear error now rather than after rendering
    if on_shard is not None and (format != "shards" or not callable(on_shard)):
        raise ValueError(
            "on_shard applies to format 'shards' only and must be callable with a Path; got "
            f"{on_shard!r} with format {format!r}"
        )
    if not counts:
        raise ValueError("counts is empty: give at least one split and its number of images")
    for name, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"split {name!r}: count must be a positive integer, got {n!r}")
    total = sum(counts.values())
    if _sequence_length is None:
        _check_request(total, formats)
    first, last = _check_part(part, counts, format, shard_size)
    target = Path(output_dir)
    check_output(target, overwrite=overwrite)
    gen = generator(rng)
    if sources is None:
        if list(counts) == [""]:
            sources = {"": load_source(source_arg)}
        else:
            unknown = sorted(set(counts) - set(SPLIT_SOURCES))
            if unknown:
                raise ValueError(
                    f"unknown split(s) {unknown}: the default sources are "
                    f"{', '.join(SPLIT_SOURCES)}; pass sources= for others"
                )
            if isinstance(source_arg, DigitSource):
                raise ValueError("splits read their digits from a folder of MNIST files")
            sources = split_sources(source_arg)
    missing = sorted(set(counts) - set(sources))
    if missing:
        raise ValueError(f"no digit source for split(s) {missing}")
    for name in counts:
        if _sequence_length is None:
            _check_formats_fit(formats, lo, hi, width, sources[name], overflow)
        else:
            _check_sequence_fit(_sequence_length, lo, hi, width, sources[name], overflow)
    # A chunk's canvas (rows x 28 x width) stays within CHUNK_BYTES.
    chunk_size = max(1, min(chunk_size, CHUNK_BYTES // (HEIGHT * (width + 32))))
    staging = make_staging(target)
    try:
        if _sequence_length is None:
            numbers = _numbers(total, chunk_size, gen, formats)
        else:
            numbers = _NumberStream(_SequenceChunks(total, _sequence_length, chunk_size, gen))
        seeds = np.random.SeedSequence(gen.integers(0, 2**63, size=4).tolist())
        entries: dict[str, object] = {}
        for name, n in counts.items():
            folder = staging / name if name else staging
            folder.mkdir(exist_ok=True)
            job = _Job(str(folder), (lo, hi), width, align, overflow, compress_level, format, aug)
            size = last - first if part is not None else n
            sink = _sink(format, folder, size, width, shard_size, first)
            if isinstance(sink, _ShardSink):
                sink.on_shard = on_shard
            chunks = _chunks(numbers, n, chunk_size, max(6, len(str(n - 1))), seeds, first)
            if part is not None:
                chunks = _within(chunks, first, last)
            with sink:
                if workers == 1 or size <= chunk_size:
                    with _progress(size, progress, name) as bar:
                        for chunk, batch in chunks:
                            sink.add(chunk, batch, _render_chunk(job, sources[name], chunk))
                            bar.update(sink.written - bar.n)
                else:
                    pool_size = min(workers, -(-size // chunk_size))
                    source = sources[name] if name or source_arg is None else source_arg
                    _run_pool(job, source, chunks, pool_size, size, progress, sink, name)
            entries[name or "dataset"] = {
                "count": size,
                "digits": sources[name].name,
                "files": _file_entries(folder, sink.files()),
            }
        manifest = {
            "generator": "number_generator.write_phone_splits",
            "format": format,
            "parameters": {
                "spacing_range": [lo, hi],
                "image_width": width,
                "align": align,
                "overflow": overflow,
                "seed": rng if isinstance(rng, int) and not isinstance(rng, bool) else None,
                "compress_level": compress_level,
                "augment": dataclasses.asdict(aug) if aug is not None else None,
                "shard_size": shard_size if format == "shards" else None,
                "formats": [
                    {"name": f.name, "pattern": f.pattern, "weight": f.weight} for f in formats
                ]
                if _sequence_length is None
                else None,
                "sequence_length": _sequence_length,
                "count": total,
                "part": [first, last] if part is not None else None,
            },
            "splits": entries,
        }
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
        publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


#: The longest random digit sequence :func:`write_sequence_dataset` draws (the npz and hdf5
#: formats hold up to 16 digits per image).
MAX_DIGITS: Final = 16


def _check_part(
    part: tuple[int, int] | None, counts: Mapping[str, int], format: str, shard_size: int
) -> tuple[int, int]:
    """``part`` as (first, last) image indices, after checking it against the dataset."""
    if part is None:
        return 0, 0
    if list(counts) != [""]:
        raise ValueError("part needs a single dataset (no splits)")
    if format == "png":
        raise ValueError("part needs format shards, npz or hdf5 (not png)")
    (count,) = counts.values()
    first, last = part
    if not (isinstance(first, int) and isinstance(last, int) and 0 <= first < last <= count):
        raise ValueError(
            f"part must be (start, stop) with 0 <= start < stop <= {count}; got {part}"
        )
    if format == "shards" and (first % shard_size or (last % shard_size and last != count)):
        raise ValueError(
            f"part {part}: with format shards it must start and end on a multiple of shard_size "
            f"({shard_size}) or end at count ({count})"
        )
    return first, last


def _within(
    chunks: Iterator[tuple[_Chunk, list[PhoneNumber]]], first: int, last: int
) -> Iterator[tuple[_Chunk, list[PhoneNumber]]]:
    """The chunks that hold images ``first`` to ``last - 1`` (earlier ones are drawn: the numbers
    and seeds after them depend on it; they are not rendered)."""
    for chunk, batch in chunks:
        if chunk.start >= last:
            return
        if chunk.start + len(batch) > first:
            yield chunk, batch


class _SequenceChunks:
    """``count`` random digit sequences (digits uniform and independent), chunk by chunk; like
    :class:`~number_generator._phone.PhoneChunks`, ``skip`` draws a chunk without building it."""

    def __init__(self, count: int, length: int, size: int, gen: np.random.Generator) -> None:
        self._left, self._length, self._size, self._gen = count, length, size, gen

    def __iter__(self) -> _SequenceChunks:
        return self

    def _raw(self) -> tuple[int, bytes]:
        if not self._left:
            raise StopIteration
        take = min(self._size, self._left)
        self._left -= take
        rows = self._gen.integers(0, 10, size=(take, self._length), dtype=np.uint8)
        return take, (rows + ord("0")).tobytes()

    def __next__(self) -> list[PhoneNumber]:
        take, raw = self._raw()
        n = self._length
        texts = [raw[i : i + n].decode("ascii") for i in range(0, take * n, n)]
        return [PhoneNumber(t, t) for t in texts]

    def skip(self) -> int:
        return self._raw()[0]


def _check_sequence_fit(
    length: int, lo: int, hi: int, width: int, src: DigitSource, overflow: str
) -> None:
    narrowest = np.full((1, length), int(np.argmax(src.min_widths)), dtype=np.intp)
    widest = np.full((1, length), int(np.argmax(src.max_widths)), dtype=np.intp)
    _check_fit(narrowest, lo, hi, width, src, overflow)
    if not _check_fit(widest, lo, hi, width, src, overflow):
        warn_if_biased(widest[0].tolist(), lo, hi, width, src, stacklevel=5)


def _check_formats_fit(
    formats: tuple[PhoneFormat, ...], lo: int, hi: int, width: int, src: DigitSource, overflow: str
) -> None:
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
            warn_if_biased(row, lo, hi, width, src, stacklevel=5)


def _file_entries(folder: Path, names: list[str]) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    for name in names:
        digest = hashlib.sha256()
        path = folder / name
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        entries.append({"name": name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()})
    return entries


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


class _NumberStream:
    """Unique numbers for all splits, drawn lazily; ``take(k)`` hands out the next ``k``,
    ``skip(k)`` moves past them (without building them when they are a whole chunk)."""

    def __init__(self, chunks: PhoneChunks | _SequenceChunks) -> None:
        self._chunks = chunks
        self._buffer: list[PhoneNumber] = []

    def take(self, k: int) -> list[PhoneNumber]:
        while len(self._buffer) < k:
            self._buffer.extend(next(self._chunks))
        out, self._buffer = self._buffer[:k], self._buffer[k:]
        return out

    def skip(self, k: int) -> None:
        while k and not self._buffer:
            skipped = self._chunks.skip()
            if skipped > k:  # pragma: no cover - chunks of the dataset and of the numbers align
                raise AssertionError(f"skipped a chunk of {skipped} numbers for {k}")
            k -= skipped
        self.take(k)


def _numbers(
    total: int, chunk_size: int, gen: np.random.Generator, formats: tuple[PhoneFormat, ...]
) -> _NumberStream:
    return _NumberStream(iter_phone_numbers(total, rng=gen, formats=formats, chunk_size=chunk_size))


def _chunks(
    numbers: _NumberStream,
    count: int,
    chunk_size: int,
    digits_width: int,
    seeds: np.random.SeedSequence,
    first: int = 0,
) -> Iterator[tuple[_Chunk, list[PhoneNumber]]]:
    """The chunks of a dataset; those that end before image ``first`` are drawn (the numbers and
    seeds after them depend on it) but neither built nor yielded."""
    start = 0
    while start < count:
        size = min(chunk_size, count - start)
        if start + size <= first:
            numbers.skip(size)
            seeds.spawn(1)
            start += size
            continue
        batch = numbers.take(size)
        files = [f"{start + i:0{digits_width}d}_{n.digits}.png" for i, n in enumerate(batch)]
        (seed,) = seeds.spawn(1)
        yield _Chunk([n.digits for n in batch], files, seed, start), batch
        start += len(batch)


def _digit_rows(numbers: list[str], length: int) -> npt.NDArray[np.intp]:
    raw = np.frombuffer("".join(numbers).encode("ascii"), dtype=np.uint8)
    return (raw.reshape(-1, length) - ord("0")).astype(np.intp)


Boxes = list[list[list[int]]]  # per image, per digit: [x0, y0, x1, y1]


@dataclass
class _Result:
    """What a worker sends back for a chunk: always the boxes, and per format the SHA-256 of
    each PNG it wrote (png), the PNG bytes (shards) or the pixels (npz, hdf5)."""

    boxes: Boxes
    digests: list[str] | None = None
    pngs: list[bytes] | None = None
    pixels: npt.NDArray[np.uint8] | None = None


def _render_chunk(job: _Job, source: DigitSource, chunk: _Chunk) -> _Result:
    gen = np.random.default_rng(chunk.seed)
    size = len(chunk.numbers)
    result = _Result([[] for _ in range(size)])
    writer = PNGWriter(HEIGHT, job.width, compress_level=job.compress_level)
    if job.format == "png":
        result.digests = [""] * size
    elif job.format == "shards":
        result.pngs = [b""] * size
    else:
        result.pixels = np.empty((size, HEIGHT, job.width), dtype=np.uint8)
    positions: dict[int, list[int]] = {}
    for i, digits in enumerate(chunk.numbers):
        positions.setdefault(len(digits), []).append(i)
    for length in sorted(positions):
        index = positions[length]
        rows = _digit_rows([chunk.numbers[i] for i in index], length)
        if job.augment is None:
            pixels, found = render_batch_boxes_u8(
                rows, job.spacing, job.width, rng=gen, source=source, align=job.align,
                overflow=job.overflow, warn_bias=False,
            )  # fmt: skip
        else:
            images, found = render_batch_float(
                rows, job.spacing, job.width, rng=gen, source=source, align=job.align,
                overflow=job.overflow, augment=job.augment, warn_bias=False,
            )  # fmt: skip
            pixels = np.rint(images * np.float32(255)).astype(np.uint8)
        for i, row in zip(index, found.tolist(), strict=True):
            result.boxes[i] = row
        if result.pixels is not None:
            result.pixels[index] = pixels
            continue
        for i, data in zip(index, writer.encode_batch(pixels), strict=True):
            if result.pngs is not None:
                result.pngs[i] = data
            else:
                assert result.digests is not None
                writer.write(os.path.join(job.directory, chunk.files[i]), data)
                result.digests[i] = hashlib.sha256(data).hexdigest()
    return result


class _Sink(ABC):
    """Writes what the chunks produce, in order: ``labels.csv`` and ``boxes.jsonl`` for every
    format, plus the format's own files (subclasses)."""

    def __init__(self, folder: Path, count: int, width: int, shard_size: int, first: int) -> None:
        self.folder = folder
        #: The sink holds images ``first`` to ``first + count - 1`` of the dataset.
        self.first = first
        self.count = count
        self.width = width
        self.shard_size = shard_size
        self.written = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _Sink:
        labels = self._stack.enter_context(
            (self.folder / LABELS_FILE).open("w", newline="", encoding="utf-8")
        )
        self.labels = csv.writer(labels)
        self.labels.writerow(("file", "digits", "formatted"))
        self.boxes = self._stack.enter_context(
            (self.folder / BOXES_FILE).open("w", encoding="utf-8")
        )
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.close()
        finally:
            self._stack.close()

    def open(self) -> None:  # noqa: B027 (a hook: formats without files to open keep it)
        """Open the format's files."""

    def close(self) -> None:  # noqa: B027 (a hook: formats without files to finish keep it)
        """Finish the format's files (only after success)."""

    def files(self) -> list[str]:
        return [LABELS_FILE, BOXES_FILE]

    def add(self, chunk: _Chunk, numbers: list[PhoneNumber], result: _Result) -> None:
        lo = max(self.first - chunk.start, 0)
        hi = min(self.first + self.count - chunk.start, len(numbers))
        if (lo, hi) != (0, len(numbers)):
            chunk, numbers, result = _trim(chunk, numbers, result, lo, hi)
        rows = list(zip(chunk.files, numbers, result.boxes, strict=True))
        self.labels.writerows((name, n.digits, n.formatted) for name, n, _ in rows)
        self.boxes.writelines(_record(name, n, b) + "\n" for name, n, b in rows)
        self.write(chunk, numbers, result)
        first = self.written == 0
        self.written += len(numbers)
        if first and self.written < self.count:
            self._check_space()

    def _check_space(self) -> None:
        """After the first chunk: refuse to go on when the whole dataset, at the size per image
        measured so far, would not fit on the disk (rather than failing hours later)."""
        for handle in (self.boxes,):
            handle.flush()
        used = sum(e.stat().st_size for e in os.scandir(self.folder) if e.is_file())
        needed = used / self.written * (self.count - self.written)
        free = shutil.disk_usage(self.folder).free
        if needed > free:
            raise OSError(
                errno.ENOSPC,
                f"the dataset needs about {needed / 1e9:,.1f} GB more at the "
                f"{used / self.written:,.0f} bytes per image measured so far, but "
                f"{free / 1e9:,.1f} GB are free on {self.folder.parent}; write fewer images or "
                "free some space",
            )

    @abstractmethod
    def write(self, chunk: _Chunk, numbers: list[PhoneNumber], result: _Result) -> None:
        """Implemented by every subclass."""


def _trim(
    chunk: _Chunk, numbers: list[PhoneNumber], result: _Result, lo: int, hi: int
) -> tuple[_Chunk, list[PhoneNumber], _Result]:
    """Images ``lo`` to ``hi - 1`` of a chunk (one that straddles a part's boundary)."""
    return (
        _Chunk(chunk.numbers[lo:hi], chunk.files[lo:hi], chunk.seed, chunk.start + lo),
        numbers[lo:hi],
        _Result(
            result.boxes[lo:hi],
            None if result.digests is None else result.digests[lo:hi],
            None if result.pngs is None else result.pngs[lo:hi],
            None if result.pixels is None else result.pixels[lo:hi],
        ),
    )


def _record(name: str, number: PhoneNumber, boxes: list[list[int]]) -> str:
    """The JSON line of one image. Built as text: every field is digits, hyphens, an underscore
    and ``.png`` (nothing to escape), and this runs once per image in the parent process."""
    coords = str(boxes).replace(" ", "")
    return (
        f'{{"file":"{name}","digits":"{number.digits}","formatted":"{number.formatted}",'
        f'"boxes":{coords}}}'
    )


class _PngSink(_Sink):
    def open(self) -> None:
        self.sums = self._stack.enter_context((self.folder / SUMS_FILE).open("w", encoding="utf-8"))

    def files(self) -> list[str]:
        return [*super().files(), SUMS_FILE]

    def write(self, chunk: _Chunk, numbers: list[PhoneNumber], result: _Result) -> None:
        assert result.digests is not None
        self.sums.writelines(
            f"{d}  {name}\n" for d, name in zip(result.digests, chunk.files, strict=True)
        )


class _ShardSink(_Sink):
    """Tar files of ``shard_size`` samples: ``<key>.png`` and ``<key>.json`` each (the layout
    WebDataset and torchdata stream). ``on_shard`` hears of each tar once it is closed."""

    on_shard: Callable[[Path], object] | None = None

    def open(self) -> None:
        self.names: list[str] = []
        self.tar: tarfile.TarFile | None = None

    def _finish_shard(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None
            if self.on_shard is not None:
                self.on_shard(self.folder / self.names[-1])

    def _next_shard(self, index: int) -> tarfile.TarFile:
        self._finish_shard()
        name = f"shard-{index // self.shard_size:06d}.tar"
        self.names.append(name)
        self.tar = tarfile.open(  # noqa: SIM115 - closed by close() or __exit__
            self.folder / name, "w", format=tarfile.USTAR_FORMAT
        )
        return self.tar

    def close(self) -> None:
        self._finish_shard()

    def files(self) -> list[str]:
        return [*super().files(), *self.names]

    def write(self, chunk: _Chunk, numbers: list[PhoneNumber], result: _Result) -> None:
        assert result.pngs is not None
        for i, (name, number) in enumerate(zip(chunk.files, numbers, strict=True)):
            index = chunk.start + i
            tar = self._next_shard(index) if index % self.shard_size == 0 else self.tar
            assert tar is not None
            key = name.removesuffix(".png")
            _add_member(tar, f"{key}.png", result.pngs[i])
            _add_member(tar, f"{key}.json", _record(name, number, result.boxes[i]).encode())

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            if self.tar is not None:
                self.tar.close()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


class _ArraySink(_Sink):
    """Pixels, digits (padded text), lengths and boxes (padded with -1) as arrays."""

    def open(self) -> None:
        self.length = 16
        self.digits_list: list[npt.NDArray[np.str_]] = []
        self.boxes_parts: list[npt.NDArray[np.int16]] = []

    def arrays(
        self, numbers: list[PhoneNumber], result: _Result
    ) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.uint8], npt.NDArray[np.int16]]:
        digits = np.array([n.digits for n in numbers], dtype=f"<U{self.length}")
        lengths = np.array([len(n.digits) for n in numbers], dtype=np.uint8)
        boxes = np.full((len(numbers), self.length, 4), -1, dtype=np.int16)
        for i, b in enumerate(result.boxes):
            boxes[i, : len(b)] = b
        return digits, lengths, boxes


class _NpzSink(_ArraySink):
    """``images.npz`` (uncompressed, so it can be memory-mapped member by member): ``images``
    uint8 (n, 28, width), ``digits`` text, ``lengths`` uint8, ``boxes`` int16 (n, 16, 4). The
    images member is streamed; the small arrays are kept as temporary files until the end."""

    def open(self) -> None:
        super().open()
        self.zip = self._stack.enter_context(
            zipfile.ZipFile(self.folder / NPZ_FILE, "w", zipfile.ZIP_STORED, allowZip64=True)
        )
        self.member = self._stack.enter_context(self.zip.open("images.npy", "w", force_zip64=True))
        header = {"descr": "|u1", "fortran_order": False,
                  "shape": (self.count, HEIGHT, self.width)}  # fmt: skip
        np.lib.format.write_array_header_2_0(self.member, header)
        self.small = self._stack.enter_context(
            tempfile.TemporaryDirectory(dir=self.folder, prefix=".arrays-")
        )
        self.parts = {
            name: self._stack.enter_context((Path(self.small) / name).open("wb"))
            for name in ("digits", "lengths", "boxes")
        }

    def files(self) -> list[str]:
        return [*super().files(), NPZ_FILE]

    def write(self, chunk: _Chunk, numbers: list[PhoneNumber], result: _Result) -> None:
        assert result.pixels is not None
        self.member.write(result.pixels.tobytes())
        arrays: tuple[npt.NDArray[Any], ...] = self.arrays(numbers, result)
        for name, array in zip(("digits", "lengths", "boxes"), arrays, strict=True):
            self.parts[name].write(array.tobytes())

    def close(self) -> None:
        self.member.close()
        shapes = {
            "digits": (f"<U{self.length}", (self.count,)),
            "lengths": ("|u1", (self.count,)),
            "boxes": ("<i2", (self.count, self.length, 4)),
        }
        for name, (descr, shape) in shapes.items():
            self.parts[name].close()
            with self.zip.open(f"{name}.npy", "w", force_zip64=True) as member:
                header = {"descr": descr, "fortran_order": False, "shape": shape}
                np.lib.format.write_array_header_2_0(member, header)
                with (Path(self.small) / name).open("rb") as fh:
                    shutil.copyfileobj(fh, member, 1 << 20)


class _Hdf5Sink(_ArraySink):
    """``images.h5``: datasets ``images`` (n, 28, width) uint8, gzip-compressed in chunks of 256
    images, ``digits`` (bytes), ``lengths`` and ``boxes`` as in the npz format."""

    def open(self) -> None:
        super().open()
        h5py = _h5py()
        self.h5 = self._stack.enter_context(h5py.File(self.folder / HDF5_FILE, "w"))
        n, w = self.count, self.width
        rows = min(256, n)
        self.images = self.h5.create_dataset(
            "images", (n, HEIGHT, w), dtype="u1", chunks=(rows, HEIGHT, w), compression="gzip",
            compression_opts=1,
        )  # fmt: skip
        self.digits = self.h5.create_dataset("digits", (n,), dtype=f"S{self.length}")
        self.lengths = self.h5.create_dataset("lengths", (n,), dtype="u1")
        self.boxes_ds = self.h5.create_dataset("boxes", (n, self.length, 4), dtype="i2")

    def files(self) -> list[str]:
        return [*super().files(), HDF5_FILE]

    def write(self, chunk: _Chunk, numbers: list[PhoneNumber], result: _Result) -> None:
        a, b = self.written, self.written + len(numbers)
        digits, lengths, boxes = self.arrays(numbers, result)
        self.images[a:b] = result.pixels
        self.digits[a:b] = np.char.encode(digits, "ascii")
        self.lengths[a:b] = lengths
        self.boxes_ds[a:b] = boxes


def _h5py() -> Any:
    try:
        import h5py
    except ModuleNotFoundError:
        raise ValueError(
            "format 'hdf5' needs h5py: pip install 'imgpipe[hdf5]' (or choose png, npz or "
            "shards, which need nothing more)"
        ) from None
    return h5py


def _sink(
    format: str, folder: Path, count: int, width: int, shard_size: int, first: int = 0
) -> _Sink:
    kinds: dict[str, type[_Sink]] = {
        "png": _PngSink, "npz": _NpzSink, "hdf5": _Hdf5Sink, "shards": _ShardSink,
    }  # fmt: skip
    return kinds[format](folder, count, width, shard_size, first)


def _init_worker(source: SourceLike) -> None:
    _worker_state["source"] = load_source(source)


def _worker(job: _Job, chunk: _Chunk) -> _Result:
    source = _worker_state["source"]
    assert isinstance(source, DigitSource)
    return _render_chunk(job, source, chunk)


def _progress(count: int, progress: bool, name: str = "") -> tqdm[Never]:
    desc = f"phone numbers ({name})" if name else "phone numbers"
    return tqdm(total=count, unit="img", disable=not progress, desc=desc)


def _run_pool(
    job: _Job,
    source: SourceLike,
    chunks: Iterator[tuple[_Chunk, list[PhoneNumber]]],
    workers: int,
    count: int,
    progress: bool,
    sink: _Sink,
    name: str = "",
) -> None:
    """Render ``chunks`` on ``workers`` processes, at most ``2 * workers`` chunks in flight, and
    hand their results to ``sink`` in order as they finish."""
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker, initargs=(source,)
    ) as pool:
        pending: deque[tuple[Future[_Result], _Chunk, list[PhoneNumber]]] = deque()

        def submit(limit: int) -> None:
            for chunk, numbers in chunks:
                pending.append((pool.submit(_worker, job, chunk), chunk, numbers))
                if len(pending) >= limit:
                    return

        # The first submissions start the workers; the progress bar (and its monitor thread)
        # comes after, so that no thread exists in this process when the workers are forked.
        submit(2 * workers)
        try:
            with _progress(count, progress, name) as bar:
                while pending:
                    future, chunk, numbers = pending.popleft()
                    sink.add(chunk, numbers, future.result())
                    bar.update(sink.written - bar.n)
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
