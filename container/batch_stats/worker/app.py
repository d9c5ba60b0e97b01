"""Assembling a worker from settings, and the process entry point (signals, exit codes)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

import boto3
import psycopg
from botocore.config import Config

from batch_stats.engine import EngineParams
from batch_stats.worker.adapters import (
    ObjectStore,
    S3ObjectStore,
    SnsNotifier,
    SqsRunQueue,
    TaskProtection,
    database_url_from_secret,
)
from batch_stats.worker.config import ConfigError, WorkerSettings, load_settings
from batch_stats.worker.database import ResultsDatabase
from batch_stats.worker.jobs import JobProcessor
from batch_stats.worker.messages import ImageRef
from batch_stats.worker.metrics import EmfMetrics
from batch_stats.worker.runner import RunProcessor, Worker
from batch_stats.worker.tracking import DynamoRunTracking

log = logging.getLogger("batch_stats.worker")


def build_database(settings: WorkerSettings, session: boto3.Session) -> ResultsDatabase:
    """The results database; with a secret ARN, credentials are fetched on every connection."""
    if settings.database_url is not None:
        return ResultsDatabase.from_url(settings.database_url)
    secret_arn = settings.db_secret_arn
    assert secret_arn is not None
    secrets = session.client("secretsmanager")

    def connect() -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(database_url_from_secret(secrets, secret_arn))

    return ResultsDatabase(connect)


def build_worker(
    settings: WorkerSettings,
    *,
    session: boto3.Session | None = None,
    params: EngineParams | None = None,
    wait_seconds: int = 20,
    retry_delay_seconds: int = 30,
    metrics: EmfMetrics | None = None,
    on_image: Callable[[ImageRef], object] | None = None,
    objects: ObjectStore | None = None,
) -> Worker:
    """A worker wired to AWS (or to whatever ``AWS_ENDPOINT_URL`` points at); ``objects``
    replaces S3 as the object store (benchmarks read the uploads from local files)."""
    session = session or boto3.Session()
    metrics = metrics or EmfMetrics()
    s3 = S3ObjectStore(
        session.client(
            "s3",
            config=botocore_config(max_pool_connections=settings.download_concurrency + 4),
        )
    )
    database = build_database(settings, session)
    notifier = SnsNotifier(session.client("sns"), settings.notifications_topic_arn)
    queue = SqsRunQueue(session.client("sqs"), settings.runs_queue_url)
    processor = RunProcessor(
        objects=objects or s3,
        database=database,
        notifier=notifier,
        tracking=DynamoRunTracking(
            session.client("dynamodb", config=botocore_config()), settings.tracking_table_name
        ),
        raw_bucket=settings.raw_bucket,
        results_bucket=settings.results_bucket,
        concurrency=settings.download_concurrency,
        params=params,
        on_image=on_image,
    )
    jobs = JobProcessor(
        store=s3,
        database=database,
        notifier=notifier,
        queue=queue,
        raw_bucket=settings.raw_bucket,
        results_bucket=settings.results_bucket,
    )
    return Worker(
        queue=queue,
        processor=processor,
        jobs=jobs,
        visibility_timeout=settings.visibility_timeout_seconds,
        protection=TaskProtection(settings.ecs_agent_uri, metrics=metrics),
        wait_seconds=wait_seconds,
        retry_delay_seconds=retry_delay_seconds,
        metrics=metrics,
    )


def botocore_config(**options: int) -> Config:
    """Standard retry mode (retries throttling and 5xx with backoff) plus ``options``."""
    return Config(retries={"mode": "standard", "max_attempts": 5}, **options)


#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator(*, mmap_threshold: int = 16 << 20, trim_threshold: int = 128 << 20) -> bool:
    """Serve image-sized buffers from the heap instead of a fresh ``mmap`` each time (glibc).

    Every image brings a few buffers of hundreds of KiB (the download, the decoded pixels).
    Above glibc's mmap threshold each one is a new mapping whose pages fault in on first touch
    and are unmapped on free; on the benchmark's VM that costs about as much as a third of the
    PNG decoding. Keeping them on the heap (and not trimming it eagerly) reuses warm pages.
    Returns False where this is not glibc (then nothing changes).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, mmap_threshold) and mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker until SIGTERM/SIGINT; 0 on a clean stop, 2 on bad configuration."""
    del argv
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        print(f"batch-stats worker: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level_number,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    tune_allocator()
    worker = build_worker(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        name = signal.Signals(signum).name
        if not worker.busy:
            # Idle (in a long poll): stop now rather than after the poll returns.
            log.info("received %s while idle; stopping", name)
            raise _Shutdown
        log.info("received %s; finishing the current run", name)
        worker.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        version = worker.migrate()
        log.info("database schema at version %d", version)
        worker.run_forever()
    except _Shutdown:
        log.info("worker stopped")
    return 0


class _Shutdown(BaseException):
    """Raised by the signal handler to leave an idle long poll at once."""
