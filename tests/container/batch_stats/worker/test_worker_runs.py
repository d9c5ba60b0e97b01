"""Runs of any shape: manifests, shards, duplicates and kills (moto server + real PostgreSQL)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from batch_counter.counter import BatchCounter, Shard, build_run_message
from batch_stats.engine import EngineParams
from batch_stats.local.resources import LocalResources
from batch_stats.worker.config import WorkerSettings
from batch_stats.worker.runner import Worker, results_key
from batch_stats.worker.upload import encode_png, manifest_document

SMALL = EngineParams(
    square_size=8,
    crop_height=32,
    crop_width=32,
    image_height=48,
    image_width=64,
    images_per_batch=3,
    batches=2,
)


def png(seed: int) -> bytes:
    import numpy as np

    rng = np.random.default_rng(seed)
    return encode_png(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))


@pytest.fixture
def counter(session: boto3.Session, resources: LocalResources) -> BatchCounter:
    from batch_counter.aws import DynamoTrackingStore, S3Objects, SqsRunQueue

    # The stack's defaults (2 batches of 3) never match the shapes below: manifests decide.
    return BatchCounter(
        store=DynamoTrackingStore(
            client=session.client("dynamodb"), table_name=resources.names.tracking_table
        ),
        queue=SqsRunQueue(client=session.client("sqs"), queue_url=resources.runs_queue_url),
        objects=S3Objects(client=session.client("s3")),
        images_per_batch=3,
        batches_per_run=2,
        shard_images=4,
    )


@pytest.fixture
def pump(session: boto3.Session, resources: LocalResources) -> Callable[[BatchCounter], int]:
    """Hand the S3 events waiting on the ingest queue to the counter (as the Lambda would)."""

    def run(counter: BatchCounter) -> int:
        sqs = session.client("sqs")
        handled = 0
        while batch := sqs.receive_message(
            QueueUrl=resources.ingest_queue_url, MaxNumberOfMessages=10
        ).get("Messages", []):
            for message in batch:
                counter.handle_record(message["Body"], message_id="m", now=datetime.now(UTC))
                sqs.delete_message(
                    QueueUrl=resources.ingest_queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
                handled += 1
        return handled

    return run


@pytest.fixture
def put(session: boto3.Session, resources: LocalResources) -> Callable[..., None]:
    s3 = session.client("s3")

    def upload(key: str, body: bytes) -> None:
        s3.put_object(Bucket=resources.names.raw_bucket, Key=key, Body=body)

    return upload


def images(run_id: str, sizes: dict[str, int]) -> dict[str, bytes]:
    seed = sum(map(ord, run_id))
    return {
        f"uploads/{run_id}/{batch}/img_{i:04d}.png": png(seed * 1000 + n * 100 + i)
        for n, (batch, size) in enumerate(sorted(sizes.items()))
        for i in range(size)
    }


def manifest_for(run_id: str, sizes: dict[str, int], *, names: bool = True) -> bytes:
    return manifest_document(
        run_id,
        {batch: [(f"img_{i:04d}.png", None) for i in range(size)] for batch, size in sizes.items()},
        names=names,
    )


def drain_worker(worker: Worker) -> None:
    while worker.poll_once():
        pass


def rows(database_url: str, run_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT batch_id, image_count, white_avg, white_std, black_avg, black_std "
            "FROM batch_stats WHERE run_id = %s ORDER BY batch_id",
            (run_id,),
        ).fetchall()


@pytest.mark.parametrize("when", ["first", "middle", "last"])
def test_a_manifest_completes_the_run_wherever_it_arrives(
    when: str,
    counter: BatchCounter,
    pump: Callable[[BatchCounter], int],
    put: Callable[..., None],
    worker: Worker,
    database_url: str,
    notifications: Callable[[], list[dict[str, Any]]],
    session: boto3.Session,
    resources: LocalResources,
) -> None:
    sizes = {"b1": 1, "b2": 5, "b3": 2}  # a batch of one image: its std is null
    run_id = f"run-{when}"
    files = list(images(run_id, sizes).items())
    manifest = manifest_for(run_id, sizes)
    at = {"first": 0, "middle": len(files) // 2, "last": len(files)}[when]
    for key, body in files[:at]:
        put(key, body)
    pump(counter)
    put(f"uploads/{run_id}/_manifest.json", manifest)
    pump(counter)
    assert not worker.poll_once() if at < len(files) else True
    for key, body in files[at:]:
        put(key, body)
    pump(counter)
    drain_worker(worker)
    (note,) = notifications()
    assert (note["run_id"], note["status"], note["images_processed"]) == (run_id, "finished", 8)
    assert note["shards"] == 3  # at most 4 images a shard, whole batches
    stored = rows(database_url, run_id)
    assert [(r[0], r[1]) for r in stored] == [("b1", 1), ("b2", 5), ("b3", 2)]
    assert stored[0][3] is None  # one image: no sample std
    assert stored[0][5] is None
    assert stored[1][3] is not None
    body = session.client("s3").get_object(
        Bucket=resources.names.results_bucket, Key=results_key(run_id)
    )["Body"]
    assert body.read().startswith(b"PAR1")


@pytest.mark.slow
def test_batches_of_one_and_of_five_hundred(
    counter: BatchCounter,
    pump: Callable[[BatchCounter], int],
    put: Callable[..., None],
    worker: Worker,
    database_url: str,
    notifications: Callable[[], list[dict[str, Any]]],
) -> None:
    sizes = {"big": 500, "one": 1}
    files = images("run-sizes", sizes)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: put(*item), files.items()))
    put("uploads/run-sizes/_manifest.json", manifest_for("run-sizes", sizes, names=False))
    assert pump(counter) == 502 + 1  # and the s3:TestEvent of the notification setup
    drain_worker(worker)
    (note,) = notifications()
    assert (note["status"], note["images_processed"], note["shards"]) == ("finished", 501, 2)
    assert [(r[0], r[1]) for r in rows(database_url, "run-sizes")] == [("big", 500), ("one", 1)]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("malformed", "malformed manifest"),
        ("second_differs", "a second manifest differs"),
        ("too_many", "more objects than the manifest announces: b1 has 3 objects"),
    ],
)
def test_a_bad_manifest_fails_the_run_with_its_reason_and_keeps_every_upload(
    case: str,
    reason: str,
    counter: BatchCounter,
    pump: Callable[[BatchCounter], int],
    put: Callable[..., None],
    worker: Worker,
    notifications: Callable[[], list[dict[str, Any]]],
    session: boto3.Session,
    resources: LocalResources,
) -> None:
    run_id = f"run-{case.replace('_', '-')}"
    files = images(run_id, {"b1": 3, "b2": 1})
    for key, body in files.items():
        put(key, body)
    manifest_key = f"uploads/{run_id}/_manifest.json"
    if case == "malformed":
        put(manifest_key, b'{"version": 1, "batches": {"b1": {"images": 0}}}')
    elif case == "second_differs":
        put(manifest_key, manifest_for(run_id, {"b1": 3, "b2": 2}, names=False))
        pump(counter)
        put(manifest_key, manifest_for(run_id, {"b1": 3, "b2": 3}, names=False))
    else:
        put(manifest_key, manifest_for(run_id, {"b1": 2, "b2": 1}, names=False))
    pump(counter)
    drain_worker(worker)
    (note,) = notifications()
    assert (note["run_id"], note["status"]) == (run_id, "failed")
    assert reason in note["error"]
    s3 = session.client("s3")
    for key in [*files, manifest_key]:
        assert s3.head_object(Bucket=resources.names.raw_bucket, Key=key)["ContentLength"] > 0


def test_extra_batches_and_unnamed_objects_are_reported_not_processed(
    counter: BatchCounter,
    pump: Callable[[BatchCounter], int],
    put: Callable[..., None],
    worker: Worker,
    notifications: Callable[[], list[dict[str, Any]]],
    database_url: str,
) -> None:
    files = images("run-x", {"b1": 2, "b2": 2, "stray": 1})
    for key, body in files.items():
        put(key, body)
    put("uploads/run-x/b1/a space.jpg", b"not an image upload")  # a bad key of this run
    put("uploads/run-x/_manifest.json", manifest_for("run-x", {"b1": 2, "b2": 2}))
    pump(counter)
    drain_worker(worker)
    (note,) = notifications()
    assert (note["status"], note["images_processed"]) == ("finished", 4)
    assert note["extra_batches"] == {"stray": 1}
    assert [(b["key"], b["reason"]) for b in note["bad_keys"]] == [
        ("uploads/run-x/b1/a space.jpg", "bad_name")
    ]
    assert note["bad_keys"][0]["copied_to"].endswith(
        note["bad_keys"][0]["copied_to"].rsplit("/", 1)[-1]
    )
    assert [r[0] for r in rows(database_url, "run-x")] == ["b1", "b2"]


def test_checksums_in_the_manifest_are_checked(
    counter: BatchCounter,
    pump: Callable[[BatchCounter], int],
    put: Callable[..., None],
    worker: Worker,
    notifications: Callable[[], list[dict[str, Any]]],
) -> None:
    import hashlib

    files = images("run-sha", {"b1": 2})
    (first, body1), (second, body2) = sorted(files.items())
    put(first, body1)
    put(second, body2)
    document = {
        "version": 1,
        "batches": {
            "b1": {
                "images": 2,
                "objects": [
                    {"name": first.rsplit("/", 1)[1], "sha256": hashlib.sha256(body1).hexdigest()},
                    {"name": second.rsplit("/", 1)[1], "sha256": "0" * 64},
                ],
            }
        },
    }
    put("uploads/run-sha/_manifest.json", json.dumps(document).encode())
    pump(counter)
    drain_worker(worker)
    (note,) = notifications()
    assert note["images_processed"] == 1
    assert [(r["key"], r["reason"]) for r in note["rejected"]] == [(second, "checksum_mismatch")]


def test_a_sharded_run_equals_the_single_worker_result_under_redelivery_kill_and_races(
    session: boto3.Session,
    resources: LocalResources,
    settings: WorkerSettings,
    database_url: str,
    worker: Worker,  # migrates this stage's database
    make_worker: Callable[..., Worker],
    notifications: Callable[[], list[dict[str, Any]]],
    send_raw: Callable[[str], None],
) -> None:
    from batch_counter.aws import DynamoTrackingStore, S3Objects, SqsRunQueue
    from batch_stats.worker.upload import upload_run

    params = dataclasses.replace(SMALL, images_per_batch=3, batches=6)

    def close(res: LocalResources, shard_images: int) -> None:
        counter = BatchCounter(
            store=DynamoTrackingStore(
                client=session.client("dynamodb"), table_name=res.names.tracking_table
            ),
            queue=SqsRunQueue(client=session.client("sqs"), queue_url=res.runs_queue_url),
            objects=S3Objects(client=session.client("s3")),
            images_per_batch=3,
            batches_per_run=6,
            shard_images=shard_images,
        )
        upload_run(session.client("s3"), res.names.raw_bucket, "run-s", params=params)
        sqs = session.client("sqs")
        while batch := sqs.receive_message(
            QueueUrl=res.ingest_queue_url, MaxNumberOfMessages=10
        ).get("Messages", []):
            for message in batch:
                counter.handle_record(message["Body"], message_id="m", now=datetime.now(UTC))
                sqs.delete_message(
                    QueueUrl=res.ingest_queue_url, ReceiptHandle=message["ReceiptHandle"]
                )

    s3 = session.client("s3")

    def parquet(res: LocalResources) -> bytes:
        return bytes(
            s3.get_object(Bucket=res.names.results_bucket, Key=results_key("run-s"))["Body"].read()
        )

    # Sharded: 6 batches of 3, at most 3 images a shard -> 6 shards.
    close(resources, 3)
    # A shard delivered twice (the duplicate arrives under another deduplication id).
    send_raw(
        build_run_message(
            run_id="run-s",
            bucket=resources.names.raw_bucket,
            shard=2,
            plan=[Shard(f"batch_00{i}", f"batch_00{i}", 3) for i in range(1, 7)],
            failure=None,
            now=datetime.now(UTC),
        )
    )
    # A worker killed mid-shard (the process dies on its second download).
    from batch_stats.worker.adapters import S3ObjectStore

    class Killed(BaseException):
        pass

    class Dying(S3ObjectStore):
        gets = 0

        def get(self, bucket: str, key: str) -> bytes:
            Dying.gets += 1
            if Dying.gets == 2:
                raise Killed
            return super().get(bucket, key)

    dying = make_worker()
    dying._processor._objects = Dying(session.client("s3"))  # type: ignore[attr-defined]
    with pytest.raises(Killed):
        dying.poll_once()
    # Three workers race on the rest, including shards finishing at the same instant.
    workers = [make_worker() for _ in range(3)]
    errors: list[BaseException] = []

    def run(worker: Worker) -> None:
        try:
            idle = 0
            while idle < 4:
                idle = 0 if worker.poll_once() else idle + 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    notes = notifications()
    assert [(n["run_id"], n["status"], n["shards"]) for n in notes] == [("run-s", "finished", 6)]
    assert notes[0]["images_processed"] == 18
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "SELECT count(*), count(DISTINCT batch_id) FROM batch_stats WHERE run_id = 'run-s'"
        ).fetchone() == (6, 6)
    sharded, sharded_rows = parquet(resources), rows(database_url, "run-s")

    # The same run processed whole by one worker (one message for all its batches) writes the
    # same bytes and rows, and announces nothing new.
    send_raw(
        build_run_message(
            run_id="run-s",
            bucket=resources.names.raw_bucket,
            shard=0,
            plan=[Shard("batch_001", "batch_006", 18)],
            failure=None,
            now=datetime.now(UTC),
        )
    )
    single = make_worker()
    assert single.poll_once()
    assert parquet(resources) == sharded
    assert rows(database_url, "run-s") == sharded_rows
    assert notifications() == notes


def test_two_workers_on_a_duplicated_message_announce_once(
    dispatch_run: Callable[..., Any],
    make_worker: Callable[..., Worker],
    worker: Worker,
    send_raw: Callable[[str], None],
    resources: LocalResources,
    notifications: Callable[[], list[dict[str, Any]]],
    database_url: str,
) -> None:
    for trial in range(3):
        run_id = f"run-dup-{trial}"
        dispatch_run(run_id)
        send_raw(
            build_run_message(
                run_id=run_id,
                bucket=resources.names.raw_bucket,
                shard=0,
                plan=[Shard("batch_001", "batch_002", 6)],
                failure=None,
                now=datetime.now(UTC),
            )
        )
        pair = [make_worker(), make_worker()]
        barrier = threading.Barrier(2)

        def one(w: Worker, start: threading.Barrier) -> None:
            start.wait()
            w.poll_once()

        threads = [threading.Thread(target=one, args=(w, barrier)) for w in pair]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        drain_worker(worker)
        notes = [n for n in notifications() if n["run_id"] == run_id]
        assert len(notes) == 1, trial
        assert len(rows(database_url, run_id)) == 2


KILL_AFTER_PUBLISH = """
import os, signal, sys
from batch_stats.worker import adapters
from batch_stats.worker.app import main

