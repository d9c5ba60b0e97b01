"""Generate a synthetic run and upload it to the raw bucket, to drive the flow end to end.

Optionally some images are replaced by bad uploads (each kind the worker must reject), so the
rejection path can be seen; the number of uploads per batch stays the same, so the batch
counter still completes every batch.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from PIL import Image

from batch_stats.engine import (
    EngineParams,
    batch_ids,
    image_names,
    run_seed,
    synthetic_image,
)

#: Kinds of bad upload, each rejected by the worker with this reason.
BAD_UPLOADS: dict[str, str] = {
    "not_png": "not_png",
    "truncated": "truncated",
    "empty": "empty",
    "too_small": "too_small",
    "decompression_bomb": "decompression_bomb",
}


def encode_png(pixels: np.ndarray[Any, np.dtype[np.uint8]], *, compress_level: int = 1) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def bad_upload(kind: str, params: EngineParams) -> bytes:
    """The bytes of one bad upload of ``kind`` (see BAD_UPLOADS)."""
    good = encode_png(np.full((params.image_height, params.image_width, 3), 128, np.uint8))
    if kind == "not_png":
        return b"GIF89a" + good[6:64]
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "empty":
        return b""
    if kind == "too_small":
        return encode_png(np.zeros((params.crop_height // 2, params.crop_width // 2, 3), np.uint8))
    if kind == "decompression_bomb":
        # A valid PNG whose header declares 100000 x 100000 pixels (10^10) in a few bytes.
        header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
        idat = zlib.compress(b"\x00" * 1024, 9)
        return (
            b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b"")
        )
    raise ValueError(f"unknown bad upload kind {kind!r}; allowed: {', '.join(BAD_UPLOADS)}")


@dataclass(frozen=True)
class PlannedUpload:
    key: str
    batch_id: str
    name: str
    bad_kind: str | None


def plan_run(run_id: str, params: EngineParams, *, bad: Sequence[str] = ()) -> list[PlannedUpload]:
    """The uploads of a run; the first images of the last batches are replaced by ``bad`` kinds."""
    for kind in bad:
        if kind not in BAD_UPLOADS:
            raise ValueError(f"unknown bad upload kind {kind!r}; allowed: {', '.join(BAD_UPLOADS)}")
    planned = [
        PlannedUpload(f"uploads/{run_id}/{batch_id}/{name}", batch_id, name, None)
        for batch_id in batch_ids(params)
        for name in image_names(params)
    ]
    if len(bad) > len(planned):
        raise ValueError(f"{len(bad)} bad uploads requested but the run has {len(planned)} images")
    # Spread the bad uploads over the batches (round robin from the last batch backwards).
    per_batch = params.images_per_batch
    slots = [
        (params.batches - 1 - i % params.batches) * per_batch + i // params.batches
        for i in range(len(bad))
    ]
    for slot, kind in zip(slots, bad, strict=True):
        p = planned[slot]
        planned[slot] = PlannedUpload(p.key, p.batch_id, p.name, kind)
    return planned


def _synthetic_png(seed: int, batch_id: str, name: str, params: EngineParams) -> bytes:
    return encode_png(synthetic_image(seed, batch_id, name, params=params))


def iter_run_files(
    run_id: str, params: EngineParams, *, bad: Sequence[str] = (), seed: int | None = None
) -> Iterator[tuple[PlannedUpload, Callable[[], bytes]]]:
    """(upload, function returning its bytes) for every image of a synthetic run.

    The bytes are made when the function is called, so an uploader holds only the images it is
    sending.
    """
    seed = run_seed(run_id) if seed is None else seed
    for upload in plan_run(run_id, params, bad=bad):
        if upload.bad_kind is not None:
            yield upload, partial(bad_upload, upload.bad_kind, params)
        else:
            yield upload, partial(_synthetic_png, seed, upload.batch_id, upload.name, params)


def upload_run(
    s3: Any,
    bucket: str,
    run_id: str,
    *,
    params: EngineParams,
    bad: Sequence[str] = (),
    seed: int | None = None,
    concurrency: int = 8,
    progress: Callable[[PlannedUpload], object] | None = None,
) -> list[PlannedUpload]:
    """Generate and upload a run with ``s3`` (a boto3 S3 client); return what was uploaded."""

    def put(item: tuple[PlannedUpload, Callable[[], bytes]]) -> PlannedUpload:
        upload, make = item
        s3.put_object(Bucket=bucket, Key=upload.key, Body=make(), ContentType="image/png")
        if progress is not None:
            progress(upload)
        return upload

    with ThreadPoolExecutor(concurrency, thread_name_prefix="upload") as pool:
        return list(pool.map(put, iter_run_files(run_id, params, bad=bad, seed=seed)))
