"""Rejected uploads and silently short PNGs: copied with their reason, reported, run finished."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import boto3
import numpy as np
from batch_stats.engine import EngineParams
from batch_stats.local.resources import LocalResources
from batch_stats.worker.runner import Worker
from PIL import Image

from .conftest import count_uploads, make_counter

SMALL = EngineParams(
    square_size=8, crop_height=32, crop_width=32, image_height=48, image_width=64,
    images_per_batch=3, batches=1,
)  # fmt: skip


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_contents_and_missing_rows_are_rejected_and_copied(
    png_without_last_rows: Callable[..., bytes],
    make_worker: Any,
    session: boto3.Session,
    resources: LocalResources,
    notifications: Any,
) -> None:
    run_id = "run-names"
    raw = resources.names.raw_bucket
    s3 = session.client("s3")
    white_top = np.zeros((48, 64, 3), np.uint8)
    white_top[:24] = 255  # the rows a short stream loses would be counted as black
    # Names the key rules accept (a name the rules refuse, with control characters for example,
    # is a bad key: the Lambda copies it, tests/lambdas); the worker rejects the contents.
    uploads = {
        "good.png": _png(white_top),
        "not-a-png.png": b"not a png at all",
        "short-rows.png": png_without_last_rows(_png(white_top), rows=20, row_bytes=1 + 64 * 3),
    }
    for name, body in uploads.items():
        s3.put_object(Bucket=raw, Key=f"uploads/{run_id}/batch_001/{name}", Body=body)
    counter = make_counter(session, resources, images_per_batch=3, batches=1)
    assert count_uploads(session, resources, counter) == 3 + 1  # and the s3:TestEvent

    worker: Worker = make_worker(params=SMALL)
    worker.migrate()
    assert worker.poll_once()
    (note,) = notifications()
    assert note["status"] == "finished"
    assert note["images_processed"] == 1
    rejected = {r["name"]: r for r in note["rejected"]}
    assert rejected["not-a-png.png"]["reason"] == "not_png"
    short = rejected["short-rows.png"]
    assert short["reason"] == "truncated"
    assert "holds 28 of the 48 rows" in short["detail"]
    for name, rejection in rejected.items():
        copied = rejection["copied_to"].removeprefix(f"s3://{raw}/")
        assert copied == f"rejected/{run_id}/batch_001/{name}"
        head = s3.head_object(Bucket=raw, Key=copied)
        # Percent-encoded where S3 metadata cannot carry the character; decodes to the original.
        assert unquote(head["Metadata"]["source-key"]) == rejection["key"]
        assert unquote(head["Metadata"]["detail"]) == rejection["detail"]
        assert head["Metadata"]["reason"] == rejection["reason"]