publish = adapters.SnsNotifier.publish

def publish_then_die(self, **kwargs):
    publish(self, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # after SNS accepted it, before the record

adapters.SnsNotifier.publish = publish_then_die
sys.exit(main())
"""


def test_a_worker_killed_between_publish_and_record(
    dispatch_run: Callable[..., Any],
    settings: WorkerSettings,
    worker: Worker,  # migrates the database
    make_worker: Callable[..., Worker],
    notifications: Callable[[], list[dict[str, Any]]],
    database_url: str,
    tmp_path: Path,
) -> None:
    # The container's default engine parameters: a run of real 256x512 images.
    dispatch_run("run-pk", params=EngineParams(images_per_batch=2, batches=1))
    env = {
        **os.environ,
        "RUNS_QUEUE_URL": settings.runs_queue_url,
        "RAW_BUCKET": settings.raw_bucket,
        "RESULTS_BUCKET": settings.results_bucket,
        "NOTIFICATIONS_TOPIC_ARN": settings.notifications_topic_arn,
        "TRACKING_TABLE_NAME": settings.tracking_table_name,
        "DATABASE_URL": database_url,
        "VISIBILITY_TIMEOUT_SECONDS": "2",
    }
    process = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_PUBLISH], env=env, capture_output=True, timeout=120
    )
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
    first = notifications()
    assert [n["notification_id"] for n in first] == ["run-pk:finished"]
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "SELECT notified_status FROM runs WHERE run_id = 'run-pk'"
        ).fetchone() == (None,)
    # The redelivery finishes the record. SNS has no deduplication for standard topics, so the
    # one remaining repeat carries the same notification_id for subscribers to drop.
    redelivered = make_worker(params=EngineParams())
    deadline = time.monotonic() + 30
    while not redelivered.poll_once():
        assert time.monotonic() < deadline
    notes = notifications()  # everything received so far
    assert {n["notification_id"] for n in notes} == {"run-pk:finished"}
    assert len(notes) == 2
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "SELECT notified_status FROM runs WHERE run_id = 'run-pk'"
        ).fetchone() == ("finished",)
