"""Fixtures: one moto server per session, fresh pipeline resources per test."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from batch_counter.aws import (
    DynamoTrackingStore,
    S3Objects,
    SchedulerRunChecks,
    SnsNotifier,
    SqsRunQueue,
)
from batch_counter.counter import BatchCounter
from batch_stats.local.resources import LocalResources, create_resources
from batch_stats.local.services import MotoEndpoint, moto_server

_stages = itertools.count()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[MotoEndpoint]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def session(moto_endpoint: MotoEndpoint, monkeypatch: pytest.MonkeyPatch) -> boto3.Session:
    """A boto3 session on the moto server; the variables stay set for the test (subprocesses)."""
    for name, value in moto_endpoint.environ().items():
        monkeypatch.setenv(name, value)
    return boto3.Session(region_name="us-east-1")


@pytest.fixture
def resources(session: boto3.Session) -> LocalResources:
    # A distinct stage per test keeps tests independent on the shared server.
    return create_resources(session, stage=f"bc{next(_stages)}", ingest_visibility_timeout=1)


@pytest.fixture
def store(session: boto3.Session, resources: LocalResources) -> DynamoTrackingStore:
    return DynamoTrackingStore(
        client=session.client("dynamodb"), table_name=resources.names.tracking_table
    )


@pytest.fixture
def run_queue(session: boto3.Session, resources: LocalResources) -> SqsRunQueue:
    return SqsRunQueue(client=session.client("sqs"), queue_url=resources.runs_queue_url)


@pytest.fixture
def objects(session: boto3.Session) -> S3Objects:
    return S3Objects(client=session.client("s3"))


@pytest.fixture
def counter(store: DynamoTrackingStore, run_queue: SqsRunQueue, objects: S3Objects) -> BatchCounter:
    return BatchCounter(
        store=store, queue=run_queue, objects=objects, images_per_batch=3, batches_per_run=2
    )


#: The function ARN the local Lambda context gives (what the check schedules invoke).
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:batch-counter"


@pytest.fixture
def checks(session: boto3.Session, resources: LocalResources) -> SchedulerRunChecks:
    return SchedulerRunChecks(
        client=session.client("scheduler"),
        group_name=resources.names.schedule_group,
        role_arn=resources.scheduler_role_arn,
        target_arn=FUNCTION_ARN,
    )


@pytest.fixture
def checking_counter(
    store: DynamoTrackingStore,
    run_queue: SqsRunQueue,
    objects: S3Objects,
    checks: SchedulerRunChecks,
    session: boto3.Session,
    resources: LocalResources,
) -> BatchCounter:
    """The counter as the handler builds it: with run checks and the notifications topic."""
    return BatchCounter(
        store=store,
        queue=run_queue,
        objects=objects,
        images_per_batch=3,
        batches_per_run=2,
        checks=checks,
        notifier=SnsNotifier(client=session.client("sns"), topic_arn=resources.topic_arn),
        run_timeout=timedelta(hours=1),
    )


Notifications = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def notifications(session: boto3.Session, resources: LocalResources) -> Notifications:
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
                envelope = json.loads(message["Body"])
                seen.append({"Subject": envelope.get("Subject"), **json.loads(envelope["Message"])})
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    return received


Drain = Callable[..., list[dict[str, Any]]]


@pytest.fixture
def drain() -> Drain:
    """Receive (and delete) every message currently on a queue."""
    return _drain


def _drain(sqs: Any, queue_url: str, *, wait_seconds: int = 1) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            return messages
        messages.extend(batch)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )
