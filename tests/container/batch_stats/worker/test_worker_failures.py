"""Failures: crashes mid-run, PostgreSQL down, poison messages, shutdown, visibility, secrets."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import psycopg
import pytest
from batch_counter.counter import Shard, build_run_message
from batch_stats.engine import EngineParams, read_batch_stats
from batch_stats.local.resources import RUNS_MAX_RECEIVES, LocalResources
from batch_stats.worker.adapters import (
    S3ObjectStore,
    SnsNotifier,
    SqsRunQueue,
    TaskProtection,
)
from batch_stats.worker.app import build_database
from batch_stats.worker.config import ENV_VARS, ConfigError, WorkerSettings, load_settings
from batch_stats.worker.database import MIGRATIONS, ResultsDatabase
from batch_stats.worker.messages import InvalidRunMessageError, RunMessage
from batch_stats.worker.runner import RunProcessor, Worker, results_key
from batch_stats.worker.tracking import DynamoRunTracking

VISIBILITY = 2


class Killed(BaseException):
    """Stands for the process dying (SIGKILL, OOM): nothing in the worker may handle it."""


class CrashingStore(S3ObjectStore):
    """The real S3 store; the process 'dies' on the n-th download or on the results write."""

    def __init__(self, client: Any, *, die_on_get: int | None = None, die_on_put: bool = False):
        super().__init__(client)
        self._die_on_get = die_on_get
        self._die_on_put = die_on_put
        self._gets = 0
        self._lock = threading.Lock()

    def get(self, bucket: str, key: str) -> bytes:
        with self._lock:
            self._gets += 1
            if self._gets == self._die_on_get:
                raise Killed
        return super().get(bucket, key)

    def put(self, bucket: str, key: str, data: bytes, **kwargs: Any) -> None:
        super().put(bucket, key, data, **kwargs)
        if self._die_on_put:
            raise Killed


class CrashingDatabase(ResultsDatabase):
    """The real database; the process dies right after the run's row is committed."""

    def finish_run(self, run_id: str, **kwargs: Any) -> None:
        super().finish_run(run_id, **kwargs)
        raise Killed


def assemble(
    session: boto3.Session,
    settings: WorkerSettings,
    params: EngineParams,
    *,
    objects: S3ObjectStore | None = None,
    database: ResultsDatabase | None = None,
    concurrency: int = 1,
    protection: TaskProtection | None = None,
) -> Worker:
    assert settings.database_url is not None
    processor = RunProcessor(
        objects=objects or S3ObjectStore(session.client("s3")),
        database=database or ResultsDatabase.from_url(settings.database_url),
        notifier=SnsNotifier(session.client("sns"), settings.notifications_topic_arn),
        tracking=DynamoRunTracking(session.client("dynamodb"), settings.tracking_table_name),
        raw_bucket=settings.raw_bucket,
        results_bucket=settings.results_bucket,
        concurrency=concurrency,
        params=params,
    )
    return Worker(
        queue=SqsRunQueue(session.client("sqs"), settings.runs_queue_url),
        processor=processor,
        visibility_timeout=settings.visibility_timeout_seconds,
        protection=protection,
        wait_seconds=1,
        retry_delay_seconds=0,
    )


def stored_rows(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT run_id, batch_id, image_count, white_avg, white_min, white_max, white_std, "
            "black_avg, black_min, black_max, black_std FROM batch_stats ORDER BY 1, 2"
        ).fetchall()


def results(session: boto3.Session, resources: LocalResources, run_id: str) -> bytes:
    return bytes(
        session.client("s3")
        .get_object(Bucket=resources.names.results_bucket, Key=results_key(run_id))["Body"]
        .read()
    )


def poll_until_handled(worker: Worker, *, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll_once():
            return
    raise AssertionError("no message was redelivered")


@pytest.mark.parametrize("crash", ["during_downloads", "after_parquet", "after_database"])
def test_worker_killed_mid_run_is_redelivered_with_identical_results(
    crash: str,
    session: boto3.Session,
    settings: WorkerSettings,
    small: EngineParams,
    resources: LocalResources,
    dispatch_run: Callable[..., Any],
    database_url: str,
    worker: Worker,
    notifications: Callable[[], list[dict[str, Any]]],
    send_raw: Callable[[str], None],
) -> None:
    # What the crashed attempt left (Parquet, rows) must equal what the redelivery writes, and a
    # further clean reprocessing of the same run must write exactly the same again.
    dispatch_run("run-k")
    crashing = assemble(
        session,
        settings,
        small,
        objects=CrashingStore(
            session.client("s3"),
            die_on_get=4 if crash == "during_downloads" else None,
            die_on_put=crash == "after_parquet",
        ),
        database=(CrashingDatabase.from_url(database_url) if crash == "after_database" else None),
    )
    with pytest.raises(Killed):
        crashing.poll_once()
    assert notifications() == []
    before_crash_parquet = (
        results(session, resources, "run-k") if crash != "during_downloads" else None
    )
    before_crash_rows = stored_rows(database_url)
    # The shard's rows are committed before the run's Parquet file is written.
    assert len(before_crash_rows) == (0 if crash == "during_downloads" else 2)

    poll_until_handled(worker)  # redelivered once the visibility timeout expires
    first_parquet = results(session, resources, "run-k")
    first_rows = stored_rows(database_url)
    assert len(first_rows) == 2
    assert len(notifications()) == 1
    if before_crash_parquet is not None:
        assert first_parquet == before_crash_parquet
    if before_crash_rows:
        assert first_rows == before_crash_rows

    # Reprocessing the same run again (its message delivered once more) gives byte-identical
    # Parquet and identical rows, and announces nothing new.
    send_raw(
        build_run_message(
            run_id="run-k",
            bucket=resources.names.raw_bucket,
            shard=0,
            plan=[Shard("batch_001", "batch_002", 6)],
            failure=None,
            now=datetime.now(UTC),
        )
    )
    assert worker.poll_once()
    assert results(session, resources, "run-k") == first_parquet
    assert stored_rows(database_url) == first_rows
    (note,) = notifications()
    assert note["status"] == "finished"
    stats, _ = read_batch_stats(io.BytesIO(first_parquet))
    assert [s.batch_id for s in stats] == ["batch_001", "batch_002"]


def test_postgres_down_keeps_the_message_and_loses_nothing(
    session: boto3.Session,
    settings: WorkerSettings,
    small: EngineParams,
    resources: LocalResources,
    dispatch_run: Callable[..., Any],
    database_url: str,
    worker: Worker,
    notifications: Callable[[], list[dict[str, Any]]],
) -> None:
    dispatch_run("run-db")
    down = ResultsDatabase.from_url("postgresql://postgres@127.0.0.1:1/postgres")
    broken = assemble(session, settings, small, database=down)
    assert broken.poll_once()  # handled: failed, message kept
    assert notifications() == []
    assert stored_rows(database_url) == []
    poll_until_handled(worker)  # the same message, retried
    assert len(stored_rows(database_url)) == 2
    (note,) = notifications()
    assert note["run_id"] == "run-db"


def test_poison_message_reaches_the_dlq_after_the_maximum_receives(
    session: boto3.Session,
    resources: LocalResources,
    worker: Worker,
    send_raw: Callable[[str], None],
) -> None:
    sqs = session.client("sqs")
    send_raw('{"version": 2, "run_id": 7}')
    receives = 0
    while worker.poll_once():
        receives += 1
        assert receives <= RUNS_MAX_RECEIVES
    assert receives == RUNS_MAX_RECEIVES
    (dead,) = sqs.receive_message(QueueUrl=resources.runs_dlq_url, WaitTimeSeconds=1)["Messages"]
    assert json.loads(dead["Body"])["run_id"] == 7


def test_heartbeat_keeps_a_long_run_invisible(
    session: boto3.Session,
    settings: WorkerSettings,
    small: EngineParams,
    resources: LocalResources,
    dispatch_run: Callable[..., Any],
) -> None:
    class SlowStore(S3ObjectStore):
        def get(self, bucket: str, key: str) -> bytes:
            time.sleep(0.6)
            return super().get(bucket, key)

    dispatch_run("run-slow")  # 6 images x 0.6 s, one at a time: longer than the 2 s timeout
    slow = assemble(session, settings, small, objects=SlowStore(session.client("s3")))
    slow.migrate()
    done = threading.Event()
    thread = threading.Thread(target=lambda: (slow.poll_once(), done.set()))
    thread.start()
    # Only once the worker holds the message: before that, receiving it here would be a race
    # with the worker's own first receive, not a failure of the heartbeat.
    while not slow.busy and not done.is_set():
        time.sleep(0.01)
    sqs = session.client("sqs")
    stolen = []
    while not done.is_set():
        stolen += sqs.receive_message(QueueUrl=resources.runs_queue_url).get("Messages", [])
        time.sleep(0.2)
    thread.join()
    assert stolen == []
    assert [row[0] for row in stored_rows(settings.database_url or "")] == ["run-slow"] * 2


def test_shutdown_gives_up_the_run_and_releases_its_message(
    session: boto3.Session,
    settings: WorkerSettings,
    small: EngineParams,
    resources: LocalResources,
    dispatch_run: Callable[..., Any],
    database_url: str,
) -> None:
    worker_ref: list[Worker] = []

    class StopDuringDownload(S3ObjectStore):
        def get(self, bucket: str, key: str) -> bytes:
            worker_ref[0].request_stop()
            worker_ref[0].request_stop()  # a second request: abandon now
            return super().get(bucket, key)

    dispatch_run("run-stop")
    worker = assemble(session, settings, small, objects=StopDuringDownload(session.client("s3")))
    worker.migrate()
    worker_ref.append(worker)
    assert worker.poll_once()
    assert worker.stopping.is_set()
    assert stored_rows(database_url) == []
    # Released at once: visible again without waiting for the visibility timeout.
    messages = session.client("sqs").receive_message(QueueUrl=resources.runs_queue_url)
    assert len(messages.get("Messages", [])) == 1


def worker_environ(settings: WorkerSettings) -> dict[str, str]:
    assert settings.database_url is not None
    return {
        "RUNS_QUEUE_URL": settings.runs_queue_url,
        "RAW_BUCKET": settings.raw_bucket,
        "RESULTS_BUCKET": settings.results_bucket,
        "NOTIFICATIONS_TOPIC_ARN": settings.notifications_topic_arn,
        "TRACKING_TABLE_NAME": settings.tracking_table_name,
        "DATABASE_URL": settings.database_url,
        "VISIBILITY_TIMEOUT_SECONDS": "30",
    }


def test_container_command_processes_runs_and_stops_cleanly_on_sigterm(
    settings: WorkerSettings,
    database_url: str,
    dispatch_run: Callable[..., Any],
    notifications: Callable[[], list[dict[str, Any]]],
) -> None:
    # Default engine parameters in the container: a 1-batch run of real 256x512 images.
    dispatch_run("run-proc", params=EngineParams(images_per_batch=2, batches=1))
    env = {**os.environ, **worker_environ(settings)}
    process = subprocess.Popen(
        [sys.executable, "-m", "batch_stats.worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not notifications() and time.monotonic() < deadline:
            time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=40)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert '"RunsFinished": 1' in stdout  # the EMF metrics line
    assert "received SIGTERM" in stderr
    assert [row[0] for row in stored_rows(database_url)] == ["run-proc"]


def test_container_command_names_every_missing_variable() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    result = subprocess.run(
        [sys.executable, "-m", "batch_stats.worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    for name in ("RUNS_QUEUE_URL", "RAW_BUCKET", "RESULTS_BUCKET", "NOTIFICATIONS_TOPIC_ARN"):
        assert name in result.stderr
    assert "DB_SECRET_ARN" in result.stderr


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"DB_SECRET_ARN": "a", "DATABASE_URL": "b"}, "only one of"),
        ({"DATABASE_URL": "b", "DOWNLOAD_CONCURRENCY": "x"}, "DOWNLOAD_CONCURRENCY='x'"),
        ({"DATABASE_URL": "b", "VISIBILITY_TIMEOUT_SECONDS": "0"}, "out of range"),
        ({"DATABASE_URL": "b", "LOG_LEVEL": "LOUD"}, "LOG_LEVEL='LOUD'"),
    ],
)
def test_bad_settings_are_explained(environ: Mapping[str, str], problem: str) -> None:
    base = {"RUNS_QUEUE_URL": "q", "RAW_BUCKET": "r", "RESULTS_BUCKET": "s"}
    base["NOTIFICATIONS_TOPIC_ARN"] = "t"
    with pytest.raises(ConfigError, match=problem):
        load_settings({**base, **environ})


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("not json", "not JSON"),
        ('{"version": 1}', "version 1"),
        ('{"version": 2, "run_id": "../x"}', "run_id"),
        (
            '{"version": 2, "run_id": "r", "bucket": "b", "shard": 2, "shards": 2, '
            '"images": 1, "first_batch": "b1", "last_batch": "b1"}',
            "shard 2 of 2",
        ),
        (
            '{"version": 2, "run_id": "r", "bucket": "b", "shard": 0, "shards": 1, '
            '"images": 1, "first_batch": "../b", "last_batch": "b1"}',
            "first_batch",
        ),
    ],
)
def test_invalid_run_messages_are_explained(body: str, problem: str) -> None:
    with pytest.raises(InvalidRunMessageError, match=problem):
        RunMessage.from_json(body)


