"""Jobs end to end on moto's server and the embedded PostgreSQL: a document uploaded to
``jobs/<job_id>.json`` -> the batch counter -> the runs queue -> the worker (fan-out over
shards) -> outputs, the ``jobs`` row and exactly one notification."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from batch_stats.engine import EngineParams, iter_synthetic_stats, read_batch_stats
from batch_stats.local.resources import LocalResources
from batch_stats.worker.adapters import S3ObjectStore
from batch_stats.worker.database import ResultsDatabase
from batch_stats.worker.runner import Worker

from .conftest import get_bytes

#: Small images: the behaviour under test does not depend on size.
SHAPE = {
    "image_height": 48,
    "image_width": 64,
    "square_size": 8,
    "crop_height": 32,
    "crop_width": 32,
}


def synthetic_document(**params: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "kind": "synthetic-stats",
        "params": {"batches": 3, "images_per_batch": 4, "seed": 11, **SHAPE, **params},
    }


def queue_bodies(session: boto3.Session, url: str) -> list[dict[str, Any]]:
    """Every message visible on the queue (received, then made visible again at once)."""
    sqs = session.client("sqs")
    bodies = []
    handles = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in batch:
            bodies.append(json.loads(message["Body"]))
            handles.append(message["ReceiptHandle"])
    for handle in handles:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    return bodies


def test_synthetic_stats_job_writes_the_engines_statistics_rows_and_one_notification(
    session: boto3.Session,
    resources: LocalResources,
    worker: Worker,
    settings: Any,
    notifications: Callable[[], list[dict[str, Any]]],
    submit_job: Callable[..., int],
    run_jobs: Callable[..., list[Any]],
) -> None:
    submit_job("synth-1", synthetic_document(batches_per_shard=2))
    (outcome,) = run_jobs(worker)
    assert outcome.status == "succeeded"
    assert outcome.shards == 2  # 3 batches, 2 a shard: the job fanned out

    results = resources.names.results_bucket
    expected = list(
        iter_synthetic_stats(11, params=EngineParams(batches=3, images_per_batch=4, **SHAPE))
    )
    rows, metadata = read_batch_stats(
        io.BytesIO(get_bytes(session, results, "results/synth-1/batch_stats.parquet"))
    )
    assert rows == expected
    assert metadata["seed"] == "11"
    assert metadata["run_id"] == "synth-1"

    database = ResultsDatabase.from_url(settings.database_url)
    try:
        db_rows = database.batch_rows("synth-1")
        assert [r["batch_id"] for r in db_rows] == [s.batch_id for s in expected]
        assert [r["white_avg"] for r in db_rows] == [s.white_avg for s in expected]
        assert all(r["image_count"] == 4 for r in db_rows)
        job = database.job_row("synth-1")
        assert job is not None
        assert job["status"] == "succeeded"
        assert job["kind"] == "synthetic-stats"
        assert (job["shards"], job["shards_done"]) == (2, 2)
        assert job["params"]["seed"] == 11
        assert job["finished_at"] >= job["started_at"] >= job["created_at"]
        assert job["notification_id"]
    finally:
        database.close()

    manifest = json.loads(get_bytes(session, results, "results/synth-1/manifest.json"))
    assert manifest["status"] == "succeeded"
    assert manifest["counts"] == {"batches": 3, "images": 12, "shards": 2}
    parquet = next(o for o in manifest["objects"] if o["key"].endswith("batch_stats.parquet"))
    import hashlib

    data = get_bytes(session, results, "results/synth-1/batch_stats.parquet")
    assert parquet["sha256"] == hashlib.sha256(data).hexdigest()

    (note,) = notifications()
    assert note["job_id"] == "synth-1"
    assert note["status"] == "succeeded"
    assert note["kind"] == "synthetic-stats"
    assert note["parquet_uri"] == f"s3://{results}/results/synth-1/batch_stats.parquet"
    assert note["batch_count"] == 3
    assert note["images_processed"] == 12
    assert note["error"] is None
    # The run notification's fields are all there (subscribers parse one shape).
    assert {"run_id", "notification_id", "statistics", "rejected", "bad_keys"} <= set(note)


def test_a_second_upload_under_the_same_job_id_does_not_run_again_and_is_kept(
    session: boto3.Session,
    resources: LocalResources,
    worker: Worker,
    notifications: Callable[[], list[dict[str, Any]]],
    submit_job: Callable[..., int],
    run_jobs: Callable[..., list[Any]],
) -> None:
    first = synthetic_document(batches=1)
    second = synthetic_document(batches=2, seed=99)
    submit_job("dup-1", first)
    submit_job("dup-1", second)
    submit_job("dup-1", second)  # the same replacement again: reported once
    messages = queue_bodies(session, resources.runs_queue_url)
    assert [m["type"] for m in messages] == ["job"]
    assert json.loads(messages[0]["document"]) == first

    raw = resources.names.raw_bucket
    kept = session.client("s3").list_objects_v2(Bucket=raw, Prefix="rejected/jobs/dup-1/")
    (copy,) = kept["Contents"]
    assert json.loads(get_bytes(session, raw, copy["Key"])) == second

    (outcome,) = run_jobs(worker)
    assert outcome.status == "succeeded"
    assert outcome.outputs["batches"] == 1  # the first document's parameters
    assert worker.poll_once() is False  # nothing else was dispatched
    assert [n["status"] for n in notifications()] == ["succeeded"]


def test_a_redelivered_s3_event_sends_no_second_job_message(
    session: boto3.Session,
    resources: LocalResources,
    submit_job: Callable[..., int],
) -> None:
    from batch_counter.aws import DynamoTrackingStore

    submit_job("redeliver-1", synthetic_document())
    body = json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": resources.names.raw_bucket},
                        "object": {
                            "key": "jobs/redeliver-1.json",
                            "size": len(json.dumps(synthetic_document())),
                            "eTag": session.client("s3")
                            .head_object(
                                Bucket=resources.names.raw_bucket, Key="jobs/redeliver-1.json"
                            )["ETag"]
                            .strip('"'),
                        },
                    },
                }
            ]
        }
    )
    session.client("sqs").send_message(QueueUrl=resources.ingest_queue_url, MessageBody=body)
    from datetime import UTC, datetime

    from .conftest import make_counter

    counter = make_counter(session, resources, images_per_batch=3, batches=2)
    message = session.client("sqs").receive_message(QueueUrl=resources.ingest_queue_url)
    (received,) = message["Messages"]
    result = counter.handle_record(received["Body"], message_id="m", now=datetime.now(UTC))
    assert result.dispatched_jobs == []
    assert len(queue_bodies(session, resources.runs_queue_url)) == 1
    store = DynamoTrackingStore(
        client=session.client("dynamodb"), table_name=resources.names.tracking_table
    )
    item = store.job_item("redeliver-1")
    assert item is not None
    assert item["state"] == "DISPATCHED"


class _Killed(BaseException):
    """Stands for the task being killed (SIGKILL): nothing after it runs in that worker."""


class KillingStore(S3ObjectStore):
    """The real S3 adapter, killed the first time it is about to write a key ending in
    ``when``."""

    def __init__(self, client: Any, *, when: str) -> None:
        super().__init__(client)
        self._when = when
        self.killed = False

    def put(self, bucket: str, key: str, data: bytes, **options: Any) -> None:
        if key.endswith(self._when) and not self.killed:
            self.killed = True
            raise _Killed(key)
        super().put(bucket, key, data, **options)


def poll_until_killed(worker: Worker) -> None:
    for _ in range(20):
        worker.poll_once()


@pytest.mark.parametrize("when", ["shard-00001.parquet", "manifest.json"])
def test_a_job_killed_midway_is_redelivered_and_ends_with_the_same_outputs_once(
    when: str,
    session: boto3.Session,
    resources: LocalResources,
    make_worker: Callable[..., Worker],
    notifications: Callable[[], list[dict[str, Any]]],
    submit_job: Callable[..., int],
    run_jobs: Callable[..., list[Any]],
) -> None:
    doomed = make_worker()
    doomed.migrate()
    store = KillingStore(session.client("s3"), when=when)
    assert doomed._jobs is not None
    doomed._jobs._store = store
    submit_job("killed-1", synthetic_document(batches_per_shard=2))
    with pytest.raises(_Killed):
        poll_until_killed(doomed)
    assert store.killed
    doomed.close()

    survivor = make_worker()
    (outcome,) = run_jobs(survivor, timeout=60)
    survivor.close()
    assert outcome.status == "succeeded"
    results = resources.names.results_bucket
    rows, _ = read_batch_stats(
        io.BytesIO(get_bytes(session, results, "results/killed-1/batch_stats.parquet"))
    )
    assert rows == list(
        iter_synthetic_stats(11, params=EngineParams(batches=3, images_per_batch=4, **SHAPE))
    )
    manifest = json.loads(get_bytes(session, results, "results/killed-1/manifest.json"))
    assert manifest["status"] == "succeeded"
    assert [n["status"] for n in notifications()] == ["succeeded"]


def test_two_shards_finishing_together_announce_the_job_once(
    session: boto3.Session,
    resources: LocalResources,
    make_worker: Callable[..., Worker],
    notifications: Callable[[], list[dict[str, Any]]],
    submit_job: Callable[..., int],
) -> None:
    first, second = make_worker(), make_worker()
    first.migrate()
    submit_job("together-1", synthetic_document(batches=2, batches_per_shard=1))
    assert first.poll_once()  # the job message: two shard messages sent
    outcomes: list[Any] = []
    lock = threading.Lock()

    def keep(outcome: Any) -> None:
        with lock:
            outcomes.append(outcome)

    first.on_job_outcome = second.on_job_outcome = keep
    threads = [threading.Thread(target=w.poll_once) for w in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    while len(outcomes) < 2 and first.poll_once():
        pass
    first.close()
    second.close()
    assert sorted(o.shard for o in outcomes) == [0, 1]
    assert [o.final for o in outcomes].count(True) == 1
    assert [n["status"] for n in notifications()] == ["succeeded"]


BAD_JOBS: list[tuple[str, bytes | dict[str, Any], str, str]] = [
    (
        "unknown-kind",
        {"version": 1, "kind": "poems", "params": {}},
        "kind 'poems' is not a known job kind (allowed: digits, mosaic, synthetic-stats)",
        "jobs/{}/",
    ),
    (
        "wrong-types",
        synthetic_document(batches="three", images_per_batch=2.5),
        "batches 'three' is a str, not an integer (allowed: 1-100000)",
        "results/{}/",
    ),
    (
        "bad-version",
        {**synthetic_document(), "version": 2},
        "version 2 is not supported (allowed: 1)",
        "results/{}/",
    ),
    ("not-json", b"{version: 1, kind: digits", "the document is not JSON", "jobs/{}/"),
    (
        "absurd-size",
        synthetic_document(batches=100_000, images_per_batch=10_000),
        "1000000000 images; at most 10000000 are allowed in one job",
        "results/{}/",
    ),
]


@pytest.mark.parametrize(
    ("job_id", "document", "reason", "prefix"), BAD_JOBS, ids=[b[0] for b in BAD_JOBS]
)
def test_a_bad_job_fails_with_its_reason_a_failed_manifest_and_one_notification(
    job_id: str,
    document: bytes | dict[str, Any],
    reason: str,
    prefix: str,
    session: boto3.Session,
    resources: LocalResources,
    worker: Worker,
    settings: Any,
    notifications: Callable[[], list[dict[str, Any]]],
    submit_job: Callable[..., int],
    run_jobs: Callable[..., list[Any]],
) -> None:
    submit_job(job_id, document)
    (outcome,) = run_jobs(worker)
    assert outcome.status == "failed"
    assert reason in (outcome.reason or "")
    (note,) = notifications()
    assert note["status"] == "failed"
    assert note["job_id"] == job_id
    assert reason in note["error"]
    results = resources.names.results_bucket
    manifest = json.loads(get_bytes(session, results, f"{prefix.format(job_id)}manifest.json"))
    assert manifest["status"] == "failed"
    assert reason in manifest["reason"]
    assert manifest["objects"] == []  # nothing was written before the job failed
    database = ResultsDatabase.from_url(settings.database_url)
    try:
        row = database.job_row(job_id)
    finally:
        database.close()
    assert row is not None
    assert row["status"] == "failed"
    assert reason in row["reason"]


def test_the_envelope_and_the_parameters_are_judged_together_in_one_reason(
    worker: Worker,
    notifications: Callable[[], list[dict[str, Any]]],
    submit_job: Callable[..., int],
    run_jobs: Callable[..., list[Any]],
) -> None:
    document = {
        "version": 1,
        "kind": "synthetic-stats",
        "params": {"batches": 0, "images_per_batch": "4", "colour": "red"},
        "priority": "high",
    }
    submit_job("many-1", document)
    (outcome,) = run_jobs(worker)
    reason = outcome.reason or ""
    for problem in (
        "unknown keys ['priority']",
        "params: unknown keys ['colour']",
        "params: batches 0 is out of range (allowed: 1-100000)",
        "params: images_per_batch '4' is a str, not an integer",
    ):
        assert problem in reason, (problem, reason)
    assert len(notifications()) == 1


def test_a_badly_named_job_document_is_kept_and_reported_as_a_bad_key(
    session: boto3.Session,
    resources: LocalResources,
    submit_job: Callable[..., int],
) -> None:
    from batch_counter.aws import DynamoTrackingStore

    submit_job("x", synthetic_document(), key="jobs/not a job id!.json")
    assert queue_bodies(session, resources.runs_queue_url) == []
    store = DynamoTrackingStore(
        client=session.client("dynamodb"), table_name=resources.names.tracking_table
    )
    (bad,) = store.bad_keys()
    assert bad["key"] == "jobs/not a job id!.json"
    assert bad["reason"] == "bad_job_key"
    assert get_bytes(session, resources.names.raw_bucket, bad["copied_to"].split("/", 3)[3])


class BrokenStore(S3ObjectStore):
    """The real S3 adapter, failing every write of a shard's part (an error that is retried)."""

    def put(self, bucket: str, key: str, data: bytes, **options: Any) -> None:
        if "/parts/" in key:
            raise RuntimeError(f"S3 is failing for {key}")
        super().put(bucket, key, data, **options)


