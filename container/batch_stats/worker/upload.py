"""Generate a synthetic run and upload it to the raw bucket, to drive the flow end to end.

Optionally some images are replaced by bad uploads (each kind the worker must reject), so the
rejection path can be seen; the number of uploads per batch stays the same, so the batch
counter still completes every batch.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
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


MANIFEST_VERSION = 1
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,123}\.png")


def manifest_key(run_id: str) -> str:
    return f"uploads/{run_id}/_manifest.json"


def manifest_document(
    run_id: str, batches: dict[str, list[tuple[str, str | None]]], *, names: bool = True
) -> bytes:
    """A run manifest (schema version 1, see the README): batch id -> [(name, sha256 or None)].

    ``names=False`` announces only each batch's image count.
    """
    document = {
        "version": MANIFEST_VERSION,
        "run_id": run_id,
        "batches": {
            batch_id: (
                {
                    "images": len(items),
                    "objects": [
                        {"name": name, **({"sha256": sha} if sha else {})}
                        for name, sha in sorted(items)
                    ],
                }
                if names
                else {"images": len(items)}
            )
            for batch_id, items in sorted(batches.items())
        },
    }
    return json.dumps(document, indent=1).encode()


def _put_all(
    s3: Any,
    bucket: str,
    items: Iterator[tuple[PlannedUpload, Callable[[], bytes]]],
    *,
    concurrency: int,
    progress: Callable[[PlannedUpload], object] | None,
) -> list[tuple[PlannedUpload, str]]:
    def put(item: tuple[PlannedUpload, Callable[[], bytes]]) -> tuple[PlannedUpload, str]:
        upload, make = item
        body = make()
        s3.put_object(Bucket=bucket, Key=upload.key, Body=body, ContentType="image/png")
        if progress is not None:
            progress(upload)
        return upload, hashlib.sha256(body).hexdigest()

    with ThreadPoolExecutor(concurrency, thread_name_prefix="upload") as pool:
        return list(pool.map(put, items))


def _put_manifest(s3: Any, bucket: str, run_id: str, done: list[tuple[PlannedUpload, str]]) -> None:
    batches: dict[str, list[tuple[str, str | None]]] = {}
    for upload, sha in done:
        batches.setdefault(upload.batch_id, []).append((upload.name, sha))
    s3.put_object(
        Bucket=bucket,
        Key=manifest_key(run_id),
        Body=manifest_document(run_id, batches),
        ContentType="application/json",
    )


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
    manifest: bool = False,
) -> list[PlannedUpload]:
    """Generate and upload a run with ``s3`` (a boto3 S3 client); return what was uploaded.

    ``manifest=True``: then upload ``uploads/<run_id>/_manifest.json`` naming every image with
    its SHA-256 (the run is then complete when all of them are recorded, whatever the stack's
    defaults).
    """
    done = _put_all(
        s3,
        bucket,
        iter_run_files(run_id, params, bad=bad, seed=seed),
        concurrency=concurrency,
        progress=progress,
    )
    if manifest:
        _put_manifest(s3, bucket, run_id, done)
    return [upload for upload, _ in done]


def scan_upload_folder(folder: Path, run_id: str) -> list[PlannedUpload]:
    """The uploads of a user's folder of batch folders (``FOLDER/<batch_id>/<name>.png``).

    Raises ValueError listing every entry that cannot be uploaded as it is (names the stack
    would reject, files outside batch folders, sub-folders, links, other files).
    """
    if not _ID_RE.fullmatch(run_id):
        raise ValueError(
            f"run id {run_id!r} is not allowed (1-64 letters, digits, '_' and '-', starting with "
            "a letter or digit)"
        )
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of batch folders")
    planned: list[PlannedUpload] = []
    problems: list[str] = []
    for batch_dir in sorted(folder.iterdir()):
        if batch_dir.is_symlink() or not batch_dir.is_dir():
            problems.append(f"{batch_dir}: not a batch folder")
            continue
        if not _ID_RE.fullmatch(batch_dir.name):
            problems.append(f"{batch_dir}: batch id not allowed (letters, digits, '_', '-')")
            continue
        for path in sorted(batch_dir.iterdir()):
            if path.is_symlink() or not path.is_file():
                problems.append(f"{path}: not a regular file")
            elif not _NAME_RE.fullmatch(path.name):
                problems.append(
                    f"{path}: image name not allowed (letters, digits, '_', '-', '.'; "
                    "ending in .png)"
                )
            else:
                key = f"uploads/{run_id}/{batch_dir.name}/{path.name}"
                planned.append(PlannedUpload(key, batch_dir.name, path.name, None))
    if problems:
        shown = "; ".join(problems[:20]) + (
            f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
        )
        raise ValueError(f"{len(problems)} entries of {folder} cannot be uploaded: {shown}")
    if not planned:
        raise ValueError(f"{folder} holds no <batch_id>/<name>.png images")
    return planned


def upload_folder(
    s3: Any,
    bucket: str,
    folder: Path,
    run_id: str,
    *,
    concurrency: int = 8,
    progress: Callable[[PlannedUpload], object] | None = None,
) -> list[PlannedUpload]:
    """Upload a folder of batch folders as run ``run_id``, then its manifest (names, SHA-256)."""
    planned = scan_upload_folder(folder, run_id)
    items = (
        (upload, partial((folder / upload.batch_id / upload.name).read_bytes)) for upload in planned
    )
    done = _put_all(s3, bucket, items, concurrency=concurrency, progress=progress)
    _put_manifest(s3, bucket, run_id, done)
    return [upload for upload, _ in done]
