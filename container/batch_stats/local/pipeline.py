"""The whole pipeline on one machine: moto server, embedded PostgreSQL, webhook, Lambda, worker.

:func:`local_pipeline` starts and wires everything with the names and environment variables the
CDK stack uses, and stops it all on exit (also on Ctrl-C). The batch counter's handler is called
with the messages that moto's S3 notifications put on the ingest queue, and the worker is the
container's code, configured from the same environment variables.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import boto3

from batch_stats.engine import EngineParams
from batch_stats.local.lambda_driver import ScheduleDriver, SqsEventSource, parse_at
from batch_stats.local.resources import LocalResources, create_resources
from batch_stats.local.services import embedded_postgres, moto_server, patched_environ
from batch_stats.local.webhook import Webhook, webhook
from batch_stats.worker.app import build_worker
from batch_stats.worker.config import WorkerSettings, load_settings
from batch_stats.worker.database import ResultsDatabase
from batch_stats.worker.jobs import JobOutcome
from batch_stats.worker.messages import ImageRef
from batch_stats.worker.metrics import EmfMetrics
from batch_stats.worker.runner import RunOutcome, Worker

Step = Callable[[str], None]


def _no_step(text: str) -> None:
    del text


@dataclass
class LocalPipeline:
    """Handles on the running local pipeline."""

    session: boto3.Session
    resources: LocalResources
    webhook: Webhook
    settings: WorkerSettings
    worker: Worker
    database: ResultsDatabase
    ingest: SqsEventSource
    checks: ScheduleDriver
    moto_url: str
    database_url: str

    def pump_lambda(
        self, *, on_batch: Callable[[int], object] | None = None, timeout: float = 120
    ) -> int:
        """Feed the ingest queue to the Lambda handler until it is empty; return records seen."""
        sqs = self.session.client("sqs")
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            polled = self.ingest.poll_once(wait_seconds=0)
            seen += polled.received
            if on_batch is not None and polled.received:
                on_batch(polled.received - polled.failed)
            if polled.received:
                continue
            attributes = sqs.get_queue_attributes(
                QueueUrl=self.resources.ingest_queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            if not any(int(value) for value in attributes.values()):
                return seen
            time.sleep(0.2)  # failed records come back after the visibility timeout
        raise TimeoutError(f"the ingest queue was not drained within {timeout} s")

    @contextmanager
    def lambda_running(self, *, drain_timeout: float = 300) -> Iterator[None]:
        """Run the event source in the background while the block uploads, as the Lambda's SQS
        event source mapping does in AWS (so the ingest queue stays short), then drain it."""
        stop = threading.Event()
        errors: list[BaseException] = []

        def poll() -> None:
            try:
                while not stop.is_set():
                    self.ingest.poll_once(wait_seconds=1)
            except BaseException as exc:  # reported by the caller's thread
                errors.append(exc)

        thread = threading.Thread(target=poll, name="lambda-event-source", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
        if errors:
            raise errors[0]
        self.pump_lambda(timeout=drain_timeout)

    def await_checks(self, *, timeout: float = 120) -> list[dict[str, object]]:
        """Wait until the earliest pending run check is due and fire the due ones (as
        EventBridge Scheduler would); return what the handler answered ([] if none pending)."""
        pending = self.checks.pending()
        if not pending:
            return []
        due = min(parse_at(s["ScheduleExpression"]) for s in pending)
        wait = (due - datetime.now(UTC)).total_seconds()
        if wait > timeout:
            raise TimeoutError(f"the next run check is due in {wait:.0f} s (over {timeout} s)")
        time.sleep(max(wait, 0) + 0.05)
        return self.checks.fire_due()

    def run_jobs(self, *, jobs: int = 1, timeout: float = 300) -> list[JobOutcome]:
        """Let the worker take messages off the runs queue (job messages and their shards)
        until ``jobs`` jobs have ended; return their final outcomes."""
        ended: list[JobOutcome] = []

        def keep(outcome: JobOutcome) -> None:
            if outcome.final:
                ended.append(outcome)

        self.worker.on_job_outcome = keep
        deadline = time.monotonic() + timeout
        try:
            while len(ended) < jobs:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(ended)} of {jobs} jobs ended in {timeout} s")
                self.worker.poll_once()
        finally:
            self.worker.on_job_outcome = None
        return ended

    def run_worker(self, *, runs: int, timeout: float = 120) -> list[RunOutcome]:
        """Let the worker take shards off the runs queue until ``runs`` runs are finished; return
        the outcomes of the shards that finished them."""
        outcomes: list[RunOutcome] = []

        def keep(outcome: RunOutcome) -> None:
            if outcome.final:
                outcomes.append(outcome)

        self.worker.on_outcome = keep
        deadline = time.monotonic() + timeout
        try:
            while len(outcomes) < runs:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(outcomes)} of {runs} runs processed in {timeout} s")
                self.worker.poll_once()
        finally:
            self.worker.on_outcome = None
        return outcomes


@contextmanager
def local_pipeline(
    work_dir: Path,
    *,
    params: EngineParams,
    on_image: Callable[[ImageRef], object] | None = None,
    step: Step = _no_step,
    metrics: EmfMetrics | None = None,
    stage: str = "local",
    runs_visibility_timeout: int = 60,
    lambda_log_level: str = "WARNING",
    shard_images: int = 5000,
    run_timeout: int = 3600,
) -> Iterator[LocalPipeline]:
    """Start the local pipeline for runs of ``params.batches`` x ``params.images_per_batch``."""
    with ExitStack() as stack:
        step("starting moto (S3, SQS, DynamoDB, SNS, EventBridge Scheduler) in server mode")
        endpoint = stack.enter_context(moto_server())
        stack.enter_context(patched_environ(endpoint.environ()))
        step(f"moto listening on {endpoint.url}")
        step("starting the embedded PostgreSQL")
        database_url = stack.enter_context(embedded_postgres(work_dir / "pgdata"))
        session = boto3.Session()
        resources = create_resources(
            session,
            stage=stage,
            ingest_visibility_timeout=2,
            runs_visibility_timeout=runs_visibility_timeout,
        )
        step(
            f"created {resources.names.raw_bucket}, {resources.names.results_bucket}, "
            f"{resources.names.tracking_table}, queues with DLQs, {resources.names.topic}"
        )
        hook = stack.enter_context(webhook())
        hook.subscribe(session.client("sns"), resources.topic_arn)
        step(f"webhook {hook.url} subscribed to the topic")
        environ = {
            **resources.lambda_environ(
                images_per_batch=params.images_per_batch,
                batches_per_run=params.batches,
                shard_images=shard_images,
                run_timeout=run_timeout,
            ),
            **resources.worker_environ(database_url=database_url),
            "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", lambda_log_level),
        }
        stack.enter_context(patched_environ(environ))
        from batch_counter import handler

        handler._counter.cache_clear()
        stack.callback(handler._counter.cache_clear)
        settings = load_settings(os.environ)
        worker = build_worker(
            settings,
            session=session,
            params=params,
            wait_seconds=1,
            retry_delay_seconds=1,
            metrics=metrics,
            on_image=on_image,
        )
        stack.callback(worker.close)
        version = worker.migrate()
        step(f"database schema at version {version}")
        results = ResultsDatabase.from_url(database_url)
        stack.callback(results.close)
        yield LocalPipeline(
            session=session,
            resources=resources,
            webhook=hook,
            settings=settings,
            worker=worker,
            database=results,
            ingest=SqsEventSource(
                sqs=session.client("sqs"),
                queue_url=resources.ingest_queue_url,
                handler=handler.lambda_handler,
            ),
            checks=ScheduleDriver(
                scheduler=session.client("scheduler"),
                group_name=resources.names.schedule_group,
                handler=handler.lambda_handler,
            ),
            moto_url=endpoint.url,
            database_url=database_url,
        )
        step("stopping the webhook, PostgreSQL and moto")