def test_a_job_failing_on_every_receive_ends_failed_when_its_message_goes_to_the_dlq(
    session: boto3.Session,
    resources: LocalResources,
    worker: Worker,
    settings: Any,
    notifications: Callable[[], list[dict[str, Any]]],
    submit_job: Callable[..., int],
    run_jobs: Callable[..., list[Any]],
) -> None:
    from batch_stats.local.resources import RUNS_MAX_RECEIVES

    assert worker._jobs is not None
    worker._jobs._store = BrokenStore(session.client("s3"))
    submit_job("doomed-1", synthetic_document())
    (outcome,) = run_jobs(worker, timeout=120)
    assert outcome.status == "failed"
    assert f"gave up after {RUNS_MAX_RECEIVES} attempts" in (outcome.reason or "")
    assert "S3 is failing for results/doomed-1/parts/shard-00000.parquet" in (outcome.reason or "")
    (note,) = notifications()
    assert note["status"] == "failed"
    manifest = json.loads(
        get_bytes(session, resources.names.results_bucket, "results/doomed-1/manifest.json")
    )
    assert manifest["status"] == "failed"
    # The message itself is in the runs DLQ (for inspection); a redrive changes nothing.
    assert worker.poll_once() is False
    (dead,) = queue_bodies(session, resources.runs_dlq_url)
    assert dead["job_id"] == "doomed-1"
