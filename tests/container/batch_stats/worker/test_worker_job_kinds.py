"""The ``digits`` and ``mosaic`` kinds end to end through the job framework: a document uploaded
to ``jobs/<job_id>.json`` -> the batch counter -> the runs queue -> the worker (shards fanned out
through the queue) -> outputs, the ``jobs`` row and one notification; bad jobs -> ``failed``."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from batch_stats.local.resources import LocalResources
from batch_stats.worker.database import ResultsDatabase
from batch_stats.worker.runner import Worker
from PIL import Image

from photo_mosaic.demo import make_demo_data

from .conftest import get_bytes

DIGITS = {
    "mode": "phone",
    "count": 60,
    "shard_images": 10,
    "part_images": 20,
    "spacing_min": 2,
    "spacing_max": 4,
    "image_width": 300,
    "seed": 3,
}


def keys_under(session: boto3.Session, bucket: str, prefix: str) -> list[str]:
    listed = session.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def job_row(settings: Any, job_id: str) -> dict[str, Any]:
    database = ResultsDatabase.from_url(settings.database_url)
    try:
        row = database.job_row(job_id)
    finally:
        database.close()
    assert row is not None
    return row


def test_a_sharded_digits_job_writes_unique_phone_numbers_across_its_shards(
    session: boto3.Session,
    resources: LocalResources,
    worker: Worker,
    settings: Any,
    notifications: Callable[[], list[dict[str, Any]]],
    submit_job: Callable[..., int],
    run_jobs: Callable[..., list[Any]],
) -> None:
    submit_job("digits-1", {"version": 1, "kind": "digits", "params": DIGITS})
    (outcome,) = run_jobs(worker, timeout=300)
    assert (outcome.status, outcome.shards) == ("succeeded", 3)
    results = resources.names.results_bucket
    keys = keys_under(session, results, "datasets/digits-1/")
    tars = [k for k in keys if k.endswith(".tar")]
    assert len(tars) == 6  # two tar shards per part, one part per worker shard
    # Every tar's samples, read back: 60 numbers, none repeated across parts.
    numbers = []
    for key in tars:
        with tarfile.open(fileobj=io.BytesIO(get_bytes(session, results, key))) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    numbers.append(json.loads(extracted.read())["digits"])
    assert len(numbers) == 60
    assert len(set(numbers)) == 60
    labels = list(
        csv.DictReader(
            io.StringIO(get_bytes(session, results, "datasets/digits-1/labels.csv").decode())
        )
    )
    assert [row["digits"] for row in labels] == numbers
    manifest = json.loads(get_bytes(session, results, "datasets/digits-1/manifest.json"))
    assert manifest["status"] == "succeeded"
    assert manifest["counts"] == {"images": 60, "shards": 6, "parts": 3}
    row = job_row(settings, "digits-1")
    assert (row["status"], row["kind"], row["shards_done"]) == ("succeeded", "digits", 3)
    (note,) = notifications()
    assert (note["job_id"], note["kind"], note["status"]) == ("digits-1", "digits", "succeeded")
    assert note["images_processed"] == 60


def test_a_digits_job_beyond_the_phone_number_space_fails(
    session: boto3.Session,
    resources: LocalResources,
    worker: Worker,
    notifications: Callable[[], list[dict[str, Any]]],
    submit_job: Callable[..., int],
    run_jobs: Callable[..., list[Any]],
) -> None:
    params = {**DIGITS, "count": 600_000_000, "shard_images": 200_000}
    submit_job("digits-2", {"version": 1, "kind": "digits", "params": params})
    (outcome,) = run_jobs(worker)
    assert outcome.status == "failed"
    (note,) = notifications()
    assert note["status"] == "failed"
    assert "exceeds the phone-number space" in note["error"]
    results = resources.names.results_bucket
    manifest = json.loads(get_bytes(session, results, "datasets/digits-2/manifest.json"))
    assert manifest["status"] == "failed"
    assert "exceeds the phone-number space" in manifest["reason"]
    assert keys_under(session, results, "datasets/digits-2/") == ["datasets/digits-2/manifest.json"]


@pytest.fixture
def mosaic_inputs(
    session: boto3.Session, resources: LocalResources, tmp_path: Path
) -> dict[str, Any]:
    """photo_mosaic's demo tiles (with duplicates and broken files) and target, under inputs/."""
    demo = make_demo_data(tmp_path / "demo", n_tiles=60, n_duplicates=2, seed=5)
    s3 = session.client("s3")
    raw = resources.names.raw_bucket
    for path in sorted(p for p in demo.tiles.rglob("*") if p.is_file()):
        key = f"inputs/tiles/{path.relative_to(demo.tiles).as_posix()}"
        s3.put_object(Bucket=raw, Key=key, Body=path.read_bytes())
    s3.put_object(Bucket=raw, Key="inputs/target.png", Body=demo.target.read_bytes())
    return {"tiles_prefix": "inputs/tiles/", "target_key": "inputs/target.png", "cols": 6}