def test_credentials_come_from_the_secret(
    session: boto3.Session, settings: WorkerSettings, database_url: str
) -> None:
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    secret_arn = session.client("secretsmanager").create_secret(
        Name=f"test/{info['dbname']}",
        SecretString=json.dumps(
            {
                "engine": "postgres",
                "host": info["host"],
                "port": 5432,
                "username": info["user"],
                "password": "",
                "dbname": info["dbname"],
            }
        ),
    )["ARN"]
    from_secret = WorkerSettings(
        runs_queue_url=settings.runs_queue_url,
        raw_bucket=settings.raw_bucket,
        results_bucket=settings.results_bucket,
        notifications_topic_arn=settings.notifications_topic_arn,
        tracking_table_name=settings.tracking_table_name,
        db_secret_arn=secret_arn,
    )
    database = build_database(from_secret, session)
    latest = MIGRATIONS[-1][0]
    assert database.migrate() == latest
    assert database.migrate() == latest  # idempotent
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (
            len(MIGRATIONS),
        )


def test_task_protection_is_held_while_a_run_is_processed(
    session: boto3.Session,
    settings: WorkerSettings,
    small: EngineParams,
    dispatch_run: Callable[..., Any],
) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    class Agent(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls.append((self.path, body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    agent = ThreadingHTTPServer(("127.0.0.1", 0), Agent)
    threading.Thread(target=agent.serve_forever, daemon=True).start()
    try:
        dispatch_run("run-prot")
        protection = TaskProtection(f"http://127.0.0.1:{agent.server_address[1]}")
        worker = assemble(session, settings, small, protection=protection)
        worker.migrate()
        assert worker.poll_once()
    finally:
        agent.shutdown()
    assert calls == [
        ("/task-protection/v1/state", {"ProtectionEnabled": True, "ExpiresInMinutes": 60}),
        ("/task-protection/v1/state", {"ProtectionEnabled": False}),
    ]


def test_sigterm_during_a_run_finishes_it_then_exits_cleanly(
    settings: WorkerSettings,
    database_url: str,
    dispatch_run: Callable[..., Any],
    notifications: Callable[[], list[dict[str, Any]]],
) -> None:
    dispatch_run("run-term", params=EngineParams(images_per_batch=10, batches=2))
    env = {**os.environ, **worker_environ(settings), "DOWNLOAD_CONCURRENCY": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "batch_stats.worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "run run-term: processing" in line:
                process.send_signal(signal.SIGTERM)
                break
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "finishing the current run" in stderr
    assert "run run-term finished" in stderr
    assert len(stored_rows(database_url)) == 2
    assert [note["run_id"] for note in notifications()] == ["run-term"]
