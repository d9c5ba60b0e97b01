"""Lambda entry point: SQS records carrying S3 notifications -> BatchCounter, and the runs'
incomplete-run checks (``{"imgpipe": "check-run", "run_id": ...}`` from their schedules).

The handler only wires Powertools (batch processing with partial failures, logging, metrics) to
the logic in :mod:`batch_counter.counter`. Settings and AWS clients are created on the first
invocation and reused by the warm container.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from batch_counter.aws import (
    DynamoTrackingStore,
    S3Objects,
    SchedulerRunChecks,
    SnsNotifier,
    SqsRunQueue,
)
from batch_counter.config import METRICS_NAMESPACE, SERVICE_NAME, load_settings
from batch_counter.counter import (
    CHECK_EVENT_MARKER,
    BatchCounter,
    Checked,
    MalformedEventError,
    Outcome,
    Prerecorded,
)
from batch_counter.keys import is_run_id

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE_NAME))
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", METRICS_NAMESPACE),
    service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE_NAME),
)
processor = BatchProcessor(event_type=EventType.SQS)


#: The ARN this function is invoked by (from the first invocation's context): what the runs'
#: check schedules invoke.
_function_arn: list[str] = []


@cache
def _counter() -> BatchCounter:
    settings = load_settings(os.environ)
    return BatchCounter(
        store=DynamoTrackingStore(
            client=boto3.client("dynamodb"), table_name=settings.tracking_table_name
        ),
        queue=SqsRunQueue(client=boto3.client("sqs"), queue_url=settings.runs_queue_url),
        objects=S3Objects(client=boto3.client("s3")),
        images_per_batch=settings.images_per_batch,
        batches_per_run=settings.batches_per_run,
        shard_images=settings.shard_images,
        checks=SchedulerRunChecks(
            client=boto3.client("scheduler"),
            group_name=settings.schedule_group_name,
            role_arn=settings.scheduler_role_arn,
            target_arn=_function_arn[0] if _function_arn else "",
        ),
        notifier=SnsNotifier(
            client=boto3.client("sns"), topic_arn=settings.notifications_topic_arn
        ),
        run_timeout=timedelta(seconds=settings.run_timeout),
    )


def record_handler(record: SQSRecord, prerecorded: Prerecorded | None = None) -> None:
    """Handle one SQS record; an exception marks only this record as failed (retried)."""
    try:
        result = _counter().handle_record(
            record.body,
            message_id=record.message_id,
            now=datetime.now(UTC),
            prerecorded=prerecorded,
        )
    except MalformedEventError as exc:
        # Not an S3 notification: retrying cannot help, so keep it visible in logs and metrics
        # instead of looping it through the queue.
        logger.warning("ignored a record that is not an S3 event", reason=str(exc))
        metrics.add_metric(name="RejectedKeys", unit=MetricUnit.Count, value=1)
        return
    except Exception:
        logger.exception("record failed; SQS will deliver it again", message_id=record.message_id)
        metrics.add_metric(name="RecordsFailed", unit=MetricUnit.Count, value=1)
        raise
    for key, outcome in result.outcomes:
        if outcome is Outcome.RECORDED:
            metrics.add_metric(name="ImagesRecorded", unit=MetricUnit.Count, value=1)
        elif outcome is Outcome.DUPLICATE:
            metrics.add_metric(name="DuplicateEvents", unit=MetricUnit.Count, value=1)
            logger.info("duplicate event ignored", key=key)
        elif outcome is Outcome.LATE:
            metrics.add_metric(name="LateUploads", unit=MetricUnit.Count, value=1)
            logger.warning(
                "upload arrived after its run was closed; kept, reported, not processed", key=key
            )
        elif outcome is Outcome.MANIFEST:
            metrics.add_metric(name="ManifestsReceived", unit=MetricUnit.Count, value=1)
        elif outcome is Outcome.JOB_DUPLICATE:
            metrics.add_metric(name="DuplicateJobs", unit=MetricUnit.Count, value=1)
    for rejected in result.rejected:
        metrics.add_metric(name="RejectedKeys", unit=MetricUnit.Count, value=1)
        logger.warning(
            "upload key rejected; object copied under rejected/ and reported",
            key=rejected.key,
            reason=rejected.reason,
        )
    for run_id, reason in result.failed_runs:
        metrics.add_metric(name="RunsRejected", unit=MetricUnit.Count, value=1)
        logger.warning("run closed as failed", run_id=run_id, reason=reason)
    for run_id in result.dispatched_runs:
        metrics.add_metric(name="RunsDispatched", unit=MetricUnit.Count, value=1)
        logger.info("run dispatched", run_id=run_id)
    for job_id in result.dispatched_jobs:
        metrics.add_metric(name="JobsDispatched", unit=MetricUnit.Count, value=1)
        logger.info("job dispatched", job_id=job_id)
    for job_id, kept_at in result.duplicate_jobs:
        logger.warning(
            "a second document under a dispatched job id: kept, reported, not run",
            job_id=job_id,
            kept_at=kept_at,
        )


class BadCheckEventError(ValueError):
    """A check event without a valid run id."""


def check_handler(event: dict[str, Any]) -> dict[str, Any]:
    """One run's check; an exception makes Scheduler retry it."""
    run_id = event.get("run_id")
    if not isinstance(run_id, str) or not is_run_id(run_id):
        raise BadCheckEventError(
            f"check event {event!r} does not name a valid run id (1-64 letters, digits, '_' "
            f'and \'-\'); expected {{"imgpipe": "{CHECK_EVENT_MARKER}", "run_id": "<run id>"}}'
        )
    checked = _counter().check_run(run_id, now=datetime.now(UTC))
    if checked is Checked.INCOMPLETE:
        metrics.add_metric(name="RunsIncomplete", unit=MetricUnit.Count, value=1)
        logger.warning("run reported incomplete", run_id=run_id)
    elif checked is Checked.LATE:
        metrics.add_metric(name="LateUploadsReported", unit=MetricUnit.Count, value=1)
        logger.warning("late uploads reported", run_id=run_id)
    else:
        logger.info("run checked", run_id=run_id, checked=checked.value)
    return {"run_id": run_id, "checked": checked.value}


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Process an SQS batch of S3 notifications (reporting partial batch failures), or a run's
    check."""
    if not _function_arn:
        _function_arn.append(context.invoked_function_arn)
    if event.get("imgpipe") == CHECK_EVENT_MARKER:
        return check_handler(event)
    # The batch's new uploads are recorded with one transaction per run first; each record is
    # then handled alone (partial batch failures), the run read once per run and batch.
    records = [
        (str(r.get("messageId", "")), str(r.get("body", "")))
        for r in event.get("Records") or []
        if isinstance(r, dict)
    ]
    prerecorded = _counter().prerecord(records, now=datetime.now(UTC))
    return dict(
        process_partial_response(
            event=event,
            record_handler=partial(record_handler, prerecorded=prerecorded),
            processor=processor,
            context=context,
        )
    )
