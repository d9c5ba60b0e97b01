"""The batch counter against DynamoDB, SQS and S3 notifications in moto's server mode."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import boto3
import pytest
from batch_counter import handler
from batch_counter.aws import DynamoTrackingStore
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
        body = json.loads(message["Body"])
        assert (body["run_id"], body["first_batch"], body["last_batch"]) == ("r1", "b1", "b1")
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
    # A reference to the run and its shard, not a list of keys.
    assert body == {
        "version": 2,
        "run_id": "run-a",
        "bucket": resources.names.raw_bucket,
        "shard": 0,
        "shards": 1,
        "first_batch": "batch_001",
        "last_batch": "batch_002",
        "images": 6,
        "failure": None,
        "dispatched_at": body["dispatched_at"],
    }
    assert body["dispatched_at"].endswith("Z")
    run = use_counter.store.get_run("run-a")
    assert run is not None
    assert run.state is RunState.DISPATCHED


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
        assert by_sk["RUN"]["state"]["S"] == "DISPATCHED"
        assert by_sk["BATCH#batch_001"]["image_count"]["N"] == "3"
        assert by_sk["BATCH#batch_002"]["image_count"]["N"] == "3"
        assert sum(sk.startswith("OBJ#") for sk in by_sk) == 6
        assert store.run_objects(run_id)["batch_002"] == [
            f"uploads/{run_id}/batch_002/img_000{i}.png" for i in (1, 2, 3)
        ]


def test_bad_keys_are_recorded_not_failed_and_objects_kept(
    use_counter: BatchCounter,
    store: DynamoTrackingStore,
    resources: LocalResources,
    session: boto3.Session,
    drain: Any,
) -> None:
    s3, sqs = session.client("s3"), session.client("sqs")
    bucket = resources.names.raw_bucket
    # The last name holds a bell and a carriage return, which S3 metadata cannot carry as is.
    bad = [
        "uploads/run-b/img.png",
        "uploads/run b/batch_001/img.png",
        "uploads/r/b/x.jpeg",
        "uploads/r/b/bell\x07and\rreturn.png",
    ]
    for key in bad:
        s3.put_object(Bucket=bucket, Key=key, Body=PNG)
    source = SqsEventSource(
        sqs=sqs, queue_url=resources.ingest_queue_url, handler=handler.lambda_handler
    )
    total = 0
    while (polled := source.poll_once()).received:
        assert polled.failed == 0
        total += polled.received
    assert total == len(bad) + 1  # and the s3:TestEvent
    recorded = {item["key"]: item for item in store.bad_keys()}
    assert {key: item["reason"] for key, item in recorded.items()} == {
        "uploads/run-b/img.png": "wrong_depth",
        "uploads/run b/batch_001/img.png": "bad_run_id",
        "uploads/r/b/x.jpeg": "bad_name",
        "uploads/r/b/bell\x07and\rreturn.png": "bad_name",
    }
    for key in bad:
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(PNG)
        # Copied under rejected/ with its reason, under its run when the key names one.
        copied = recorded[key]["copied_to"].removeprefix(f"s3://{bucket}/")
        runs = {"uploads/run-b/img.png": "run-b", "uploads/run b/batch_001/img.png": "_unknown_run"}
        assert copied.startswith(f"rejected/{runs.get(key, 'r')}/_bad_keys/")
        head = s3.head_object(Bucket=bucket, Key=copied)
        assert head["ContentLength"] == len(PNG)
        assert head["Metadata"]["reason"] == recorded[key]["reason"]
        assert unquote(head["Metadata"]["source-key"]) == key
    # A bad key that names a valid run is also kept in that run's partition (its notification
    # and `batch-stats status` list it).
    run_items = session.client("dynamodb").query(
        TableName=resources.names.tracking_table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :b)",
        ExpressionAttributeValues={":pk": {"S": "RUN#run-b"}, ":b": {"S": "BADKEY#"}},
    )["Items"]
    assert [item["key"]["S"] for item in run_items] == ["uploads/run-b/img.png"]
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


def run_queue_has_message(sqs: Any, url: str) -> bool:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) > 0
