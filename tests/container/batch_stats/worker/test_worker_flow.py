"""The worker against moto (server mode) and a real PostgreSQL."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import psycopg
from batch_counter.counter import Shard, build_run_message
from batch_stats.engine import (
    EngineParams,
    decode_image,
    image_rng,
    process_image,
    read_batch_stats,
    run_seed,
    summarize_batch,
    synthetic_image,
)
from batch_stats.local.resources import LocalResources
from batch_stats.worker.runner import Worker, results_key
from PIL import Image


def parquet_bytes(session: boto3.Session, resources: LocalResources, run_id: str) -> bytes:
    body = session.client("s3").get_object(
        Bucket=resources.names.results_bucket, Key=results_key(run_id)
    )["Body"]
    return bytes(body.read())


def batch_rows(database_url: str, run_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT batch_id, image_count, white_avg, white_min, white_max, white_std, "
            "black_avg, black_min, black_max, black_std FROM batch_stats WHERE run_id = %s "
            "ORDER BY batch_id",
            (run_id,),
        ).fetchall()


def queue_depth(session: boto3.Session, url: str) -> int:
    attributes = session.client("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def test_whole_run_is_stored_announced_and_deleted(
    worker: Worker,
    small: EngineParams,
    dispatch_run: Callable[..., Any],
    session: boto3.Session,
    resources: LocalResources,
    database_url: str,
    notifications: Callable[[], list[dict[str, Any]]],
) -> None:
    uploads = dispatch_run("run-ok")
    assert worker.poll_once()

    # Independent computation of the expected statistics from the uploaded PNGs.
    s3 = session.client("s3")
    seed = run_seed("run-ok")
    counts: dict[str, list[tuple[int, int]]] = {}
    for upload in uploads:
        data = s3.get_object(Bucket=resources.names.raw_bucket, Key=upload.key)["Body"].read()
        image = decode_image(data, name=upload.name, params=small)
        rng = image_rng(seed, upload.batch_id, upload.name)
        counts.setdefault(upload.batch_id, []).append(process_image(image, rng=rng, params=small))
    expected = [summarize_batch(b, c) for b, c in sorted(counts.items())]

    stats, metadata = read_batch_stats(io.BytesIO(parquet_bytes(session, resources, "run-ok")))
    assert stats == expected
    assert metadata["run_id"] == "run-ok"
    rows = batch_rows(database_url, "run-ok")
    assert [row[0] for row in rows] == ["batch_001", "batch_002"]
    assert [row[1] for row in rows] == [3, 3]
    assert rows[0][2:] == tuple(
        getattr(expected[0], c)
        for c in (
            "white_avg",
            "white_min",
            "white_max",
            "white_std",
            "black_avg",
            "black_min",
            "black_max",
            "black_std",
        )
    )
    (note,) = notifications()
    uri = f"s3://{resources.names.results_bucket}/results/run-ok/batch_stats.parquet"
    assert note["run_id"] == "run-ok"
    assert note["status"] == "finished"
    assert note["parquet_uri"] == uri
    assert note["rejected_count"] == 0
    assert [row["batch_id"] for row in note["statistics"]] == ["batch_001", "batch_002"]
    assert note["statistics"][1]["black_avg"] == expected[1].black_avg
    assert queue_depth(session, resources.runs_queue_url) == 0


def test_images_of_other_sizes_get_their_own_draws(
    worker: Worker,
    small: EngineParams,
    dispatch_run: Callable[..., Any],
    session: boto3.Session,
    resources: LocalResources,
) -> None:
    # The worker draws every image's squares and crop for the run's size up front; an image of
    # another size is drawn for its own size, exactly as process_image would.
    uploads = dispatch_run("run-sizes", params=dataclasses.replace(small, image_height=57))
    s3 = session.client("s3")
    raw = resources.names.raw_bucket
    buffer = io.BytesIO()
    Image.fromarray(synthetic_image(3, "batch_001", "own-size", params=small)).save(buffer, "PNG")
    s3.put_object(Bucket=raw, Key=uploads[0].key, Body=buffer.getvalue())
    assert worker.poll_once()

    seed = run_seed("run-sizes")
    counts: dict[str, list[tuple[int, int]]] = {}
    sizes = set()
    for upload in uploads:
        data = s3.get_object(Bucket=raw, Key=upload.key)["Body"].read()
        image = decode_image(data, name=upload.name, params=small)
        sizes.add(image.shape[:2])
        rng = image_rng(seed, upload.batch_id, upload.name)
        counts.setdefault(upload.batch_id, []).append(process_image(image, rng=rng, params=small))
    assert sizes == {(57, 64), (48, 64)}
    expected = [summarize_batch(b, c) for b, c in sorted(counts.items())]
    stats, _ = read_batch_stats(io.BytesIO(parquet_bytes(session, resources, "run-sizes")))
    assert stats == expected


def test_bad_uploads_are_rejected_and_reported_and_the_run_finishes(
    worker: Worker,
    small: EngineParams,
    dispatch_run: Callable[..., Any],
    session: boto3.Session,
    resources: LocalResources,
    database_url: str,
    notifications: Callable[[], list[dict[str, Any]]],
) -> None:
    params = dataclasses.replace(small, images_per_batch=4)
    bad = ("not_png", "truncated", "empty", "too_small", "decompression_bomb")
    dispatch_run("run-bad", params=params, bad=bad)
    assert worker.poll_once()
    (note,) = notifications()
    assert note["status"] == "finished"
    assert note["rejected_count"] == 5
    reasons = {r["reason"] for r in note["rejected"]}
    assert reasons == set(bad)
    s3 = session.client("s3")
    raw = resources.names.raw_bucket
    for rejection in note["rejected"]:
        copied = rejection["copied_to"].removeprefix(f"s3://{raw}/")
        assert copied == f"rejected/run-bad/{rejection['batch_id']}/{rejection['name']}"
        head = s3.head_object(Bucket=raw, Key=copied)
        assert head["Metadata"]["reason"] == rejection["reason"]
        assert rejection["detail"]  # says what was wrong
        s3.head_object(Bucket=raw, Key=rejection["key"])  # the upload itself is kept
    rows = batch_rows(database_url, "run-bad")
    assert sum(row[1] for row in rows) == 8 - 5
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT reason FROM rejected_images WHERE run_id = 'run-bad'"
        ).fetchall()
    assert {r[0] for r in stored} == set(bad)


def test_run_without_any_valid_image_fails_and_is_announced(
    worker: Worker,
    small: EngineParams,
    dispatch_run: Callable[..., Any],
    session: boto3.Session,
    resources: LocalResources,
    notifications: Callable[[], list[dict[str, Any]]],
) -> None:
    params = dataclasses.replace(small, images_per_batch=1, batches=2)
    dispatch_run("run-fail", params=params, bad=("empty", "not_png"))
    assert worker.poll_once()
    (note,) = notifications()
    assert note["status"] == "failed"
    assert note["parquet_uri"] is None
    assert note["rejected_count"] == 2
    assert "no image" in note["error"]
    assert queue_depth(session, resources.runs_queue_url) == 0


def test_run_naming_another_bucket_is_refused_and_announced_as_failed(
    worker: Worker,
    send_raw: Callable[[str], None],
    session: boto3.Session,
    resources: LocalResources,
    notifications: Callable[[], list[dict[str, Any]]],
) -> None:
    body = build_run_message(
        run_id="run-elsewhere",
        bucket="someone-elses-bucket",
        shard=0,
        plan=[Shard("b1", "b1", 1)],
        failure=None,
        now=datetime.now(UTC),
    )
    send_raw(body)
    assert worker.poll_once()
    (note,) = notifications()
    assert note["status"] == "failed"
    assert "someone-elses-bucket" in note["error"]
    assert queue_depth(session, resources.runs_queue_url) == 0
