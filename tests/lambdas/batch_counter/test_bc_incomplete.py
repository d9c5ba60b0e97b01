"""Incomplete runs: one check schedule per run, one ``incomplete`` notification, never forgotten.

The counter runs against moto's DynamoDB, S3, SNS and EventBridge Scheduler; the uploads are real
S3 notifications read off the ingest queue; time is passed in (``now``), as the handler passes
the clock's.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from batch_counter import handler
from batch_counter.aws import DynamoTrackingStore, SchedulerRunChecks, schedule_name
from batch_counter.counter import BatchCounter, Checked, RunState, check_event
from batch_stats.local.lambda_driver import ScheduleDriver, SqsEventSource, parse_at
from batch_stats.local.resources import LocalResources

from .conftest import FUNCTION_ARN, Notifications

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
T0 = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def upload(
    session: boto3.Session, resources: LocalResources, run_id: str, drain: Any, **batches: int
) -> list[dict[str, Any]]:
    """Put ``batches[batch_id]`` PNGs in each batch; the S3 events they produced."""
    s3 = session.client("s3")
    for batch_id, images in batches.items():
        for i in range(1, images + 1):
            s3.put_object(
                Bucket=resources.names.raw_bucket,
                Key=f"uploads/{run_id}/{batch_id}/img_{i:04d}.png",
                Body=PNG,
            )
    events = drain(session.client("sqs"), resources.ingest_queue_url)
    return [e for e in events if "Records" in e["Body"]]


def feed(counter: BatchCounter, events: list[dict[str, Any]], *, now: datetime) -> None:
    for event in events:
        counter.handle_record(event["Body"], message_id=event["MessageId"], now=now)


def schedules(session: boto3.Session, resources: LocalResources) -> list[dict[str, Any]]:
    driver = ScheduleDriver(
        scheduler=session.client("scheduler"),
        group_name=resources.names.schedule_group,
        handler=lambda event, context: {},
    )
    return driver.pending()


def test_a_run_that_stays_incomplete_is_reported_once_naming_what_is_missing(
    checking_counter: BatchCounter,
    session: boto3.Session,
    resources: LocalResources,
    drain: Any,
    notifications: Notifications,
) -> None:
    feed(checking_counter, upload(session, resources, "run-x", drain, b1=3, b2=1), now=T0)
    # One schedule for the run, due an hour after its first upload, invoking this function
    # with the check event through the scheduler role, deleted once it ran.
    (schedule,) = schedules(session, resources)
    assert parse_at(schedule["ScheduleExpression"]) == T0 + HOUR
    assert schedule["ScheduleExpressionTimezone"] == "UTC"
    assert schedule["ActionAfterCompletion"] == "DELETE"
    assert schedule["Target"]["Arn"] == FUNCTION_ARN
    assert schedule["Target"]["RoleArn"] == resources.scheduler_role_arn
    assert json.loads(schedule["Target"]["Input"]) == check_event("run-x")

    assert checking_counter.check_run("run-x", now=T0 + HOUR) is Checked.INCOMPLETE
    # The check fires again (Scheduler delivers at least once): nothing more is sent.
    assert checking_counter.check_run("run-x", now=T0 + HOUR) is Checked.CLOSED
    assert checking_counter.check_run("run-x", now=T0 + 2 * HOUR) is Checked.CLOSED
    (message,) = notifications()
    assert message["Subject"] == "imgpipe run run-x incomplete"
    assert message["status"] == "incomplete"
    assert message["notification_id"] == "run-x:incomplete"
    assert message["expected_images"] == 6
    assert message["received_images"] == 4
    assert message["missing_batches"] == [{"batch_id": "b2", "expected": 3, "received": 1}]
    assert message["unseen_batches"] == 0
    assert message["parquet_uri"] is None
    # The run notification's fields are all there.
    for name in ("statistics", "rejected", "bad_keys", "late_uploads", "extra_batches", "error"):
        assert name in message
    assert "4 of 6 images" in message["error"]
    run = checking_counter.store.get_run("run-x")
    assert run is not None
    assert run.state is RunState.INCOMPLETE


def test_a_run_without_its_second_batch_counts_the_unseen_batch(
    checking_counter: BatchCounter,
    session: boto3.Session,
    resources: LocalResources,
    drain: Any,
    notifications: Notifications,
) -> None:
    feed(checking_counter, upload(session, resources, "run-half", drain, b1=3), now=T0)
    assert checking_counter.check_run("run-half", now=T0 + HOUR) is Checked.INCOMPLETE
    (message,) = notifications()
    assert message["missing_batches"] == []
    assert message["unseen_batches"] == 1
    assert (message["expected_batches"], message["batch_count"]) == (2, 1)


def test_the_manifest_names_the_missing_batches(
    checking_counter: BatchCounter,
    session: boto3.Session,
    resources: LocalResources,
    drain: Any,
    notifications: Notifications,
) -> None:
    manifest = {
        "version": 1,
        "run_id": "run-m",
        "batches": {"b1": {"images": 2}, "b2": {"images": 2}, "b3": {"images": 1}},
    }
    session.client("s3").put_object(
        Bucket=resources.names.raw_bucket,
        Key="uploads/run-m/_manifest.json",
        Body=json.dumps(manifest).encode(),
    )
    feed(checking_counter, upload(session, resources, "run-m", drain, b1=2, b2=1), now=T0)
    assert len(schedules(session, resources)) == 1
    assert checking_counter.check_run("run-m", now=T0 + HOUR) is Checked.INCOMPLETE
    (message,) = notifications()
    assert message["manifest"] is True
    assert (message["expected_images"], message["received_images"]) == (5, 3)
    assert message["missing_batches"] == [
        {"batch_id": "b2", "expected": 2, "received": 1},
        {"batch_id": "b3", "expected": 1, "received": 0},
    ]


def test_two_checks_racing_send_one_notification(
    checking_counter: BatchCounter,
    session: boto3.Session,
    resources: LocalResources,
    drain: Any,
    notifications: Notifications,
) -> None:
    feed(checking_counter, upload(session, resources, "run-race", drain, b1=2), now=T0)
    start = threading.Barrier(4)

    def check() -> Checked:
        start.wait()
        return checking_counter.check_run("run-race", now=T0 + HOUR)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: check(), range(4)))
    assert sorted(results) == sorted([Checked.INCOMPLETE] + [Checked.CLOSED] * 3)
    assert len(notifications()) == 1


def test_a_run_whose_uploads_keep_coming_is_checked_again_not_reported(
    checking_counter: BatchCounter,
    session: boto3.Session,
    resources: LocalResources,
    drain: Any,
    notifications: Notifications,
) -> None:
    feed(checking_counter, upload(session, resources, "run-slow", drain, b1=1), now=T0)
    later = T0 + timedelta(minutes=50)
    events = upload(session, resources, "run-slow", drain, b2=2)
    feed(checking_counter, events, now=later)
    # Later uploads make no new schedule: the run item says it has one.
    assert len(schedules(session, resources)) == 1
    assert checking_counter.check_run("run-slow", now=T0 + HOUR) is Checked.RESCHEDULED
    assert notifications() == []
    due = sorted(parse_at(s["ScheduleExpression"]) for s in schedules(session, resources))
    assert later + HOUR in due
    # A second delivery of the same check makes no second schedule for the same moment.
    assert checking_counter.check_run("run-slow", now=T0 + HOUR) is Checked.RESCHEDULED
    names = [s["Name"] for s in schedules(session, resources)]
    assert names.count(schedule_name("run-slow", later + HOUR)) == 1
    assert checking_counter.check_run("run-slow", now=later + HOUR) is Checked.INCOMPLETE
    (message,) = notifications()
    assert message["received_images"] == 3


def test_a_run_that_completes_before_the_timeout_is_not_reported(
    checking_counter: BatchCounter,
    session: boto3.Session,
    resources: LocalResources,
    drain: Any,
    notifications: Notifications,
) -> None:
    feed(checking_counter, upload(session, resources, "run-ok", drain, b1=3, b2=3), now=T0)
    (message,) = drain(session.client("sqs"), resources.runs_queue_url)
    assert json.loads(message["Body"])["run_id"] == "run-ok"
    assert checking_counter.check_run("run-ok", now=T0 + HOUR) is Checked.CLOSED
    assert notifications() == []
    run = checking_counter.store.get_run("run-ok")
    assert run is not None
    assert run.state is RunState.DISPATCHED


def test_an_upload_racing_the_check_wins_over_the_report(
    checking_counter: BatchCounter,
    store: DynamoTrackingStore,
    session: boto3.Session,
    resources: LocalResources,
    drain: Any,
    notifications: Notifications,
) -> None:
    feed(checking_counter, upload(session, resources, "run-late", drain, b1=1), now=T0)
    seen = store.get_run("run-late")
    assert seen is not None
    # An upload lands between the check's read and its claim: the claim fails, the run stays
    # OPEN and is checked again an hour after that upload.
    feed(
        checking_counter,
        upload(session, resources, "run-late", drain, b2=1),
        now=T0 + HOUR - timedelta(seconds=1),
    )
    assert seen.last_upload_at == T0
    assert not store.mark_incomplete("run-late", last_upload_at=T0, now=T0 + HOUR)
    assert checking_counter.check_run("run-late", now=T0 + HOUR) is Checked.RESCHEDULED
    assert notifications() == []


def test_uploads_after_the_report_are_late_and_reported_apart(
    checking_counter: BatchCounter,
    store: DynamoTrackingStore,
    session: boto3.Session,
    resources: LocalResources,
    drain: Any,
) -> None:
    feed(checking_counter, upload(session, resources, "run-after", drain, b1=3), now=T0)
    assert checking_counter.check_run("run-after", now=T0 + HOUR) is Checked.INCOMPLETE
    events = upload(session, resources, "run-after", drain, b2=3)
    results = [
        checking_counter.handle_record(e["Body"], message_id=e["MessageId"], now=T0 + 2 * HOUR)
        for e in events
    ]
    assert [o.value for r in results for _, o in r.outcomes] == ["late"] * 3
    _, late = store.reported("run-after")
    assert {entry["reason"] for entry in late} == {"after_dispatch"}
    assert len(late) == 3
    assert drain(session.client("sqs"), resources.runs_queue_url) == []


class FailingOnce:
    """A notifier whose first publish fails the way an SNS outage does (then it publishes)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failed = False

    def publish(self, *, subject: str, message: str) -> None:
        if not self.failed:
            self.failed = True
            raise ConnectionError("SNS endpoint unreachable")
        self.inner.publish(subject=subject, message=message)


