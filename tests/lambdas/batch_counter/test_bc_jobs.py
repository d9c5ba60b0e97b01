"""Job documents (``jobs/<job_id>.json``) through the Lambda handler, on moto's server: one job
message per job id, whatever the duplicates; nothing uploaded is lost."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from batch_counter import handler
from batch_counter.aws import DynamoTrackingStore
from batch_counter.counter import MAX_JOB_DOCUMENT_BYTES, BatchCounter
from batch_stats.local.lambda_driver import SqsEventSource
from batch_stats.local.resources import LocalResources

DOCUMENT = {
    "version": 1,
    "kind": "synthetic-stats",
    "params": {"batches": 2, "images_per_batch": 3},
}


@pytest.fixture
def use_counter(monkeypatch: pytest.MonkeyPatch, counter: BatchCounter) -> BatchCounter:
    monkeypatch.setattr(handler, "_counter", lambda: counter)
    return counter


def put_and_route(session: boto3.Session, resources: LocalResources, key: str, body: bytes) -> None:
    session.client("s3").put_object(Bucket=resources.names.raw_bucket, Key=key, Body=body)
    source = SqsEventSource(
        sqs=session.client("sqs"),
        queue_url=resources.ingest_queue_url,
        handler=handler.lambda_handler,
    )
    while (polled := source.poll_once(wait_seconds=0)).received:
        assert polled.failed == 0


def test_a_job_document_is_sent_once_with_its_document(
    use_counter: BatchCounter,
    resources: LocalResources,
    session: boto3.Session,
    store: DynamoTrackingStore,
    drain: Any,
) -> None:
    body = json.dumps(DOCUMENT).encode()
    put_and_route(session, resources, "jobs/job-a.json", body)
    (message,) = drain(session.client("sqs"), resources.runs_queue_url)
    sent = json.loads(message["Body"])
    assert sent["type"] == "job"
    assert sent["job_id"] == "job-a"
    assert sent["document"] == body.decode()
    assert sent["failure"] is None
    assert message["Attributes"]["MessageDeduplicationId"] == "job-a.job"
    item = store.job_item("job-a")
    assert item is not None
    assert item["state"] == "DISPATCHED"
    assert int(item["size"]) == len(body)


def test_a_different_document_under_a_dispatched_id_is_kept_and_not_sent(
    use_counter: BatchCounter,
    resources: LocalResources,
    session: boto3.Session,
    store: DynamoTrackingStore,
    drain: Any,
) -> None:
    first = json.dumps(DOCUMENT).encode()
    second = json.dumps({**DOCUMENT, "params": {"batches": 9, "images_per_batch": 9}}).encode()
    put_and_route(session, resources, "jobs/job-b.json", first)
    put_and_route(session, resources, "jobs/job-b.json", second)
    (message,) = drain(session.client("sqs"), resources.runs_queue_url)
    assert json.loads(message["Body"])["document"] == first.decode()
    (duplicate,) = store.job_duplicates("job-b")
    bucket, key = duplicate["copied_to"].removeprefix("s3://").split("/", 1)
    kept = session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert kept == second
    assert key.startswith("rejected/jobs/job-b/")


def test_an_oversized_document_is_dispatched_as_a_failure_without_being_read(
    use_counter: BatchCounter, resources: LocalResources, session: boto3.Session, drain: Any
) -> None:
    body = b" " * (MAX_JOB_DOCUMENT_BYTES + 1)
    put_and_route(session, resources, "jobs/job-c.json", body)
    (message,) = drain(session.client("sqs"), resources.runs_queue_url)
    sent = json.loads(message["Body"])
    assert sent["document"] is None
    assert f"at most {MAX_JOB_DOCUMENT_BYTES} are allowed" in sent["failure"]


def test_a_document_that_is_not_utf8_is_dispatched_as_a_failure(
    use_counter: BatchCounter, resources: LocalResources, session: boto3.Session, drain: Any
) -> None:
    put_and_route(session, resources, "jobs/job-d.json", b"\xff\xfe{}")
    (message,) = drain(session.client("sqs"), resources.runs_queue_url)
    assert "not UTF-8" in json.loads(message["Body"])["failure"]


@pytest.mark.parametrize("key", ["jobs/job e.json", "jobs/job-f.txt", "jobs/sub/job-g.json"])
def test_a_badly_named_job_key_is_copied_and_reported(
    key: str,
    use_counter: BatchCounter,
    resources: LocalResources,
    session: boto3.Session,
    store: DynamoTrackingStore,
    drain: Any,
) -> None:
    put_and_route(session, resources, key, json.dumps(DOCUMENT).encode())
    assert drain(session.client("sqs"), resources.runs_queue_url, wait_seconds=0) == []
    (bad,) = store.bad_keys()
    assert (bad["key"], bad["reason"]) == (key, "bad_job_key")
    assert bad["copied_to"]
