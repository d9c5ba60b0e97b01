"""Late uploads (to a run already closed) are reported like incomplete runs: one ``late``
notification per group of late uploads, ``RUN_TIMEOUT`` after the last of the group, through the
same one-time check schedules.

The counter runs against moto's DynamoDB, S3, SNS and EventBridge Scheduler; the uploads are real
S3 notifications read off the ingest queue; time is passed in (``now``), as the handler passes
the clock's, except in the last test, where the handler and the local ScheduleDriver run on the
real clock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from batch_counter import handler
from batch_counter.aws import schedule_name
from batch_counter.counter import BatchCounter, Checked, RunState
from batch_stats.local.lambda_driver import ScheduleDriver, SqsEventSource, parse_at
from batch_stats.local.resources import LocalResources

from .conftest import Notifications
from .test_bc_incomplete import FailingOnce, feed, schedules, upload

T0 = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def late_put(
    session: boto3.Session, resources: LocalResources, run_id: str, drain: Any, *names: str
) -> list[dict[str, Any]]:
    s3 = session.client("s3")
    for name in names:
        s3.put_object(
            Bucket=resources.names.raw_bucket, Key=f"uploads/{run_id}/{name}", Body=b"late"
        )
    events = drain(session.client("sqs"), resources.ingest_queue_url)
    return [e for e in events if "Records" in e["Body"]]


def closed_run(
    counter: BatchCounter, session: boto3.Session, resources: LocalResources, drain: Any, run: str
) -> None:
    """A run of the stack's shape (2 x 3), dispatched at T0."""
    feed(counter, upload(session, resources, run, drain, b1=3, b2=3), now=T0)
    drain(session.client("sqs"), resources.runs_queue_url)
    closed = counter.store.get_run(run)
    assert closed is not None
    assert closed.state is RunState.DISPATCHED


def test_late_uploads_are_reported_once_per_group_after_the_last_of_them(
    checking_counter: BatchCounter,
    session: boto3.Session,
    resources: LocalResources,
    drain: Any,
    notifications: Notifications,
) -> None:
    closed_run(checking_counter, session, resources, drain, "run-l")
    before = {s["Name"] for s in schedules(session, resources)}

    # A group of three late uploads, ten and twenty minutes after the run closed.
    first = late_put(session, resources, "run-l", drain, "b1/x.png")
    feed(checking_counter, first, now=T0 + 10 * MINUTE)
    feed(
        checking_counter,
        late_put(session, resources, "run-l", drain, "b3/y.png", "b3/z.png"),
        now=T0 + 20 * MINUTE,
    )
    # The first of them created one check, due an hour after it.
    (late_check,) = [s for s in schedules(session, resources) if s["Name"] not in before]
    assert parse_at(late_check["ScheduleExpression"]) == T0 + 10 * MINUTE + HOUR
    assert late_check["Name"] == schedule_name("run-l", T0 + 10 * MINUTE + HOUR)

    # That check finds a later late upload: checked again an hour after the last one.
    assert checking_counter.check_run("run-l", now=T0 + 10 * MINUTE + HOUR) is Checked.RESCHEDULED
    assert notifications() == []
    assert any(
        parse_at(s["ScheduleExpression"]) == T0 + 20 * MINUTE + HOUR
        for s in schedules(session, resources)
    )
    assert checking_counter.check_run("run-l", now=T0 + 20 * MINUTE + HOUR) is Checked.LATE
    # Reported once: the same check again, or the run's own first check, changes nothing.
    assert checking_counter.check_run("run-l", now=T0 + 20 * MINUTE + HOUR) is Checked.CLOSED
    assert checking_counter.check_run("run-l", now=T0 + 3 * HOUR) is Checked.CLOSED
    (note,) = notifications()
    assert (note["run_id"], note["status"], note["notification_id"]) == (
        "run-l",
        "late",
        "run-l:late:3",
    )
    assert sorted(e["key"] for e in note["late_uploads"]) == [
        "uploads/run-l/b1/x.png",
        "uploads/run-l/b3/y.png",
        "uploads/run-l/b3/z.png",
    ]
    assert {e["reason"] for e in note["late_uploads"]} == {"after_dispatch"}
    assert (note["late_upload_count"], note["late_upload_total"]) == (3, 3)
    assert note["run_state"] == "DISPATCHED"
    assert note["last_late_at"] == (T0 + 20 * MINUTE).isoformat(timespec="seconds")
    assert "3 uploads arrived after run run-l was closed" in note["error"]
    # The same fields as every other notification of the topic.
    for field in ("parquet_uri", "statistics", "rejected", "bad_keys", "extra_batches"):
        assert field in note

    # A later group gets its own check and its own notification, naming only its uploads.
    later = late_put(session, resources, "run-l", drain, "b1/w.png")
    feed(checking_counter, later, now=T0 + 5 * HOUR)
    assert any(
        parse_at(s["ScheduleExpression"]) == T0 + 6 * HOUR for s in schedules(session, resources)
    )
    assert checking_counter.check_run("run-l", now=T0 + 6 * HOUR) is Checked.LATE
    _, second = notifications()
    assert second["notification_id"] == "run-l:late:4"
    assert [e["key"] for e in second["late_uploads"]] == ["uploads/run-l/b1/w.png"]
    assert (second["late_upload_count"], second["late_upload_total"]) == (1, 4)
    # Nothing was processed or dispatched again, and every upload stays where it is.
    assert drain(session.client("sqs"), resources.runs_queue_url) == []
    s3 = session.client("s3")
    s3.head_object(Bucket=resources.names.raw_bucket, Key="uploads/run-l/b3/z.png")