def test_a_report_that_could_not_be_sent_is_sent_by_the_retried_check(
    checking_counter: BatchCounter,
    session: boto3.Session,
    resources: LocalResources,
    drain: Any,
    notifications: Notifications,
) -> None:
    feed(checking_counter, upload(session, resources, "run-retry", drain, b1=1), now=T0)
    failing = BatchCounter(
        store=checking_counter.store,
        queue=checking_counter.queue,
        objects=checking_counter.objects,
        images_per_batch=3,
        batches_per_run=2,
        checks=checking_counter.checks,
        notifier=FailingOnce(checking_counter.notifier),
    )
    with pytest.raises(ConnectionError):
        failing.check_run("run-retry", now=T0 + HOUR)
    run = checking_counter.store.get_run("run-retry")
    assert run is not None
    assert run.state is RunState.OPEN
    assert notifications() == []
    assert failing.check_run("run-retry", now=T0 + HOUR) is Checked.INCOMPLETE
    assert len(notifications()) == 1


def test_the_check_costs_two_calls_on_the_first_upload_only(
    checking_counter: BatchCounter, session: boto3.Session, resources: LocalResources, drain: Any
) -> None:
    calls: list[str] = []

    def log(model: Any, **_: Any) -> None:
        calls.append(f"{model.service_model.service_name}.{model.name}")

    for client in (checking_counter.store, checking_counter.checks):
        client._client.meta.events.register("before-call.*.*", log)  # type: ignore[union-attr]
    per_object: list[list[str]] = []
    for event in upload(session, resources, "run-cost", drain, b1=3, b2=1):
        start = len(calls)
        feed(checking_counter, [event], now=T0)
        per_object.append(calls[start:])
    assert per_object[0] == [
        "dynamodb.TransactWriteItems",
        "dynamodb.GetItem",
        "scheduler.CreateSchedule",
        "dynamodb.UpdateItem",
    ]
    for seen in per_object[1:]:
        assert seen == ["dynamodb.TransactWriteItems", "dynamodb.GetItem"]


