"""The batch counter against DynamoDB, SQS and S3 notifications in moto's server mode."""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from batch_counter import handler
from batch_counter.aws import DynamoTrackingStore, SqsRunQueue
from batch_counter.counter import BatchCounter, RunState
from batch_stats.local.lambda_driver import SqsEventSource, sqs_event
from batch_stats.local.resources import LocalResources

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def upload_run(s3: Any, bucket: str, run_id: str, *, batches: int = 2, images: int = 3) -> None:
    for b in range(1, batches + 1):
        for i in range(1, images + 1):
            s3.put_object(
                Bucket=bucket, Key=f"uploads/{run_id}/batch_{b:03d}/img_{i:04d}.png", Body=PNG
            )


@pytest.fixture
def use_counter(monkeypatch: pytest.MonkeyPatch, counter: BatchCounter) -> BatchCounter:
    """Make the Lambda handler use the test's counter (the settings path is tested separately)."""
    monkeypatch.setattr(handler, "_counter", lambda: counter)
    return counter


def test_handler_reads_its_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, resources: LocalResources, session: boto3.Session, drain: Any
) -> None:
    for name, value in resources.lambda_environ(images_per_batch=1, batches_per_run=1).items():
        monkeypatch.setenv(name, value)
    handler._counter.cache_clear()
    try:
        s3 = session.client("s3")
        s3.put_object(Bucket=resources.names.raw_bucket, Key="uploads/r1/b1/a.png", Body=PNG)
        sqs = session.client("sqs")
        source = SqsEventSource(
            sqs=sqs, queue_url=resources.ingest_queue_url, handler=handler.lambda_handler
        )
        while source.poll_once().received:
            pass
        (message,) = drain(sqs, resources.runs_queue_url)
        assert json.loads(message["Body"])["batches"] == {"b1": ["uploads/r1/b1/a.png"]}
    finally:
        handler._counter.cache_clear()


def test_whole_run_is_dispatched_once_from_real_s3_events(
    use_counter: BatchCounter, resources: LocalResources, session: boto3.Session, drain: Any
) -> None:
    s3, sqs = session.client("s3"), session.client("sqs")
    upload_run(s3, resources.names.raw_bucket, "run-a")
    source = SqsEventSource(
        sqs=sqs, queue_url=resources.ingest_queue_url, handler=handler.lambda_handler
    )
    received = 0
    while (polled := source.poll_once()).received:
        assert polled.failed == 0
        received += polled.received
    assert received == 6 + 1  # the uploads, and the s3:TestEvent of the notification setup
    (message,) = drain(sqs, resources.runs_queue_url)
    body = json.loads(message["Body"])
    assert body["version"] == 1
    assert body["run_id"] == "run-a"
    assert body["bucket"] == resources.names.raw_bucket
    assert body["prefix"] == "uploads/run-a/"
    assert body["batches"] == {
        f"batch_00{b}": [f"uploads/run-a/batch_00{b}/img_000{i}.png" for i in (1, 2, 3)]
        for b in (1, 2)
    }
    assert (body["images_per_batch"], body["batches_per_run"]) == (3, 2)
    assert body["dispatched_at"].endswith("Z")
    status = use_counter.store.run_status("run-a")
    assert status is not None
    assert status.state is RunState.DISPATCHED


