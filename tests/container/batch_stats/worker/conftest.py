"""Fixture chain: moto server and PostgreSQL per session; resources, database, worker per test."""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from batch_counter.aws import DynamoTrackingStore, S3Objects, SqsRunQueue
from batch_counter.counter import BatchCounter
from batch_stats.engine import EngineParams
from batch_stats.local.resources import LocalResources, create_resources
from batch_stats.local.services import (
    MotoEndpoint,
    embedded_postgres,
    moto_server,
)
from batch_stats.worker.app import build_worker
from batch_stats.worker.config import WorkerSettings
from batch_stats.worker.runner import Worker
from batch_stats.worker.upload import PlannedUpload, upload_run

#: Small images and runs: the behaviour under test does not depend on size.
SMALL = EngineParams(
    square_size=8,
    crop_height=32,
    crop_width=32,
    image_height=48,
    image_width=64,
    images_per_batch=3,
    batches=2,
)
VISIBILITY = 2
_ids = itertools.count()


@pytest.fixture
def small() -> EngineParams:
    return SMALL


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[MotoEndpoint]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    # Not under pytest's basetemp: as root, pgserver runs PostgreSQL as the user "pgserver",
    # which must traverse the parent folders, and pytest resets its basetemp root to 0700.
    with (
        tempfile.TemporaryDirectory(prefix="imgpipe-test-pg-") as data_dir,
        embedded_postgres(Path(data_dir) / "pgdata") as url,
    ):
        yield url


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """A fresh, empty database for this test."""
    name = f"worker_test_{next(_ids)}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return psycopg.conninfo.make_conninfo(postgres_url, dbname=name)


@pytest.fixture
def session(moto_endpoint: MotoEndpoint, monkeypatch: pytest.MonkeyPatch) -> boto3.Session:
    """A boto3 session on the moto server; the variables stay set for the test (subprocesses)."""
    for name, value in moto_endpoint.environ().items():
        monkeypatch.setenv(name, value)
    return boto3.Session(region_name="us-east-1")


@pytest.fixture
def resources(session: boto3.Session) -> LocalResources:
    return create_resources(session, stage=f"wk{next(_ids)}", runs_visibility_timeout=VISIBILITY)