def test_the_schedule_name_fits_scheduler_rules_for_the_longest_run_id() -> None:
    name = schedule_name("r" * 64, T0 + HOUR)
    assert len(name) <= 64
    assert name.replace("-", "").isalnum()
    assert schedule_name("r" * 64, T0 + HOUR) == name
    assert schedule_name("r" * 63, T0 + HOUR) != name


def test_the_handler_reports_an_incomplete_run_through_its_real_schedule(
    monkeypatch: pytest.MonkeyPatch,
    session: boto3.Session,
    resources: LocalResources,
    notifications: Notifications,
) -> None:
    """End to end in local mode: S3 events -> handler -> schedule in moto -> fired by the local
    driver when due -> handler -> one SNS notification."""
    environ = resources.lambda_environ(images_per_batch=2, batches_per_run=2, run_timeout=1)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    handler._counter.cache_clear()
    try:
        s3, sqs = session.client("s3"), session.client("sqs")
        s3.put_object(Bucket=resources.names.raw_bucket, Key="uploads/run-e/b1/a.png", Body=PNG)
        source = SqsEventSource(
            sqs=sqs, queue_url=resources.ingest_queue_url, handler=handler.lambda_handler
        )
        while source.poll_once().received:
            pass
        driver = ScheduleDriver(
            scheduler=session.client("scheduler"),
            group_name=resources.names.schedule_group,
            handler=handler.lambda_handler,
        )
        (schedule,) = driver.pending()
        due = parse_at(schedule["ScheduleExpression"])
        assert driver.fire_due(now=due - timedelta(seconds=1)) == []
        time.sleep(max((due - datetime.now(UTC)).total_seconds(), 0) + 0.1)
        assert driver.fire_due() == [{"run_id": "run-e", "checked": "incomplete"}]
        assert driver.pending() == []  # deleted after completion
        (message,) = notifications()
        assert (message["run_id"], message["status"]) == ("run-e", "incomplete")
        assert message["missing_batches"] == [{"batch_id": "b1", "expected": 2, "received": 1}]
        assert message["unseen_batches"] == 1
    finally:
        handler._counter.cache_clear()


def test_the_handler_rejects_a_check_without_a_valid_run_id(
    monkeypatch: pytest.MonkeyPatch, resources: LocalResources
) -> None:
    for name, value in resources.lambda_environ(images_per_batch=1, batches_per_run=1).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(handler.BadCheckEventError, match="does not name a valid run id"):
        handler.check_handler({"imgpipe": "check-run", "run_id": "../etc"})


def test_scheduler_checks_are_idempotent_for_the_same_moment(
    checks: SchedulerRunChecks, session: boto3.Session, resources: LocalResources
) -> None:
    checks.schedule_check("run-i", at=T0 + HOUR + timedelta(milliseconds=100))
    checks.schedule_check("run-i", at=T0 + HOUR + timedelta(milliseconds=100))
    checks.schedule_check("run-i", at=T0 + HOUR + timedelta(milliseconds=900))
    (schedule,) = schedules(session, resources)
    assert schedule["ScheduleExpression"] == "at(2026-05-04T13:00:01)"