def test_duplicated_shuffled_concurrent_events_give_one_message_per_run(
    counter: BatchCounter,
    store: DynamoTrackingStore,
    resources: LocalResources,
    session: boto3.Session,
    drain: Any,
) -> None:
    s3, sqs = session.client("s3"), session.client("sqs")
    runs = [f"run-{n:02d}" for n in range(10)]
    for run_id in runs:
        upload_run(s3, resources.names.raw_bucket, run_id)
    events = [e for e in drain(sqs, resources.ingest_queue_url) if "Records" in e["Body"]]
    assert len(events) == 60
    rng = random.Random(7)
    deliveries = [
        (event["Body"], f"{event['MessageId']}-{copy}")
        for event in events
        for copy in range(rng.choice((2, 3)))
    ]
    rng.shuffle(deliveries)
    now = datetime.now(UTC)

    def deliver(delivery: tuple[str, str]) -> None:
        body, message_id = delivery
        counter.handle_record(body, message_id=message_id, now=now)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(deliver, deliveries))

    messages = drain(sqs, resources.runs_queue_url)
    dispatched = sorted(json.loads(m["Body"])["run_id"] for m in messages)
    assert dispatched == runs
    dynamodb = session.client("dynamodb")
    for run_id in runs:
        items = dynamodb.query(
            TableName=resources.names.tracking_table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"RUN#{run_id}"}},
            ConsistentRead=True,
        )["Items"]
        by_sk = {item["sk"]["S"]: item for item in items}
        assert by_sk["RUN"]["image_count"]["N"] == "6"
        assert by_sk["RUN"]["complete_batches"]["N"] == "2"
        assert by_sk["BATCH#batch_001"]["image_count"]["N"] == "3"
        assert by_sk["BATCH#batch_002"]["image_count"]["N"] == "3"
        assert sum(sk.startswith("OBJ#") for sk in by_sk) == 6
        assert store.run_objects(run_id)["batch_002"] == [
            f"uploads/{run_id}/batch_002/img_000{i}.png" for i in (1, 2, 3)
        ]


class FailingOnce:
    """The real SQS run queue, with a crash injected before the first send reaches SQS."""

    def __init__(self, inner: SqsRunQueue) -> None:
        self.inner = inner
        self.calls = 0

    def send_run(self, body: str) -> str:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("simulated network failure after the state change")
        return self.inner.send_run(body)


def test_failure_between_state_change_and_send_is_dispatched_on_retry(
    monkeypatch: pytest.MonkeyPatch,
    store: DynamoTrackingStore,
    run_queue: SqsRunQueue,
    resources: LocalResources,
    session: boto3.Session,
    drain: Any,
) -> None:
    queue = FailingOnce(run_queue)
    counter = BatchCounter(store=store, queue=queue, images_per_batch=3, batches_per_run=1)
    monkeypatch.setattr(handler, "_counter", lambda: counter)
    s3, sqs = session.client("s3"), session.client("sqs")
    upload_run(s3, resources.names.raw_bucket, "run-f", batches=1)
    events = [e for e in drain(sqs, resources.ingest_queue_url) if "Records" in e["Body"]]
    queue_arn = "arn:aws:sqs:us-east-1:123456789012:ingest"
    from batch_stats.local.lambda_driver import LocalLambdaContext

    response = handler.lambda_handler(sqs_event(events, queue_arn=queue_arn), LocalLambdaContext())
    (failure,) = response["batchItemFailures"]
    status = store.run_status("run-f")
    assert status is not None
    assert status.state is RunState.DISPATCHING
    assert drain(sqs, resources.runs_queue_url, wait_seconds=0) == []

    # Another delivery of some other event of the run finds DISPATCHING owned by someone else
    # within the lease: it must not send.
    others = [e for e in events if e["MessageId"] != failure["itemIdentifier"]]
    response = handler.lambda_handler(sqs_event(others, queue_arn=queue_arn), LocalLambdaContext())
    assert response["batchItemFailures"] == []
    assert drain(sqs, resources.runs_queue_url, wait_seconds=0) == []

    # The retry of the failed record (same SQS message id) sends the run.
    retried = [e for e in events if e["MessageId"] == failure["itemIdentifier"]]
    response = handler.lambda_handler(sqs_event(retried, queue_arn=queue_arn), LocalLambdaContext())
    assert response["batchItemFailures"] == []
    (message,) = drain(sqs, resources.runs_queue_url)
    assert json.loads(message["Body"])["run_id"] == "run-f"
    status = store.run_status("run-f")
    assert status is not None
    assert status.state is RunState.DISPATCHED