def test_a_mosaic_job_writes_the_mosaic_and_its_assignment(
    session: boto3.Session,
    resources: LocalResources,
    worker: Worker,
    settings: Any,
    notifications: Callable[[], list[dict[str, Any]]],
    submit_job: Callable[..., int],
    run_jobs: Callable[..., list[Any]],
    mosaic_inputs: dict[str, Any],
) -> None:
    params = {**mosaic_inputs, "method": "unique", "tile_size": 16}
    submit_job("mosaic-1", {"version": 1, "kind": "mosaic", "params": params})
    (outcome,) = run_jobs(worker, timeout=300)
    assert outcome.status == "succeeded", outcome.reason
    results = resources.names.results_bucket
    keys = keys_under(session, results, "mosaics/mosaic-1/")
    assert {"mosaics/mosaic-1/mosaic.png", "mosaics/mosaic-1/manifest.json"} <= set(keys)
    with Image.open(
        io.BytesIO(get_bytes(session, results, "mosaics/mosaic-1/mosaic.png"))
    ) as image:
        assert image.width == 6 * 16
    manifest = json.loads(get_bytes(session, results, "mosaics/mosaic-1/manifest.json"))
    assert manifest["status"] == "succeeded"
    assert keys_under(session, results, "cache/")  # the thumbnail cache is kept for later jobs
    assert job_row(settings, "mosaic-1")["status"] == "succeeded"
    (note,) = notifications()
    assert (note["kind"], note["status"]) == ("mosaic", "succeeded")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"tiles_prefix": "inputs/no-such-tiles/"}, "inputs/no-such-tiles/"),
        ({"target_key": "inputs/no-such-target.png"}, "inputs/no-such-target.png"),
    ],
    ids=["missing-tile-prefix", "missing-target"],
)
def test_a_mosaic_job_with_missing_inputs_fails_without_retrying(
    change: dict[str, str],
    reason: str,
    session: boto3.Session,
    resources: LocalResources,
    worker: Worker,
    notifications: Callable[[], list[dict[str, Any]]],
    submit_job: Callable[..., int],
    run_jobs: Callable[..., list[Any]],
    mosaic_inputs: dict[str, Any],
) -> None:
    submit_job("mosaic-2", {"version": 1, "kind": "mosaic", "params": {**mosaic_inputs, **change}})
    (outcome,) = run_jobs(worker, timeout=120)
    assert outcome.status == "failed"
    assert reason in (outcome.reason or "")
    (note,) = notifications()
    assert note["status"] == "failed"
    assert reason in note["error"]
    results = resources.names.results_bucket
    manifest = json.loads(get_bytes(session, results, "mosaics/mosaic-2/manifest.json"))
    assert (manifest["status"], manifest["objects"]) == ("failed", [])
    assert worker.poll_once() is False  # failed at once: nothing is left to retry