def test_late_uploads_after_an_incomplete_report_are_reported_too(
    checking_counter: BatchCounter,
    session: boto3.Session,
    resources: LocalResources,
    drain: Any,
    notifications: Notifications,
) -> None:
    feed(checking_counter, upload(session, resources, "run-i", drain, b1=3), now=T0)
    assert checking_counter.check_run("run-i", now=T0 + HOUR) is Checked.INCOMPLETE
    feed(checking_counter, upload(session, resources, "run-i", drain, b2=2), now=T0 + 2 * HOUR)
    assert checking_counter.check_run("run-i", now=T0 + 2 * HOUR + MINUTE) is Checked.RESCHEDULED
    assert checking_counter.check_run("run-i", now=T0 + 3 * HOUR) is Checked.LATE
    incomplete, late = notifications()
    assert (incomplete["status"], late["status"]) == ("incomplete", "late")
    assert late["run_state"] == "INCOMPLETE"
    assert sorted(e["key"] for e in late["late_uploads"]) == [
        "uploads/run-i/b2/img_0001.png",
        "uploads/run-i/b2/img_0002.png",
    ]


def test_a_late_report_that_could_not_be_sent_is_sent_by_the_retried_check(
    checking_counter: BatchCounter,
    session: boto3.Session,
    resources: LocalResources,
    drain: Any,
    notifications: Notifications,
) -> None:
    closed_run(checking_counter, session, resources, drain, "run-r")
    feed(checking_counter, late_put(session, resources, "run-r", drain, "b1/q.png"), now=T0)
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
        failing.check_run("run-r", now=T0 + HOUR)
    assert notifications() == []
    run = checking_counter.store.get_run("run-r")
    assert run is not None
    assert (run.late_count, run.late_reported, run.late_check_scheduled) == (1, 0, True)
    assert failing.check_run("run-r", now=T0 + HOUR) is Checked.LATE
    (note,) = notifications()
    assert [e["key"] for e in note["late_uploads"]] == ["uploads/run-r/b1/q.png"]


def test_a_duplicate_event_of_a_late_upload_is_not_a_new_late_upload(
    checking_counter: BatchCounter,
    session: boto3.Session,
    resources: LocalResources,
    drain: Any,
) -> None:
    closed_run(checking_counter, session, resources, drain, "run-d")
    events = late_put(session, resources, "run-d", drain, "b1/dup.png")
    feed(checking_counter, events, now=T0)
    feed(checking_counter, events, now=T0 + MINUTE)
    run = checking_counter.store.get_run("run-d")
    assert run is not None
    assert (run.late_count, run.last_late_at) == (1, T0)


def test_the_handler_reports_late_uploads_through_the_real_schedules(
    monkeypatch: pytest.MonkeyPatch,
    session: boto3.Session,
    resources: LocalResources,
    notifications: Notifications,
) -> None:
    """Local mode end to end: a run closes, two late uploads come in one Lambda batch, the
    local ScheduleDriver fires the schedules the handler created in moto when they are due: one
    ``late`` notification."""
    environ = resources.lambda_environ(images_per_batch=2, batches_per_run=1, run_timeout=1)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    handler._counter.cache_clear()
    try:
        s3, sqs = session.client("s3"), session.client("sqs")
        source = SqsEventSource(
            sqs=sqs, queue_url=resources.ingest_queue_url, handler=handler.lambda_handler
        )
        driver = ScheduleDriver(
            scheduler=session.client("scheduler"),
            group_name=resources.names.schedule_group,
            handler=handler.lambda_handler,
        )
        raw = resources.names.raw_bucket
        for name in ("a.png", "b.png"):
            s3.put_object(Bucket=raw, Key=f"uploads/run-h/b1/{name}", Body=b"png")
        while source.poll_once().received:
            pass
        for name in ("c.png", "d.png"):
            s3.put_object(Bucket=raw, Key=f"uploads/run-h/b1/{name}", Body=b"png")
        while source.poll_once().received:
            pass
        answers: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while driver.pending():
            assert time.monotonic() < deadline, driver.pending()
            time.sleep(0.3)
            answers.extend(driver.fire_due())
        assert [a["checked"] for a in answers].count("late") == 1
        (note,) = notifications()
        assert (note["run_id"], note["status"]) == ("run-h", "late")
        assert sorted(e["key"] for e in note["late_uploads"]) == [
            "uploads/run-h/b1/c.png",
            "uploads/run-h/b1/d.png",
        ]
    finally:
        handler._counter.cache_clear()
