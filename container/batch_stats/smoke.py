"""Smoke test of a deployed stack: ``python -m batch_stats.smoke --stage dev`` (``make smoke``).

With the caller's AWS credentials: read the stack's outputs, subscribe a temporary SQS queue to
the notification topic, upload one small synthetic run (the stage's batches x images), wait for
the run's notification, check the Parquet object it names, print the timings, and remove what
it created (the queue and its subscription, the uploaded objects with all their versions, the
Parquet object). The pipeline's own records stay: the tracking items (they expire with the
table's TTL) and the run's PostgreSQL rows.

``--local`` runs the same steps against the local pipeline (moto server, embedded PostgreSQL,
the Lambda handler and the worker driven on this machine), which is how the tests run it.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from batch_stats.engine import EngineParams, read_batch_stats
from batch_stats.worker.upload import upload_run

#: Outputs the stack declares (infra/stack.py) and the smoke test reads.
OUTPUTS = ("RawBucketName", "ResultsBucketName", "TopicArn", "ImagesPerBatch", "BatchesPerRun")


class SmokeError(RuntimeError):
    """The deployed pipeline did not do what it should (or could not be reached)."""


@dataclass(frozen=True)
class Target:
    """What the smoke test needs to know about one deployed stage."""

    raw_bucket: str
    results_bucket: str
    topic_arn: str
    images_per_batch: int
    batches_per_run: int


@dataclass(frozen=True)
class Report:
    run_id: str
    status: str
    parquet_uri: str
    batches: int
    images_processed: int
    upload_seconds: float
    notification_seconds: float
    total_seconds: float

    def lines(self) -> list[str]:
        return [
            f"run {self.run_id}: {self.status}, {self.images_processed} images in "
            f"{self.batches} batches -> {self.parquet_uri}",
            f"  upload            {self.upload_seconds:8.1f} s",
            f"  upload -> notice  {self.notification_seconds:8.1f} s "
            "(Lambda, dispatch, worker start and processing)",
            f"  total             {self.total_seconds:8.1f} s",
        ]


def target_from_stack(session: Any, stack_name: str) -> Target:
    """The stage's buckets, topic and run shape from the CloudFormation stack's outputs."""
    try:
        stacks = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    except Exception as exc:  # botocore's ClientError; the message says what is wrong
        raise SmokeError(f"cannot read stack {stack_name}: {exc}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    missing = [name for name in OUTPUTS if name not in outputs]
    if missing:
        raise SmokeError(
            f"stack {stack_name} lacks the outputs {', '.join(missing)}: deploy the current "
            "version of the stack first"
        )
    return Target(
        raw_bucket=outputs["RawBucketName"],
        results_bucket=outputs["ResultsBucketName"],
        topic_arn=outputs["TopicArn"],
        images_per_batch=int(outputs["ImagesPerBatch"]),
        batches_per_run=int(outputs["BatchesPerRun"]),
    )


@contextmanager
def notification_queue(session: Any, topic_arn: str, name: str) -> Iterator[tuple[str, str]]:
    """A temporary SQS queue subscribed to the topic: (queue URL, subscription ARN)."""
    sqs, sns = session.client("sqs"), session.client("sns")
    url = sqs.create_queue(QueueName=name, Attributes={"SqsManagedSseEnabled": "true"})["QueueUrl"]
    subscription = None
    try:
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                }
            ],
        }
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
        subscription = sns.subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, ReturnSubscriptionArn=True
        )["SubscriptionArn"]
        yield url, subscription
    finally:
        if subscription is not None:
            sns.unsubscribe(SubscriptionArn=subscription)
        sqs.delete_queue(QueueUrl=url)


def wait_for_notification(
    sqs: Any, queue_url: str, run_id: str, *, timeout: float
) -> dict[str, Any]:
    """The topic's message about ``run_id`` (other runs' messages are left alone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        wait = int(max(0, min(20, deadline - time.monotonic())))
        for message in sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait
        ).get("Messages", []):
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            try:
                body = json.loads(json.loads(message["Body"])["Message"])
            except (KeyError, TypeError, json.JSONDecodeError):
                continue  # an alarm's notification, not a run's
            if isinstance(body, dict) and body.get("run_id") == run_id:
                return body
    raise SmokeError(f"no notification for run {run_id} within {timeout:.0f} s")


def _delete_prefix(s3: Any, bucket: str, prefix: str) -> int:
    """Delete every version (and delete marker) under ``prefix``; return how many."""
    deleted = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        entries = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        for start in range(0, len(entries), 1000):
            chunk = entries[start : start + 1000]
            s3.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
            deleted += len(chunk)
    return deleted


