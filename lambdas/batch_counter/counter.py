"""The batch counter's logic: record uploads once, complete batches and runs, dispatch runs.

Storage and queue sit behind the two small protocols below, so this module imports no AWS SDK.
Every step is idempotent, which is what makes at-least-once S3 events safe:

1. ``record_object`` writes the object item only if it does not exist yet and, in the same
   transaction, increments the batch and run counters; a duplicate event changes nothing.
2. ``complete_batch`` marks a full batch complete at most once and, in the same transaction,
   increments the run's count of complete batches.
3. A complete run is claimed with a conditional state change OPEN -> DISPATCHING (owner: the SQS
   message id of the record), the run message is sent, then DISPATCHING -> DISPATCHED. A retry of
   the same record, or any record once the claim is older than the lease, sends again: the run
   message may be duplicated in that rare case, and the worker is idempotent by run id.

Steps 2 and 3 run for duplicates too, so a crash between steps is repaired by the redelivery.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import unquote_plus

from batch_counter.keys import InvalidKeyError, UploadKey, parse_upload_key

RUN_MESSAGE_VERSION = 1
DISPATCH_LEASE_SECONDS = 300


class RunState(StrEnum):
    OPEN = "OPEN"
    DISPATCHING = "DISPATCHING"
    DISPATCHED = "DISPATCHED"


@dataclass(frozen=True)
class ObjectCreated:
    """One S3 ObjectCreated notification, key already URL-decoded."""

    bucket: str
    key: str
    size: int
    etag: str
    event_time: str


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    state: RunState
    complete_batches: int


class TrackingStore(Protocol):
    """Durable tracking of uploads, batches and runs (DynamoDB in AWS)."""

    def record_object(self, upload: UploadKey, obj: ObjectCreated, *, now: datetime) -> bool:
        """Record the object once; return True if it was new (counters incremented)."""
        ...

    def complete_batch(self, run_id: str, batch_id: str, *, images_per_batch: int) -> bool:
        """Mark the batch complete if it holds enough images; True if this call completed it."""
        ...

    def run_status(self, run_id: str) -> RunStatus | None: ...

    def claim_dispatch(
        self, run_id: str, *, owner: str, batches_per_run: int, now: datetime, lease_seconds: int
    ) -> bool:
        """Claim OPEN -> DISPATCHING (same owner or expired lease may re-claim); True if claimed."""
        ...

    def mark_dispatched(self, run_id: str, *, owner: str, message_id: str, now: datetime) -> None:
        """DISPATCHING -> DISPATCHED, if still owned by ``owner``."""
        ...

    def run_objects(self, run_id: str) -> dict[str, list[str]]:
        """Keys of the run's recorded objects, by batch id."""
        ...

    def record_bad_key(self, *, bucket: str, key: str, reason: str, now: datetime) -> None:
        """Keep a rejected key where an operator sees it."""
        ...


class RunQueue(Protocol):
    """The queue the workers consume (SQS in AWS)."""

    def send_run(self, body: str) -> str:
        """Send one run message; return its message id."""
        ...


