"""An exception while the worker handles a run is counted (``RunErrors``) as well as retried."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import boto3
import psycopg
from batch_stats.engine import EngineParams
from batch_stats.worker.app import build_worker
from batch_stats.worker.config import WorkerSettings
from batch_stats.worker.metrics import EmfMetrics


def test_a_run_that_raises_is_counted_and_its_message_kept(
    session: boto3.Session,
    resources: Any,
    settings: WorkerSettings,
    small: EngineParams,
    dispatch_run: Callable[..., Any],
) -> None:
    # A database that does not exist: the run's results cannot be stored.
    missing = psycopg.conninfo.make_conninfo(settings.database_url or "", dbname="no_such_db")
    broken = WorkerSettings(**{**settings.__dict__, "database_url": missing})
    stream = io.StringIO()
    worker = build_worker(
        broken,
        session=session,
        params=small,
        wait_seconds=1,
        retry_delay_seconds=30,
        metrics=EmfMetrics(stream),
    )
    dispatch_run("run-raises")
    assert worker.poll_once()
    worker.close()
    documents = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [d.get("RunErrors") for d in documents if "RunErrors" in d] == [1]
    assert [d["run_id"] for d in documents if "RunErrors" in d] == ["run-raises"]
    assert not [d for d in documents if "RunsFinished" in d or "RunsFailed" in d]
    # The message is still there (released for a retry), not deleted.
    attributes = session.client("sqs").get_queue_attributes(
        QueueUrl=resources.runs_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert sum(int(v) for v in attributes.values()) == 1
