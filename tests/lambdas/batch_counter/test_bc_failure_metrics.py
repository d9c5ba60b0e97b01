"""A record the handler fails on is counted (``RecordsFailed``) as well as retried by SQS."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from batch_counter import handler
from batch_counter.aws import DynamoTrackingStore, S3Objects, SqsRunQueue
from batch_counter.counter import BatchCounter
from batch_stats.local.lambda_driver import SqsEventSource
from batch_stats.local.resources import LocalResources

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def _emf_values(output: str, name: str) -> list[float]:
    values = []
    for line in output.splitlines():
        try:
            document = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(document, dict) and "_aws" in document and name in document:
            value = document[name]
            values.extend(value if isinstance(value, list) else [value])
    return values


def test_a_failed_record_is_counted_and_left_for_sqs(
    monkeypatch: pytest.MonkeyPatch,
    resources: LocalResources,
    session: boto3.Session,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The table the counter writes to does not exist: DynamoDB refuses every record.
    broken = BatchCounter(
        store=DynamoTrackingStore(client=session.client("dynamodb"), table_name="no-such-table"),
        queue=SqsRunQueue(client=session.client("sqs"), queue_url=resources.runs_queue_url),
        objects=S3Objects(client=session.client("s3")),
        images_per_batch=3,
        batches_per_run=2,
    )
    monkeypatch.setattr(handler, "_counter", lambda: broken)
    s3 = session.client("s3")
    s3.put_object(Bucket=resources.names.raw_bucket, Key="uploads/r1/b1/a.png", Body=PNG)
    source = SqsEventSource(
        sqs=session.client("sqs"),
        queue_url=resources.ingest_queue_url,
        handler=handler.lambda_handler,
    )
    failed = 0
    for _ in range(5):
        polled: Any = source.poll_once()
        failed += polled.failed
        if failed:
            break
    assert failed >= 1
    assert sum(_emf_values(capsys.readouterr().out, "RecordsFailed")) == failed