class Outcome(StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    REJECTED_KEY = "rejected_key"
    LATE = "late"


@dataclass
class RecordResult:
    """What happened to the S3 notifications of one SQS record (for metrics and logs)."""

    outcomes: list[tuple[str, Outcome]] = field(default_factory=list)
    rejected: list[InvalidKeyError] = field(default_factory=list)
    dispatched_runs: list[str] = field(default_factory=list)
    ignored_events: int = 0


class MalformedEventError(ValueError):
    """The SQS record does not carry an S3 event notification."""


def parse_s3_notifications(body: str) -> list[ObjectCreated] | None:
    """Parse an SQS body holding an S3 notification; None for S3's ``s3:TestEvent``.

    Events other than ``ObjectCreated:*`` are skipped. Keys are URL-decoded (``unquote_plus``).
    """
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        raise MalformedEventError(f"the SQS body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise MalformedEventError("the SQS body is not a JSON object with 'Records'")
    if payload.get("Event") == "s3:TestEvent":
        return None
    records = payload.get("Records")
    if not isinstance(records, list):
        raise MalformedEventError("the SQS body has no 'Records' list of S3 event notifications")
    created: list[ObjectCreated] = []
    for record in records:
        try:
            if not str(record["eventName"]).startswith("ObjectCreated:"):
                continue
            s3 = record["s3"]
            created.append(
                ObjectCreated(
                    bucket=str(s3["bucket"]["name"]),
                    key=unquote_plus(str(s3["object"]["key"])),
                    size=int(s3["object"].get("size", 0)),
                    etag=str(s3["object"].get("eTag", "")),
                    event_time=str(record.get("eventTime", "")),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedEventError(f"an S3 event record lacks a field: {exc!r}") from exc
    return created


def build_run_message(
    *,
    run_id: str,
    bucket: str,
    batches: Mapping[str, Sequence[str]],
    images_per_batch: int,
    batches_per_run: int,
    now: datetime,
) -> str:
    """The JSON body of a run message (documented in the README)."""
    message: dict[str, Any] = {
        "version": RUN_MESSAGE_VERSION,
        "run_id": run_id,
        "bucket": bucket,
        "prefix": f"uploads/{run_id}/",
        "batches": {batch: sorted(keys) for batch, keys in sorted(batches.items())},
        "images_per_batch": images_per_batch,
        "batches_per_run": batches_per_run,
        "dispatched_at": now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    return json.dumps(message, separators=(",", ":"))


@dataclass(frozen=True, kw_only=True)
class BatchCounter:
    """Counts uploads per batch and dispatches each complete run exactly once."""

    store: TrackingStore
    queue: RunQueue
    images_per_batch: int
    batches_per_run: int
    lease_seconds: int = DISPATCH_LEASE_SECONDS

    def handle_record(self, body: str, *, message_id: str, now: datetime) -> RecordResult:
        """Process one SQS record. Raises only for failures worth a retry of the record."""
        result = RecordResult()
        notifications = parse_s3_notifications(body)
        if notifications is None:
            result.ignored_events += 1
            return result
        for obj in notifications:
            try:
                upload = parse_upload_key(obj.key)
            except InvalidKeyError as exc:
                self.store.record_bad_key(
                    bucket=obj.bucket, key=obj.key, reason=exc.reason, now=now
                )
                result.rejected.append(exc)
                result.outcomes.append((obj.key, Outcome.REJECTED_KEY))
                continue
            new = self.store.record_object(upload, obj, now=now)
            self.store.complete_batch(
                upload.run_id, upload.batch_id, images_per_batch=self.images_per_batch
            )
            status = self.store.run_status(upload.run_id)
            outcome = Outcome.RECORDED if new else Outcome.DUPLICATE
            if new and status is not None and status.state is RunState.DISPATCHED:
                outcome = Outcome.LATE
            result.outcomes.append((obj.key, outcome))
            if self._dispatch_if_complete(status, bucket=obj.bucket, owner=message_id, now=now):
                result.dispatched_runs.append(upload.run_id)
        return result

    def _dispatch_if_complete(
        self, status: RunStatus | None, *, bucket: str, owner: str, now: datetime
    ) -> bool:
        if status is None or status.state is RunState.DISPATCHED:
            return False
        if status.complete_batches < self.batches_per_run:
            return False
        claimed = self.store.claim_dispatch(
            status.run_id,
            owner=owner,
            batches_per_run=self.batches_per_run,
            now=now,
            lease_seconds=self.lease_seconds,
        )
        if not claimed:
            return False
        body = build_run_message(
            run_id=status.run_id,
            bucket=bucket,
            batches=self.store.run_objects(status.run_id),
            images_per_batch=self.images_per_batch,
            batches_per_run=self.batches_per_run,
            now=now,
        )
        message_id = self.queue.send_run(body)
        self.store.mark_dispatched(status.run_id, owner=owner, message_id=message_id, now=now)
        return True
