"""DynamoDB calls per object, and exactly-once dispatch under faults around every AWS call.

Calls are counted and faults injected with botocore's own ``before-call`` / ``after-call``
events on the real clients (moto server behind them): a fault "before" is a request that never
reached AWS, a fault "after" is one that AWS applied but whose response was lost.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from batch_counter import handler
from batch_counter.aws import DynamoTrackingStore, S3Objects, SqsRunQueue
from batch_counter.counter import BatchCounter, RunState
from batch_stats.local.lambda_driver import LocalLambdaContext, sqs_event
from batch_stats.local.resources import LocalResources

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


class InjectedFaultError(ConnectionError):
    pass


class CallLog:
    """Every API call the clients make, as ``service.Operation``, and an optional fault."""

    def __init__(self, *clients: Any) -> None:
        self.calls: list[str] = []
        self.fault_at: int | None = None
        self.fault_mode = "before"
        for client in clients:
            client.meta.events.register("before-call.*.*", self._before)
            client.meta.events.register("after-call.*.*", self._after)

    def _name(self, model: Any) -> str:
        return f"{model.service_model.service_name}.{model.name}"

    def _before(self, model: Any, **_: Any) -> None:
        self.calls.append(self._name(model))
        if self.fault_at == len(self.calls) - 1 and self.fault_mode == "before":
            raise InjectedFaultError(f"request {self._name(model)} lost before reaching AWS")

    def _after(self, model: Any, **_: Any) -> None:
        if self.fault_at == len(self.calls) - 1 and self.fault_mode == "after":
            raise InjectedFaultError(f"response of {self._name(model)} lost after AWS applied it")

    @contextmanager
    def window(self) -> Iterator[list[str]]:
        start = len(self.calls)
        seen: list[str] = []
        yield seen
        seen.extend(self.calls[start:])


def make_counter(session: boto3.Session, resources: LocalResources, **options: Any) -> Any:
    ddb, sqs, s3 = session.client("dynamodb"), session.client("sqs"), session.client("s3")
    log = CallLog(ddb, sqs, s3)
    counter = BatchCounter(
        store=DynamoTrackingStore(client=ddb, table_name=resources.names.tracking_table),
        queue=SqsRunQueue(client=sqs, queue_url=resources.runs_queue_url),
        objects=S3Objects(client=s3),
        images_per_batch=options.get("images_per_batch", 3),
        batches_per_run=options.get("batches_per_run", 2),
        shard_images=options.get("shard_images", 3),
    )
    return counter, log


def upload_events(
    session: boto3.Session, resources: LocalResources, run_id: str, drain: Any, *, batches: int = 2
) -> list[dict[str, Any]]:
    s3 = session.client("s3")
    for b in range(1, batches + 1):
        for i in range(1, 4):
            s3.put_object(
                Bucket=resources.names.raw_bucket,
                Key=f"uploads/{run_id}/batch_{b:03d}/img_{i:04d}.png",
                Body=PNG,
            )
    events = drain(session.client("sqs"), resources.ingest_queue_url)
    return [e for e in events if "Records" in e["Body"]]


def test_an_object_costs_two_dynamodb_calls_in_the_common_case(
    session: boto3.Session, resources: LocalResources, drain: Any
) -> None:
    counter, log = make_counter(session, resources)
    events = upload_events(session, resources, "run-calls", drain)
    now = datetime.now(UTC)
    per_object: list[list[str]] = []
    for event in events:
        with log.window() as seen:
            counter.handle_record(event["Body"], message_id=event["MessageId"], now=now)
        per_object.append(seen)
    # Every object that does not close the run: one transaction and one read of the run item.
    for seen in per_object[:-1]:
        assert seen == ["dynamodb.TransactWriteItems", "dynamodb.GetItem"]
    # The object that closes it also reads the batch counts, claims, sends each shard, marks.
    assert per_object[-1] == [
        "dynamodb.TransactWriteItems",
        "dynamodb.GetItem",
        "dynamodb.Query",
        "dynamodb.UpdateItem",
        "sqs.SendMessage",
        "sqs.SendMessage",
        "dynamodb.UpdateItem",
    ]
    # Duplicates cost the same two calls and change nothing.
    for event in events[:3]:
        with log.window() as seen:
            result = counter.handle_record(event["Body"], message_id="again", now=now)
        assert [o.value for _, o in result.outcomes] == ["duplicate"]
        assert seen.count("dynamodb.TransactWriteItems") == 1
        assert not any(call.startswith("sqs.") for call in seen)
    assert not any(call == "dynamodb.Scan" for seen in per_object for call in seen)


@pytest.mark.parametrize("mode", ["before", "after"])
def test_dispatch_is_exactly_once_under_a_fault_around_every_call(
    mode: str, session: boto3.Session, resources: LocalResources, drain: Any
) -> None:
    counter, log = make_counter(session, resources)
    sqs = session.client("sqs")
    # A clean run gives the calls of the closing record (7, see the test above).
    events = upload_events(session, resources, "clean", drain)
    now = datetime.now(UTC)
    for event in events[:-1]:
        counter.handle_record(event["Body"], message_id=event["MessageId"], now=now)
    with log.window() as closing_calls:
        counter.handle_record(events[-1]["Body"], message_id="closing", now=now)
    assert len(drain(sqs, resources.runs_queue_url)) == 2
    for index, call in enumerate(closing_calls):
        run_id = f"fault-{mode}-{index}"
        events = upload_events(session, resources, run_id, drain)
        for event in events[:-1]:
            counter.handle_record(event["Body"], message_id=event["MessageId"], now=now)
        log.fault_mode = mode
        log.fault_at = len(log.calls) + index
        with pytest.raises(InjectedFaultError):
            counter.handle_record(events[-1]["Body"], message_id="closing", now=now)
        log.fault_at = None
        # SQS delivers the failed record again; a duplicate S3 event of another object arrives.
        counter.handle_record(events[-1]["Body"], message_id="closing", now=now)
        counter.handle_record(events[0]["Body"], message_id="duplicate", now=now)
        messages = [json.loads(m["Body"]) for m in drain(sqs, resources.runs_queue_url)]
        assert sorted((m["run_id"], m["shard"]) for m in messages) == [
            (run_id, 0),
            (run_id, 1),
        ], f"fault {mode} {call} (call {index})"
        run = counter.store.get_run(run_id)
        assert run is not None
        assert run.state is RunState.DISPATCHED


def test_uploads_after_the_run_closed_are_late_kept_and_counted_apart(
    monkeypatch: pytest.MonkeyPatch,
    session: boto3.Session,
    resources: LocalResources,
    drain: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    counter, _ = make_counter(session, resources)
    monkeypatch.setattr(handler, "_counter", lambda: counter)
    events = upload_events(session, resources, "run-late", drain)
    queue_arn = "arn:aws:sqs:us-east-1:123456789012:ingest"
    handler.lambda_handler(sqs_event(events, queue_arn=queue_arn), LocalLambdaContext())
    assert len(drain(session.client("sqs"), resources.runs_queue_url)) == 2
    capsys.readouterr()
    s3 = session.client("s3")
    s3.put_object(
        Bucket=resources.names.raw_bucket, Key="uploads/run-late/batch_001/extra.png", Body=PNG
    )
    late = [e for e in drain(session.client("sqs"), resources.ingest_queue_url)]
    handler.lambda_handler(sqs_event(late + late, queue_arn=queue_arn), LocalLambdaContext())
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    totals: dict[str, float] = {}
    for document in emf:
        for metric in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            value = document[metric["Name"]]
            totals[metric["Name"]] = totals.get(metric["Name"], 0) + (
                sum(value) if isinstance(value, list) else value
            )
    assert totals.get("LateUploads") == 1
    assert "ImagesRecorded" not in totals
    # Not part of the run (the worker reads OBJ# items): kept apart, and no second dispatch.
    store = counter.store
    assert store.run_objects("run-late")["batch_001"] == [
        f"uploads/run-late/batch_001/img_000{i}.png" for i in (1, 2, 3)
    ]
    items = session.client("dynamodb").query(
        TableName=resources.names.tracking_table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :late)",
        ExpressionAttributeValues={":pk": {"S": "RUN#run-late"}, ":late": {"S": "LATE#"}},
    )["Items"]
    assert [(i["key"]["S"], i["reason"]["S"]) for i in items] == [
        ("uploads/run-late/batch_001/extra.png", "after_dispatch")
    ]
    assert drain(session.client("sqs"), resources.runs_queue_url, wait_seconds=0) == []
    assert s3.head_object(
        Bucket=resources.names.raw_bucket, Key="uploads/run-late/batch_001/extra.png"
    )


def test_a_run_without_manifest_closes_on_the_stack_shape_and_reports_the_rest(
    session: boto3.Session, resources: LocalResources, drain: Any
) -> None:
    # The documented rule: without a manifest a run is closed the moment it holds exactly
    # BATCHES_PER_RUN batches of exactly IMAGES_PER_BATCH images; what it holds then is its
    # set, and every later upload is a late one, kept and reported (never added).
    counter, _ = make_counter(session, resources)
    events = upload_events(session, resources, "run-extra", drain, batches=3)
    now = datetime.now(UTC)
    outcomes = []
    for event in reversed(events):
        outcomes += counter.handle_record(event["Body"], message_id="m", now=now).outcomes
    messages = [
        json.loads(m["Body"]) for m in drain(session.client("sqs"), resources.runs_queue_url)
    ]
    assert sorted((m["first_batch"], m["images"]) for m in messages) == [
        ("batch_002", 3),
        ("batch_003", 3),
    ]
    assert [o.value for _, o in outcomes].count("late") == 3
    assert sorted(counter.store.run_objects("run-extra")) == ["batch_002", "batch_003"]

    # A batch over IMAGES_PER_BATCH before the shape is met: the run cannot be the stack's
    # shape, so it is not closed on a subset; it waits for a manifest (or is reported
    # incomplete).
    s3 = session.client("s3")
    for b, count in (("batch_001", 4), ("batch_002", 3)):
        for i in range(count):
            s3.put_object(
                Bucket=resources.names.raw_bucket, Key=f"uploads/run-over/{b}/{i}.png", Body=PNG
            )
    for event in drain(session.client("sqs"), resources.ingest_queue_url):
        counter.handle_record(event["Body"], message_id="m", now=now)
    assert drain(session.client("sqs"), resources.runs_queue_url, wait_seconds=0) == []
    run = counter.store.get_run("run-over")
    assert run is not None
    assert (run.state, run.image_count) == (RunState.OPEN, 7)


def test_a_record_is_retried_by_the_event_source_until_dispatched(
    session: boto3.Session, resources: LocalResources, drain: Any
) -> None:
    counter, log = make_counter(session, resources)
    events = upload_events(session, resources, "run-retry", drain)
    now = datetime.now(UTC)
    log.fault_mode = "after"
    for event in events:
        log.fault_at = None
        if event is events[-1]:
            # The first SendMessage of the closing record succeeds but its response is lost.
            log.fault_at = len(log.calls) + 4
        try:
            counter.handle_record(event["Body"], message_id=event["MessageId"], now=now)
        except InjectedFaultError:
            counter.handle_record(event["Body"], message_id=event["MessageId"], now=now)
    messages = drain(session.client("sqs"), resources.runs_queue_url)
    assert sorted(json.loads(m["Body"])["shard"] for m in messages) == [0, 1]


def test_a_batch_of_records_costs_one_transaction_and_one_read_per_run(
    session: boto3.Session, resources: LocalResources, drain: Any
) -> None:
    counter, log = make_counter(session, resources)
    events = upload_events(session, resources, "run-batch", drain)
    records = [(e["MessageId"], e["Body"]) for e in events]
    now = datetime.now(UTC)
    with log.window() as seen:
        prerecorded = counter.prerecord(records, now=now)
    assert seen == ["dynamodb.TransactWriteItems"]
    per_record: list[list[str]] = []
    outcomes: list[str] = []
    for message_id, body in records:
        with log.window() as seen:
            result = counter.handle_record(
                body, message_id=message_id, now=now, prerecorded=prerecorded
            )
        per_record.append(seen)
        outcomes.extend(o.value for _, o in result.outcomes)
    assert outcomes == ["recorded"] * 6
    # Only the batch's last record of the run reads it, and closes it.
    assert per_record[:-1] == [[]] * 5
    assert per_record[-1] == [
        "dynamodb.GetItem",
        "dynamodb.Query",
        "dynamodb.UpdateItem",
        "sqs.SendMessage",
        "sqs.SendMessage",
        "dynamodb.UpdateItem",
    ]
    run = counter.store.get_run("run-batch")
    assert run is not None
    assert (run.state, run.image_count) == (RunState.DISPATCHED, 6)
    assert counter.store.batch_counts("run-batch") == {"batch_001": 3, "batch_002": 3}
    assert len(drain(session.client("sqs"), resources.runs_queue_url)) == 2


def test_a_batch_with_duplicates_or_late_uploads_falls_back_to_one_record_at_a_time(
    session: boto3.Session, resources: LocalResources, drain: Any
) -> None:
    counter, _ = make_counter(session, resources)
    events = upload_events(session, resources, "run-mixed", drain)
    now = datetime.now(UTC)
    # One upload recorded alone first; then the whole run arrives in one batch, with the
    # same event twice: the group is refused, and each record decides alone.
    counter.handle_record(events[0]["Body"], message_id=events[0]["MessageId"], now=now)
    records = [(e["MessageId"], e["Body"]) for e in events] + [("again", events[3]["Body"])]
    prerecorded = counter.prerecord(records, now=now)
    assert prerecorded.recorded == set()
    outcomes = [
        o.value
        for message_id, body in records
        for _, o in counter.handle_record(
            body, message_id=message_id, now=now, prerecorded=prerecorded
        ).outcomes
    ]
    assert outcomes == ["duplicate"] + ["recorded"] * 5 + ["duplicate"]
    run = counter.store.get_run("run-mixed")
    assert run is not None
    assert (run.state, run.image_count) == (RunState.DISPATCHED, 6)
    assert counter.store.batch_counts("run-mixed") == {"batch_001": 3, "batch_002": 3}
    # Uploads to the closed run, in one batch: refused as a group, each kept as late.
    s3 = session.client("s3")
    for name in ("x.png", "y.png"):
        s3.put_object(
            Bucket=resources.names.raw_bucket, Key=f"uploads/run-mixed/batch_003/{name}", Body=PNG
        )
    late = [
        (e["MessageId"], e["Body"])
        for e in drain(session.client("sqs"), resources.ingest_queue_url)
        if "Records" in e["Body"]
    ]
    prerecorded = counter.prerecord(late, now=now)
    assert prerecorded.recorded == set()
    outcomes = [
        o.value
        for message_id, body in late
        for _, o in counter.handle_record(
            body, message_id=message_id, now=now, prerecorded=prerecorded
        ).outcomes
    ]
    assert outcomes == ["late", "late"]
    assert counter.store.batch_counts("run-mixed") == {"batch_001": 3, "batch_002": 3}