def test_expired_dispatch_claim_is_taken_over(
    store: DynamoTrackingStore,
    run_queue: SqsRunQueue,
    resources: LocalResources,
    session: boto3.Session,
    drain: Any,
) -> None:
    queue = FailingOnce(run_queue)
    counter = BatchCounter(
        store=store, queue=queue, images_per_batch=1, batches_per_run=1, lease_seconds=0
    )
    session.client("s3").put_object(
        Bucket=resources.names.raw_bucket, Key="uploads/run-l/b/a.png", Body=PNG
    )
    (event,) = [
        e
        for e in drain(session.client("sqs"), resources.ingest_queue_url)
        if "Records" in e["Body"]
    ]
    with pytest.raises(ConnectionError):
        counter.handle_record(event["Body"], message_id="first", now=datetime.now(UTC))
    # A duplicate event under another message id takes the expired claim over and sends.
    result = counter.handle_record(event["Body"], message_id="second", now=datetime.now(UTC))
    assert result.dispatched_runs == ["run-l"]
    assert len(drain(session.client("sqs"), resources.runs_queue_url)) == 1


def test_bad_keys_are_recorded_not_failed_and_objects_kept(
    use_counter: BatchCounter,
    store: DynamoTrackingStore,
    resources: LocalResources,
    session: boto3.Session,
    drain: Any,
) -> None:
    s3, sqs = session.client("s3"), session.client("sqs")
    bucket = resources.names.raw_bucket
    bad = ["uploads/run-b/img.png", "uploads/run b/batch_001/img.png", "uploads/r/b/x.jpeg"]
    for key in bad:
        s3.put_object(Bucket=bucket, Key=key, Body=PNG)
    source = SqsEventSource(
        sqs=sqs, queue_url=resources.ingest_queue_url, handler=handler.lambda_handler
    )
    total = 0
    while (polled := source.poll_once()).received:
        assert polled.failed == 0
        total += polled.received
    assert total == 3 + 1  # and the s3:TestEvent
    recorded = {item["key"]: item["reason"] for item in store.bad_keys()}
    assert recorded == {
        "uploads/run-b/img.png": "wrong_depth",
        "uploads/run b/batch_001/img.png": "bad_run_id",
        "uploads/r/b/x.jpeg": "bad_name",
    }
    for key in bad:
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(PNG)
    assert drain(sqs, resources.runs_queue_url, wait_seconds=0) == []


def test_non_s3_records_do_not_loop(use_counter: BatchCounter) -> None:
    from batch_stats.local.lambda_driver import LocalLambdaContext

    event = sqs_event(
        [
            {"MessageId": "m1", "ReceiptHandle": "r", "Body": "{not json", "MD5OfBody": ""},
            {
                "MessageId": "m2",
                "ReceiptHandle": "r",
                "Body": json.dumps({"Event": "s3:TestEvent"}),
                "MD5OfBody": "",
            },
        ],
        queue_arn="arn:aws:sqs:us-east-1:123456789012:ingest",
    )
    assert handler.lambda_handler(event, LocalLambdaContext())["batchItemFailures"] == []


def test_event_source_redelivers_only_the_failed_record(
    monkeypatch: pytest.MonkeyPatch,
    store: DynamoTrackingStore,
    run_queue: SqsRunQueue,
    resources: LocalResources,
    session: boto3.Session,
    drain: Any,
) -> None:
    queue = FailingOnce(run_queue)
    counter = BatchCounter(store=store, queue=queue, images_per_batch=3, batches_per_run=2)
    monkeypatch.setattr(handler, "_counter", lambda: counter)
    upload_run(session.client("s3"), resources.names.raw_bucket, "run-r")
    sqs = session.client("sqs")
    source = SqsEventSource(
        sqs=sqs, queue_url=resources.ingest_queue_url, handler=handler.lambda_handler
    )
    failed = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        polled = source.poll_once()
        failed += polled.failed
        if not polled.received and run_queue_has_message(sqs, resources.runs_queue_url):
            break
    assert failed == 1  # the record whose send failed, redelivered after its visibility timeout
    (message,) = drain(sqs, resources.runs_queue_url)
    assert json.loads(message["Body"])["run_id"] == "run-r"


def run_queue_has_message(sqs: Any, url: str) -> bool:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) > 0
