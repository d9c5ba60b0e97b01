"""Run a Lambda handler in-process the way an SQS event source mapping does.

moto cannot run Lambda functions, so local mode polls the ingest queue itself, hands the real
messages to the handler as a Lambda SQS event, and deletes the records the handler did not
report in ``batchItemFailures`` (failed records reappear after the visibility timeout, as in AWS).
Nor does it fire EventBridge Scheduler schedules: :class:`ScheduleDriver` fires the due ones.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass(frozen=True)
class LocalLambdaContext:
    """The attributes of the Lambda runtime's context object that Powertools reads."""

    function_name: str = "batch-counter"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:batch-counter"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/batch-counter"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def sqs_event(
    messages: list[dict[str, Any]], *, queue_arn: str, region: str = "us-east-1"
) -> dict[str, Any]:
    """The Lambda SQS event for messages received with ``AttributeNames=["All"]``."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


@dataclass
class PollResult:
    received: int = 0
    failed: int = 0


class SqsEventSource:
    """Polls a queue and invokes a handler with batches of its messages."""

    def __init__(
        self, *, sqs: Any, queue_url: str, handler: LambdaHandler, batch_size: int = 10
    ) -> None:
        self._sqs = sqs
        self._url = queue_url
        self._handler = handler
        self._batch_size = batch_size
        self._arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]

    def poll_once(self, *, wait_seconds: int = 1) -> PollResult:
        """Receive one batch, invoke the handler, delete the records that succeeded."""
        messages = self._sqs.receive_message(
            QueueUrl=self._url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return PollResult()
        response = self._handler(sqs_event(messages, queue_arn=self._arn), LocalLambdaContext())
        failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self._sqs.delete_message_batch(
                QueueUrl=self._url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
        return PollResult(received=len(messages), failed=len(failed))


def parse_at(expression: str) -> datetime:
    """The moment of a one-time ``at(yyyy-mm-ddThh:mm:ss)`` expression (UTC)."""
    if not (expression.startswith("at(") and expression.endswith(")")):
        raise ValueError(f"{expression!r} is not a one-time schedule expression 'at(...)'")
    return datetime.fromisoformat(expression[3:-1]).replace(tzinfo=UTC)


class ScheduleDriver:
    """Fires the due one-time schedules of a group, as EventBridge Scheduler does in AWS.

    moto stores schedules but never fires them: this reads them back, invokes the handler with
    each due schedule's ``Input`` and, as ``ActionAfterCompletion=DELETE`` does, deletes the
    schedule once the invocation succeeded (one that raised stays and fires again).
    """

    def __init__(self, *, scheduler: Any, group_name: str, handler: LambdaHandler) -> None:
        self._scheduler = scheduler
        self._group = group_name
        self._handler = handler

    def pending(self) -> list[dict[str, Any]]:
        """The group's schedules (full descriptions)."""
        names = [
            s["Name"]
            for page in self._scheduler.get_paginator("list_schedules").paginate(
                GroupName=self._group
            )
            for s in page["Schedules"]
        ]
        return [self._scheduler.get_schedule(GroupName=self._group, Name=n) for n in names]

    def fire_due(self, *, now: datetime | None = None) -> list[dict[str, Any]]:
        """Invoke the handler for every schedule due at ``now``; return the handler's results."""
        moment = now or datetime.now(UTC)
        results: list[dict[str, Any]] = []
        due = [s for s in self.pending() if parse_at(s["ScheduleExpression"]) <= moment]
        for schedule in sorted(due, key=lambda s: parse_at(s["ScheduleExpression"])):
            event = json.loads(schedule["Target"]["Input"])
            results.append(self._handler(event, LocalLambdaContext()))
            if schedule.get("ActionAfterCompletion") == "DELETE":
                self._scheduler.delete_schedule(GroupName=self._group, Name=schedule["Name"])
        return results
