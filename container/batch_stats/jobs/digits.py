"""The ``digits`` job: a ``number_generator`` dataset written to ``datasets/<job_id>/``.

The dataset is a series of tar shards of ``shard_images`` samples. The work splits into parts of
``part_images`` images (a whole number of shards), one task each: these parts are the worker's
shards of a ``digits`` job. Part ``k`` writes images ``k * part_images`` onwards with the
library's own dataset writer (:func:`number_generator.write_phone_dataset` /
:func:`~number_generator.write_sequence_dataset` with ``part=``): every part draws the whole
dataset's numbers (cheap) and renders only its own slice, so phone numbers are unique across
parts and the tars hold exactly the bytes one process writing the whole dataset with the same
seed would write (``generate-phone-numbers ... --format shards --shard-size <shard_images> --seed
<seed>``). Each tar is uploaded as soon as the library has closed it (its ``on_shard`` hook),
while the part's next tars render.

Objects under ``datasets/<job_id>/``:

- ``shard-000000.tar`` ...: each sample a ``<index>_<digits>.png`` (8-bit grayscale, black ink on
  white, 28 px high) and a ``<index>_<digits>.json`` (file, digits, formatted, each digit's ink
  box ``[x0, y0, x1, y1]``): the layout WebDataset and torchdata stream;
- ``labels/part-000000.csv``, ``boxes/part-000000.jsonl``: each part's rows;
- ``labels.csv`` (``file,digits,formatted``, the whole dataset, written by :meth:`finish`);
- ``manifest.json``, written last: status, counts, parameters, the format and every object's
  size and SHA-256.

The digits come from ``number_generator``'s default source: ``NUMBER_GENERATOR_MNIST_DIR`` if set,
else the MNIST test set shipped inside the package (what the container uses).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from batch_stats.jobs.base import JobContext, JobSpecError, JobStore
from number_generator import load_source, write_phone_dataset, write_sequence_dataset
from number_generator._dataset import _check_formats_fit, _check_sequence_fit
from number_generator._phone import JAPANESE_FORMATS, capacity
from number_generator._preview import save_preview

KIND_NAME: Final = "digits"
#: Limits of a job's parameters (documented in the README).
MAX_COUNT: Final = 100_000_000
MIN_SHARD_IMAGES: Final = 10
MAX_SHARD_IMAGES: Final = 200_000
#: Samples per tar: the library's and the CLI's default (about 37 MB at width 300, within
#: WebDataset's advice of tens to hundreds of MB per shard). Wider images get fewer, so that a
#: shard stays within MAX_SHARD_PIXELS.
DEFAULT_SHARD_IMAGES: Final = 10_000
#: Images of one part, one task's work: 100,000 take about half a minute of a vCPU, against the
#: minute or two a Fargate task takes to start. Wider images get fewer (whole shards), so that a
#: part stays within MAX_PART_PIXELS.
DEFAULT_PART_IMAGES: Final = 100_000
MAX_PART_IMAGES: Final = 10_000_000
MAX_PARTS: Final = 10_000
#: Tar shards of one dataset (the manifest lists each one).
MAX_SHARDS: Final = 100_000
MAX_SEQUENCE_DIGITS: Final = 16
MAX_SPACING: Final = 100
MIN_WIDTH: Final = 28
MAX_WIDTH: Final = 4_096
MAX_SEED: Final = 2**63 - 1
#: Pixels of one shard (images x 28 x width): its tar (about half as many bytes at width 300)
#: is held in memory while it is uploaded.
MAX_SHARD_PIXELS: Final = 2**30
#: Pixels of one part: its tars (about 4 GB at width 300) stay on the task's disk until the
#: part is complete (the task has at least 21 GiB of ephemeral storage).
MAX_PART_PIXELS: Final = 2**33
#: Pixels of the whole dataset (about 1 TB of raw pixels, some 450 GB of tar at width 300).
MAX_TOTAL_PIXELS: Final = 10**12
_HEIGHT: Final = 28
MODES: Final = ("phone", "sequence")
FORMATS: Final = ("shards",)
AUGMENT_PRESETS: Final = ("light", "medium", "heavy")
MANIFEST: Final = "manifest.json"
#: The manifest's layout: the fields every job's manifest has (manifest_version, job_id, kind,
#: status, reason, params, counts, objects with key, size and sha256), then this kind's own.
MANIFEST_VERSION: Final = 1
LABELS: Final = "labels.csv"
#: Samples shown by :meth:`DigitsKind.write_preview`.
PREVIEW_SAMPLES: Final = 12

_REQUIRED: Final = ("mode", "count", "spacing_min", "spacing_max", "image_width")
_OPTIONAL: Final = ("digits", "seed", "format", "augment", "shard_images", "part_images")

FORMAT_DESCRIPTION: Final = (
    "tar shards (ustar) of shard_images samples each, read in order by WebDataset or torchdata: "
    "every sample is <index>_<digits>.png (8-bit grayscale PNG, black ink on white, 28 px high, "
    "image_width wide) and <index>_<digits>.json ({file, digits, formatted, boxes}: each digit's "
    "ink box [x0, y0, x1, y1], x1 and y1 exclusive); labels.csv (file,digits,formatted) lists "
    "every sample in order; labels/ and boxes/ hold each part's rows (part_images samples)"
)


@dataclass(frozen=True)
class DigitsParams:
    """A validated ``digits`` job (see :meth:`DigitsKind.parse` for the ranges)."""

    mode: Literal["phone", "sequence"]
    count: int
    spacing_min: int
    spacing_max: int
    image_width: int
    digits: int | None = None
    seed: int = 0
    format: Literal["shards"] = "shards"
    augment: str | None = None
    shard_images: int = DEFAULT_SHARD_IMAGES
    part_images: int = DEFAULT_PART_IMAGES

    @property
    def shard_count(self) -> int:
        """Tar shards of the dataset."""
        return -(-self.count // self.shard_images)

    @property
    def part_count(self) -> int:
        """Parts of the work (one task each)."""
        return -(-self.count // self.part_images)

    def part(self, part: int) -> tuple[int, int]:
        """The images ``[start, stop)`` of part ``part``."""
        start = part * self.part_images
        return start, min(start + self.part_images, self.count)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(
    params: Mapping[str, Any], name: str, lo: int, hi: int, problems: list[str]
) -> int | None:
    value = params[name]
    if not _is_int(value):
        problems.append(f"{name} must be an integer from {lo:,} to {hi:,}, got {value!r}")
        return None
    if not lo <= value <= hi:
        problems.append(f"{name} must be from {lo:,} to {hi:,}, got {value:,}")
        return None
    return int(value)


def phone_space() -> int:
    """How many distinct phone numbers the library's Japanese formats hold."""
    return capacity(JAPANESE_FORMATS)


class DigitsKind:
    """The ``digits`` job kind. ``workers``: processes that render a shard (default: every CPU
    the task may use)."""

    name = KIND_NAME

    def __init__(self, *, workers: int | None = None) -> None:
        self.workers = workers

    def parse(self, params: Mapping[str, Any]) -> DigitsParams:
        """Validate ``params``; one JobSpecError naming every problem.

        ``mode``: ``phone`` (unique Japanese phone numbers) or ``sequence`` (random digit
        sequences of ``digits`` digits, 1-16; only in that mode). ``count``: 1 to 100,000,000
        images, and for phones at most the phone-number space (574,900,000). ``spacing_min`` <=
        ``spacing_max``, each 0-100 px. ``image_width``: 28-4,096 px, wide enough for the
        longest sequence. ``seed``: 0 to 2**63-1 (default 0). ``format``: ``shards`` (the
        default and only one). ``augment``: ``light``, ``medium``, ``heavy`` or null.
        ``shard_images``: 10-200,000 images per tar shard (default 10,000, fewer for images
        wider than 3,834 px so that a shard fits its pixel limit), at most 100,000 shards.
        ``part_images``: 10-10,000,000 images per part, one task each, a multiple of
        ``shard_images`` (default the largest multiple up to 100,000 within the part's pixel
        limit), at most 10,000 parts. A shard holds at most 2**30 pixels (images x 28 x width),
        a part at most 2**33 and the dataset at most 10**12.
        """
        if not isinstance(params, Mapping):
            raise JobSpecError([f"params must be a JSON object, got {type(params).__name__}"])
        problems: list[str] = []
        allowed = (*_REQUIRED, *_OPTIONAL)
        unknown = sorted(str(k) for k in params if k not in allowed)
        if unknown:
            problems.append(
                f"unknown parameter(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})"
            )
        missing = [name for name in _REQUIRED if name not in params]
        if missing:
            problems.append(f"missing parameter(s): {', '.join(missing)}")
        values: dict[str, Any] = {}
        mode = params.get("mode")
        if "mode" in params and mode not in MODES:
            problems.append(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if "count" in params:
            values["count"] = _integer(params, "count", 1, MAX_COUNT, problems)
            count = params["count"]
            if mode == "phone" and _is_int(count) and count > phone_space():
                problems.append(
                    f"count {count:,} exceeds the phone-number space: the formats hold "
                    f"{phone_space():,} distinct numbers"
                )
        for name in ("spacing_min", "spacing_max"):
            if name in params:
                values[name] = _integer(params, name, 0, MAX_SPACING, problems)
        lo, hi = values.get("spacing_min"), values.get("spacing_max")
        if lo is not None and hi is not None and lo > hi:
            problems.append(f"spacing_min ({lo}) must not exceed spacing_max ({hi})")
        if "image_width" in params:
            values["image_width"] = _integer(params, "image_width", MIN_WIDTH, MAX_WIDTH, problems)
        if mode == "sequence":
            if "digits" not in params:
                problems.append(
                    f"digits (the sequence length, 1 to {MAX_SEQUENCE_DIGITS}) is required "
                    "with mode sequence"
                )
            else:
                values["digits"] = _integer(params, "digits", 1, MAX_SEQUENCE_DIGITS, problems)
        elif "digits" in params and mode == "phone":
            problems.append(
                "digits applies only to mode sequence (phone numbers have the lengths of their "
                "formats, 10 or 11 digits)"
            )
        if "seed" in params:
            values["seed"] = _integer(params, "seed", 0, MAX_SEED, problems)
        if "format" in params and params["format"] not in FORMATS:
            problems.append(
                f"format must be one of {', '.join(FORMATS)}, got {params['format']!r} (tar "
                "shards of PNG + JSON, which PyTorch/WebDataset stream)"
            )
        augment = params.get("augment")
        if augment is not None and augment not in AUGMENT_PRESETS:
            problems.append(
                f"augment must be one of {', '.join(AUGMENT_PRESETS)} or null, got {augment!r}"
            )
        for name, hi in (("shard_images", MAX_SHARD_IMAGES), ("part_images", MAX_PART_IMAGES)):
            if name in params:
                values[name] = _integer(params, name, MIN_SHARD_IMAGES, hi, problems)
        count_value = values.get("count")
        width = values.get("image_width")
        shard_images = values.get("shard_images", _default_shard_images(width))
        part_images = values.get("part_images", _default_part_images(shard_images, width))
        if shard_images is not None and part_images is not None and part_images % shard_images:
            problems.append(
                f"part_images ({part_images:,}) must be a multiple of shard_images "
                f"({shard_images:,}): a part is a whole number of tar shards"
            )
        if count_value is not None:
            for what, size, most, hint in (
                ("shards", shard_images, MAX_SHARDS, "shard_images"),
                ("parts", part_images, MAX_PARTS, "part_images"),
            ):
                if size is None:
                    continue
                made = -(-count_value // size)
                if made > most:
                    problems.append(
                        f"count {count_value:,} in {what} of {size:,} images makes {made:,} "
                        f"{what}; at most {most:,} are allowed (raise {hint})"
                    )
        if count_value is not None and width is not None:
            for what, size, most in (
                ("shard", shard_images, MAX_SHARD_PIXELS),
                ("part", part_images, MAX_PART_PIXELS),
            ):
                if size is None:
                    continue
                largest = min(size, count_value)
                pixels = largest * _HEIGHT * width
                if pixels > most:
                    problems.append(
                        f"a {what} of {largest:,} images of 28 x {width} px holds {pixels:,} "
                        f"pixels; at most {most:,} are allowed (at this width, {what}_images at "
                        f"most {most // (_HEIGHT * width):,})"
                    )
            total = count_value * _HEIGHT * width
            if total > MAX_TOTAL_PIXELS:
                problems.append(
                    f"{count_value:,} images of 28 x {width} px hold {total:,} pixels; at most "
                    f"{MAX_TOTAL_PIXELS:,} are allowed (fewer or narrower images)"
                )
        if problems:
            raise JobSpecError(problems)
        assert shard_images is not None
        assert part_images is not None
        parsed = DigitsParams(
            mode="phone" if mode == "phone" else "sequence",
            count=params["count"],
            spacing_min=params["spacing_min"],
            spacing_max=params["spacing_max"],
            image_width=params["image_width"],
            digits=params.get("digits"),
            seed=params.get("seed", 0),
            augment=augment,
            shard_images=shard_images,
            part_images=part_images,
        )
        fit = _fit_problem(parsed)
        if fit is not None:
            raise JobSpecError([fit])
        return parsed

    def output_prefix(self, job_id: str) -> str:
        return f"datasets/{job_id}/"

    def shards(self, params: DigitsParams) -> int:
        """The worker's shards of a digits job are its parts (one task each)."""
        return params.part_count

    def run_shard(
        self, params: DigitsParams, *, shard: int, shards: int, ctx: JobContext
    ) -> dict[str, Any]:
        """Render part ``shard``'s images into ``ctx.scratch``, uploading each tar as soon as it
        is complete, then the part's labels and boxes; return their keys, sizes and SHA-256
        (the same bytes every time)."""
        if shards != params.part_count or not 0 <= shard < shards:
            raise ValueError(
                f"part {shard} of {shards}: this job has {params.part_count} parts "
                f"(0 to {params.part_count - 1})"
            )
        start, stop = params.part(shard)
        folder = ctx.scratch / f"part-{shard:06d}"
        prefix = self.output_prefix(ctx.job_id)
        metadata = {"job-id": ctx.job_id, "part": str(shard)}
        with _TarUploader(ctx, prefix, metadata) as uploader:
            _write_part(params, folder, (start, stop), self.workers, uploader)
            uploaded = uploader.results()
        for local, key, content_type in (
            ("labels.csv", f"labels/part-{shard:06d}.csv", "text/csv"),
            ("boxes.jsonl", f"boxes/part-{shard:06d}.jsonl", "application/x-ndjson"),
        ):
            data = (folder / local).read_bytes()
            ctx.store.put(ctx.output_bucket, prefix + key, data, content_type=content_type,
                          metadata=metadata)  # fmt: skip
            uploaded.append((local, prefix + key, len(data)))
        # Sizes and SHA-256 from the library's own manifest of the part (it hashed every file
        # once complete); the uploads read the same files.
        library = json.loads((folder / "manifest.json").read_text("utf-8"))
        files = {f["name"]: f for f in library["splits"]["dataset"]["files"]}
        objects = []
        for name, key, size in uploaded:
            if files.get(name, {}).get("bytes") != size:
                raise RuntimeError(
                    f"part {shard} of job {ctx.job_id}: uploaded {size:,} bytes of {name}, the "
                    f"library's manifest lists {files.get(name, {}).get('bytes')}"
                )
            objects.append({"key": key, "size": size, "sha256": files[name]["sha256"]})
        first, last = start // params.shard_images, -(-stop // params.shard_images)
        expected = [f"{prefix}shard-{k:06d}.tar" for k in range(first, last)]
        if [o["key"] for o in objects[: len(expected)]] != expected:
            raise RuntimeError(
                f"part {shard} of job {ctx.job_id} wrote {[o['key'] for o in objects]}, "
                f"expected the tars {expected[0]} to {expected[-1]}"
            )
        return {"shard": shard, "start": start, "stop": stop, "objects": objects}

    def finish(
        self,
        params: DigitsParams,
        *,
        shard_results: Sequence[Mapping[str, Any]],
        ctx: JobContext,
    ) -> dict[str, Any]:
        """Check every part is there, write ``labels.csv`` for the whole dataset, then
        ``manifest.json`` (last); return the dataset's URIs and counts."""
        prefix = self.output_prefix(ctx.job_id)
        expected = [params.part(k) for k in range(params.part_count)]
        found = [(int(r["start"]), int(r["stop"])) for r in shard_results]
        if found != expected:
            raise RuntimeError(
                f"digits job {ctx.job_id}: the part results cover {found}, expected {expected}"
            )
        objects = [dict(o) for r in shard_results for o in r["objects"]]
        stored = dict(ctx.store.list_keys(ctx.output_bucket, prefix))
        wrong = [o["key"] for o in objects if stored.get(o["key"]) != o["size"]]
        if wrong:
            raise RuntimeError(
                f"digits job {ctx.job_id}: objects missing or of the wrong size: {wrong[:5]}"
            )
        # The parts' labels are joined as text: every field is digits, hyphens, an underscore
        # and ".png" (nothing quoted), in the library's CSV dialect (lines end with CRLF).
        header = "file,digits,formatted\r\n"
        bodies: list[str] = []
        seen: set[str] = set()
        rows = 0
        for result in shard_results:
            key = next(o["key"] for o in result["objects"] if o["key"].endswith(".csv"))
            text = ctx.store.get(ctx.output_bucket, key).decode("utf-8")
            expected_rows = int(result["stop"]) - int(result["start"])
            if not text.startswith(header):
                raise RuntimeError(
                    f"{key} starts with {text[: len(header)]!r}, not the header {header!r}"
                )
            rest = text[len(header) :]
            lines = rest.splitlines()
            if len(lines) != expected_rows:
                raise RuntimeError(f"{key} holds {len(lines)} rows, expected {expected_rows}")
            bodies.append(rest)
            rows += len(lines)
            if params.mode == "phone":
                seen.update(line.split(",", 2)[1] for line in lines)
        if params.mode == "phone" and len(seen) != rows:
            raise RuntimeError(f"digits job {ctx.job_id}: {rows - len(seen)} repeated numbers")
        data = (header + "".join(bodies)).encode("utf-8")
        meta = {"job-id": ctx.job_id}
        ctx.store.put(ctx.output_bucket, prefix + LABELS, data, content_type="text/csv",
                      metadata=meta)  # fmt: skip
        objects.append(_entry(prefix + LABELS, data))
        base = f"s3://{ctx.output_bucket}/{prefix}"
        last = params.shard_count - 1
        shard_urls = (
            f"{base}shard-000000.tar" if last == 0 else f"{base}shard-{{000000..{last:06d}}}.tar"
        )
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "job_id": ctx.job_id,
            "kind": KIND_NAME,
            "status": "succeeded",
            "reason": None,
            "params": dataclasses.asdict(params),
            "counts": {"images": rows, "shards": params.shard_count, "parts": params.part_count},
            "objects": sorted(objects, key=lambda o: str(o["key"])),
            "format": {"name": params.format, "description": FORMAT_DESCRIPTION},
            "digit_source": _source_name(),
            "generator": _generator_name(params),
        }
        document = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
        ctx.store.put(ctx.output_bucket, prefix + MANIFEST, document,
                      content_type="application/json", metadata=meta)  # fmt: skip
        return {
            "dataset_uri": base,
            "manifest_uri": base + MANIFEST,
            "labels_uri": base + LABELS,
            "shard_urls": shard_urls,
            "images": rows,
            "shards": params.shard_count,
            "parts": params.part_count,
            "bytes": sum(int(o["size"]) for o in objects) + len(document),
        }

    def demo_params(self, *, store: JobStore, input_bucket: str, scratch: Path) -> dict[str, Any]:
        """200 phone numbers in 4 tar shards and 2 parts (no inputs to upload)."""
        return {
            "mode": "phone",
            "count": 200,
            "shard_images": 50,
            "part_images": 100,
            "spacing_min": 2,
            "spacing_max": 6,
            "image_width": 300,
            "seed": 7,
        }

    def write_preview(
        self, outputs: Mapping[str, Any], *, store: JobStore, output_bucket: str, path: Path
    ) -> Path:
        """A sheet of the first shard's first samples, each digit boxed and labelled."""
        prefix = str(outputs["manifest_uri"]).removeprefix(f"s3://{output_bucket}/")
        prefix = prefix.removesuffix(MANIFEST)
        data = store.get(output_bucket, prefix + "shard-000000.tar")
        images: list[npt.NDArray[np.uint8]] = []
        digits: list[str] = []
        boxes: list[npt.NDArray[np.int32]] = []
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = tar.getmembers()
            for png, record in zip(members[0::2], members[1::2], strict=False):
                png_file, record_file = tar.extractfile(png), tar.extractfile(record)
                assert png_file is not None
                assert record_file is not None
                with Image.open(png_file) as image:
                    images.append(np.asarray(image.convert("L")))
                sample = json.loads(record_file.read())
                digits.append(sample["digits"])
                boxes.append(np.asarray(sample["boxes"], dtype=np.int32))
                if len(images) == PREVIEW_SAMPLES:
                    break
        return save_preview(path, images, digits, boxes, columns=2, scale=2)


def _default_shard_images(width: int | None) -> int:
    """DEFAULT_SHARD_IMAGES, or as many as MAX_SHARD_PIXELS allows at ``width`` if fewer."""
    if width is None:
        return DEFAULT_SHARD_IMAGES
    return max(MIN_SHARD_IMAGES, min(DEFAULT_SHARD_IMAGES, MAX_SHARD_PIXELS // (_HEIGHT * width)))


def _default_part_images(shard_images: int | None, width: int | None) -> int | None:
    """The largest multiple of ``shard_images`` up to DEFAULT_PART_IMAGES (and within
    MAX_PART_PIXELS at ``width``), at least one shard; None if ``shard_images`` is invalid."""
    if shard_images is None:
        return None
    most = DEFAULT_PART_IMAGES
    if width is not None:
        most = min(most, MAX_PART_PIXELS // (_HEIGHT * width))
    return max(1, most // shard_images) * shard_images


class _TarUploader:
    """The ``on_shard`` hook of a part: uploads each finished tar on a thread of its own while
    the next ones render; at most MAX_WAITING tars wait for it (then rendering waits)."""

    MAX_WAITING: Final = 4

    def __init__(self, ctx: JobContext, prefix: str, metadata: Mapping[str, str]) -> None:
        self._ctx = ctx
        self._prefix = prefix
        self._metadata = dict(metadata)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tar-upload")
        self._futures: list[Future[tuple[str, str, int]]] = []
        self._handles: list[BinaryIO] = []

    def __enter__(self) -> _TarUploader:
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self._futures:
            future.cancel()
        self._pool.shutdown(wait=True)
        for handle in self._handles:
            handle.close()  # those of cancelled uploads (closing twice is harmless)

    def __call__(self, path: Path) -> None:
        for future in self._futures:
            if future.done():
                future.result()  # an upload that failed stops the part now
        # Opened now: the handle outlives the staging folder's move once the part is complete.
        handle = path.open("rb")
        self._handles.append(handle)
        self._futures.append(self._pool.submit(self._upload, handle, path.name))
        waiting = [f for f in self._futures if not f.done()]
        if len(waiting) > self.MAX_WAITING:
            wait(waiting[: len(waiting) - self.MAX_WAITING])

    def _upload(self, handle: BinaryIO, name: str) -> tuple[str, str, int]:
        with handle:
            data = handle.read()
        key = self._prefix + name
        self._ctx.store.put(self._ctx.output_bucket, key, data, content_type="application/x-tar",
                            metadata=self._metadata)  # fmt: skip
        return name, key, len(data)

    def results(self) -> list[tuple[str, str, int]]:
        """Every tar's file name, key and size, in order, once all are uploaded."""
        return [future.result() for future in self._futures]


def _entry(key: str, data: bytes) -> dict[str, Any]:
    return {"key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _write_part(
    params: DigitsParams,
    folder: Path,
    part: tuple[int, int],
    workers: int | None,
    on_shard: Callable[[Path], object],
) -> None:
    options: dict[str, Any] = {
        "on_shard": on_shard,
        "rng": params.seed,
        "workers": workers,
        "format": params.format,
        "shard_size": params.shard_images,
        "augment": params.augment,
        "part": part,
        "overwrite": True,
    }
    spacing = (params.spacing_min, params.spacing_max)
    if params.mode == "phone":
        write_phone_dataset(folder, params.count, spacing, params.image_width, **options)
    else:
        assert params.digits is not None
        write_sequence_dataset(
            folder, params.count, params.digits, spacing, params.image_width, **options
        )


def _fit_problem(params: DigitsParams) -> str | None:
    """The library's own check that the longest sequence fits ``image_width`` (None if it does)."""
    lo, hi, width = params.spacing_min, params.spacing_max, params.image_width
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if params.mode == "phone":
                _check_formats_fit(JAPANESE_FORMATS, lo, hi, width, load_source(), "resample")
            else:
                assert params.digits is not None
                _check_sequence_fit(params.digits, lo, hi, width, load_source(), "resample")
    except ValueError as exc:
        return str(exc)
    return None


def _source_name() -> str:
    return load_source().name


def _generator_name(params: DigitsParams) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("imgpipe")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        release = "unknown"
    function = "write_phone_dataset" if params.mode == "phone" else "write_sequence_dataset"
    return f"number_generator.{function} (imgpipe {release})"


KIND = DigitsKind()