def run_smoke(
    session: Any,
    target: Target,
    *,
    run_id: str | None = None,
    timeout: float = 900,
    step: Callable[[str], None] = print,
) -> Report:
    """Upload a run, wait for its notification, check its Parquet object, clean up."""
    run_id = run_id or f"smoke-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    params = EngineParams(images_per_batch=target.images_per_batch, batches=target.batches_per_run)
    s3, sqs = session.client("s3"), session.client("sqs")
    started = time.monotonic()
    results_key = f"results/{run_id}/batch_stats.parquet"
    try:
        with notification_queue(session, target.topic_arn, f"imgpipe-{run_id}") as (url, _):
            step(f"subscribed a temporary queue to {target.topic_arn}")
            uploads = upload_run(s3, target.raw_bucket, run_id, params=params)
            uploaded = time.monotonic()
            step(f"uploaded {len(uploads)} images to s3://{target.raw_bucket}/uploads/{run_id}/")
            note = wait_for_notification(sqs, url, run_id, timeout=timeout)
            noticed = time.monotonic()
            step(f"notification received: {note.get('status')}")
            if note.get("status") != "finished":
                raise SmokeError(f"run {run_id} {note.get('status')}: {note.get('error')}")
            expected_uri = f"s3://{target.results_bucket}/{results_key}"
            if note.get("parquet_uri") != expected_uri:
                raise SmokeError(
                    f"notification names {note.get('parquet_uri')}, not {expected_uri}"
                )
            body = s3.get_object(Bucket=target.results_bucket, Key=results_key)["Body"].read()
            stats, _metadata = read_batch_stats(io.BytesIO(body))
            if len(stats) != target.batches_per_run:
                raise SmokeError(
                    f"{expected_uri} holds {len(stats)} batches, not {target.batches_per_run}"
                )
            step(f"checked {expected_uri}: {len(stats)} batches")
    finally:
        removed = _delete_prefix(s3, target.raw_bucket, f"uploads/{run_id}/")
        removed += _delete_prefix(s3, target.raw_bucket, f"rejected/{run_id}/")
        removed += _delete_prefix(s3, target.results_bucket, f"results/{run_id}/")
        step(f"removed {removed} objects (all versions) and the temporary queue")
    return Report(
        run_id=run_id,
        status=str(note["status"]),
        parquet_uri=expected_uri,
        batches=len(stats),
        images_processed=int(note.get("images_processed", 0)),
        upload_seconds=uploaded - started,
        notification_seconds=noticed - uploaded,
        total_seconds=noticed - started,
    )


@contextmanager
def local_target(work_dir: Path, *, images_per_batch: int, batches: int) -> Iterator[Target]:
    """The local pipeline, its Lambda and worker driven in a background thread, as a target."""
    from batch_stats.local.pipeline import local_pipeline
    from batch_stats.local.services import patched_environ
    from batch_stats.worker.metrics import EmfMetrics

    params = EngineParams(images_per_batch=images_per_batch, batches=batches)
    # No metric documents on the console: the report is the output.
    with (
        patched_environ({"POWERTOOLS_METRICS_DISABLED": "true"}),
        local_pipeline(
            work_dir, params=params, stage="smoke", metrics=EmfMetrics(enabled=False)
        ) as pipeline,
    ):
        stop = threading.Event()
        errors: list[BaseException] = []

        def drive() -> None:
            try:
                while not stop.is_set():
                    pipeline.pump_lambda(timeout=60)
                    pipeline.worker.poll_once()
            except BaseException as exc:  # surfaced after the smoke test
                errors.append(exc)

        thread = threading.Thread(target=drive, name="local-pipeline", daemon=True)
        thread.start()
        try:
            yield Target(
                raw_bucket=pipeline.resources.names.raw_bucket,
                results_bucket=pipeline.resources.names.results_bucket,
                topic_arn=pipeline.resources.topic_arn,
                images_per_batch=images_per_batch,
                batches_per_run=batches,
            )
        finally:
            stop.set()
            thread.join(timeout=60)
        if errors:
            raise SmokeError(f"the local pipeline failed: {errors[0]!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batch_stats.smoke", description=__doc__)
    parser.add_argument("--stage", default="dev", help="stack Imgpipe-<stage> (default: dev)")
    parser.add_argument("--region", help="AWS region (default: the credentials' region)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait (900)")
    parser.add_argument(
        "--local",
        action="store_true",
        help="run against the local pipeline (moto, embedded PostgreSQL) instead of AWS",
    )
    args = parser.parse_args(argv)
    try:
        if args.local:
            import tempfile

            with (
                tempfile.TemporaryDirectory(prefix="imgpipe-smoke-") as work,
                local_target(Path(work), images_per_batch=3, batches=2) as target,
            ):
                report = run_smoke(boto3.Session(), target, timeout=args.timeout)
        else:
            session = boto3.Session(region_name=args.region)
            target = target_from_stack(session, f"Imgpipe-{args.stage}")
            report = run_smoke(session, target, timeout=args.timeout)
    except SmokeError as exc:
        print(f"smoke test failed: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