@pytest.fixture
def notifications(
    session: boto3.Session, resources: LocalResources
) -> Callable[[], list[dict[str, Any]]]:
    """Subscribe an SQS queue to the topic; the fixture returns the messages received so far."""
    sqs = session.client("sqs")
    url = sqs.create_queue(QueueName=f"{resources.names.topic}-probe")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    session.client("sns").subscribe(TopicArn=resources.topic_arn, Protocol="sqs", Endpoint=arn)
    seen: list[dict[str, Any]] = []

    def received() -> list[dict[str, Any]]:
        while True:
            batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                return list(seen)
            for message in batch:
                seen.append(json.loads(json.loads(message["Body"])["Message"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    return received


@pytest.fixture
def settings(resources: LocalResources, database_url: str) -> WorkerSettings:
    return WorkerSettings(
        runs_queue_url=resources.runs_queue_url,
        raw_bucket=resources.names.raw_bucket,
        results_bucket=resources.names.results_bucket,
        notifications_topic_arn=resources.topic_arn,
        tracking_table_name=resources.names.tracking_table,
        database_url=database_url,
        download_concurrency=4,
        visibility_timeout_seconds=VISIBILITY,
    )


@pytest.fixture
def make_worker(session: boto3.Session, settings: WorkerSettings) -> Callable[..., Worker]:
    def make(**overrides: Any) -> Worker:
        worker = build_worker(
            overrides.pop("settings", settings),
            session=session,
            params=overrides.pop("params", SMALL),
            wait_seconds=overrides.pop("wait_seconds", 1),
            retry_delay_seconds=overrides.pop("retry_delay_seconds", 0),
        )
        assert not overrides, overrides
        return worker

    return make


@pytest.fixture
def worker(make_worker: Callable[..., Worker]) -> Worker:
    worker = make_worker()
    worker.migrate()
    return worker


def make_counter(
    session: boto3.Session,
    resources: LocalResources,
    *,
    images_per_batch: int,
    batches: int,
    shard_images: int = 5000,
) -> BatchCounter:
    """The batch counter as the stack configures it (its stack defaults are the run's shape)."""
    return BatchCounter(
        store=DynamoTrackingStore(
            client=session.client("dynamodb"), table_name=resources.names.tracking_table
        ),
        queue=SqsRunQueue(client=session.client("sqs"), queue_url=resources.runs_queue_url),
        objects=S3Objects(client=session.client("s3")),
        images_per_batch=images_per_batch,
        batches_per_run=batches,
        shard_images=shard_images,
    )


def count_uploads(session: boto3.Session, resources: LocalResources, counter: BatchCounter) -> int:
    """Hand every S3 event on the ingest queue to the batch counter; return how many."""
    sqs = session.client("sqs")
    handled = 0
    while batch := sqs.receive_message(
        QueueUrl=resources.ingest_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    ).get("Messages", []):
        for message in batch:
            counter.handle_record(
                message["Body"], message_id=message["MessageId"], now=datetime.now(UTC)
            )
            sqs.delete_message(
                QueueUrl=resources.ingest_queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
            handled += 1
    return handled


@pytest.fixture
def send_raw(session: boto3.Session, resources: LocalResources) -> Callable[[str], None]:
    """Put a hand-made message on the FIFO runs queue."""

    def send(body: str) -> None:
        session.client("sqs").send_message(
            QueueUrl=resources.runs_queue_url,
            MessageBody=body,
            MessageGroupId="raw",
            MessageDeduplicationId=str(next(_ids)),
        )

    return send


@pytest.fixture
def dispatch_run(
    session: boto3.Session, resources: LocalResources
) -> Callable[..., list[PlannedUpload]]:
    """Upload a synthetic run and let the real batch counter close it and send its messages."""

    def dispatch(
        run_id: str,
        *,
        params: EngineParams = SMALL,
        bad: tuple[str, ...] = (),
        shard_images: int = 5000,
    ) -> list[PlannedUpload]:
        uploads = upload_run(
            session.client("s3"), resources.names.raw_bucket, run_id, params=params, bad=bad
        )
        counter = make_counter(
            session,
            resources,
            images_per_batch=params.images_per_batch,
            batches=params.batches,
            shard_images=shard_images,
        )
        count_uploads(session, resources, counter)
        return uploads

    return dispatch


JobDocument = dict[str, Any] | bytes


@pytest.fixture
def submit_job(session: boto3.Session, resources: LocalResources) -> Callable[..., int]:
    """Upload a job document to ``jobs/<job_id>.json`` and let the real batch counter route the
    S3 events (every event on the ingest queue); return how many events it handled."""

    def submit(job_id: str, document: JobDocument, *, key: str | None = None) -> int:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        session.client("s3").put_object(
            Bucket=resources.names.raw_bucket, Key=key or f"jobs/{job_id}.json", Body=body
        )
        counter = make_counter(session, resources, images_per_batch=3, batches=2)
        return count_uploads(session, resources, counter)

    return submit


@pytest.fixture
def run_jobs() -> Callable[..., list[Any]]:
    """Let a worker take messages until ``jobs`` jobs have ended; return their final outcomes."""

    def run(worker: Worker, *, jobs: int = 1, timeout: float = 60) -> list[Any]:
        import time

        ended: list[Any] = []

        def keep(outcome: Any) -> None:
            if outcome.final:
                ended.append(outcome)

        worker.on_job_outcome = keep
        deadline = time.monotonic() + timeout
        try:
            while len(ended) < jobs:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(ended)} of {jobs} jobs ended in {timeout} s")
                worker.poll_once()
        finally:
            worker.on_job_outcome = None
        return ended

    return run


def get_bytes(session: boto3.Session, bucket: str, key: str) -> bytes:
    """An object's bytes, read through the session's S3 client."""
    return bytes(session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
