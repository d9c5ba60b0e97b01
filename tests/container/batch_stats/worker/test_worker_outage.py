"""A PostgreSQL outage longer than the old 90 s limit is ridden out without the DLQ.

The container waits 30 s after a first failure, doubling up to 5 minutes, and the runs queue moves
a message to its DLQ after 8 receives. The live test runs the same code with every duration
divided by 30 (first delay 1 s, so a 15-minute outage lasts 30 s), on a real PostgreSQL that is
stopped while a run is being processed and started again after the (scaled) outage.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from batch_stats.local.resources import RUNS_MAX_RECEIVES, LocalResources
from batch_stats.worker.app import build_worker
from batch_stats.worker.config import WorkerSettings
from batch_stats.worker.messages import ImageRef
from batch_stats.worker.retry import RETRY_DELAY_SECONDS, backoff_delay, outage_ridden_out
from batch_stats.worker.runner import RunOutcome

from infra.constructs.batch_counter import RUNS_MAX_RECEIVE_COUNT

from .conftest import SMALL

SCALE = 30  # every duration of the container divided by this
OUTAGE_SECONDS = 15 * 60


def test_the_delays_grow_and_ride_out_fifteen_minutes_with_the_stack_settings() -> None:
    assert RUNS_MAX_RECEIVES == RUNS_MAX_RECEIVE_COUNT  # local mode mirrors the CDK stack
    delays = [backoff_delay(RETRY_DELAY_SECONDS, n) for n in range(1, RUNS_MAX_RECEIVE_COUNT)]
    assert delays == [30, 60, 120, 240, 300, 300, 300]
    assert outage_ridden_out(RETRY_DELAY_SECONDS, RUNS_MAX_RECEIVE_COUNT) >= OUTAGE_SECONDS
    # The old policy (30 s each time, 3 receives) gave up after 60-90 s.
    assert outage_ridden_out(RETRY_DELAY_SECONDS, 3) < OUTAGE_SECONDS
    assert backoff_delay(0, 5) == 0
    scaled = [backoff_delay(RETRY_DELAY_SECONDS // SCALE, n) for n in range(1, 8)]
    assert scaled == [d // SCALE for d in delays]


def _receive_count(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


@pytest.mark.filterwarnings("ignore:.*XDG_RUNTIME_DIR.*")
def test_postgres_stopped_mid_run_for_a_scaled_fifteen_minutes_is_ridden_out(
    session: boto3.Session,
    settings: WorkerSettings,
    resources: LocalResources,
    dispatch_run: Callable[..., Any],
    notifications: Callable[[], list[dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="batch_stats.worker.runner")
    import pgserver  # here, under the mark that silences its XDG_RUNTIME_DIR warning

    # Its own PostgreSQL (the session's is shared by the other tests and must stay up). Not
    # under pytest's basetemp, which the "pgserver" user cannot enter when the tests run as root.
    with tempfile.TemporaryDirectory(prefix="imgpipe-outage-pg-") as tmp:
        data_dir = Path(tmp) / "pgdata"
        server = pgserver.get_server(data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
        url = str(server.get_uri())
        stopped = threading.Event()
        down_since: list[float] = []

        def stop_database_once(ref: ImageRef) -> None:
            del ref
            if not down_since:  # called from the one worker thread only
                server.cleanup()  # the live database goes away while the run is processed
                down_since.append(time.monotonic())
                stopped.set()  # the outage is timed from the moment it is down

        worker = build_worker(
            dataclasses.replace(settings, database_url=url, download_concurrency=1),
            session=session,
            params=SMALL,
            wait_seconds=1,
            retry_delay_seconds=RETRY_DELAY_SECONDS // SCALE,
            on_image=stop_database_once,
        )
        worker.migrate()
        outcomes: list[RunOutcome] = []
        worker.on_outcome = outcomes.append
        dispatch_run("run-outage")

        def poll() -> None:
            deadline = time.monotonic() + 180
            while not outcomes and time.monotonic() < deadline:
                worker.poll_once()

        thread = threading.Thread(target=poll, name="worker")
        thread.start()
        try:
            assert stopped.wait(60), "the worker never started the run"
            time.sleep(OUTAGE_SECONDS / SCALE)
            server = pgserver.get_server(data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
            up_after = time.monotonic() - down_since[0]
            assert str(server.get_uri()) == url
            thread.join(180)
            assert not thread.is_alive(), "the run was not finished after the database came back"
            with psycopg.connect(url) as conn:
                rows = conn.execute(
                    "SELECT batch_id, image_count FROM batch_stats WHERE run_id = 'run-outage' "
                    "ORDER BY 1"
                ).fetchall()
        finally:
            worker.request_stop()
            thread.join(60)
            worker.close()
            server.cleanup()
    assert up_after >= OUTAGE_SECONDS / SCALE, up_after
    failed = [r for r in caplog.records if "run run-outage failed" in r.getMessage()]
    assert len(failed) >= 3  # the old policy sent the message to the DLQ after 3 failures
    (outcome,) = outcomes
    assert outcome.status == "finished"
    assert rows == [("batch_001", 3), ("batch_002", 3)]
    assert [note["run_id"] for note in notifications()] == ["run-outage"]
    sqs = session.client("sqs")
    assert _receive_count(sqs, resources.runs_dlq_url) == 0  # never reached the DLQ
    assert _receive_count(sqs, resources.runs_queue_url) == 0  # and deleted once done
