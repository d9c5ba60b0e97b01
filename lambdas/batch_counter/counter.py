"""The batch counter's logic: record uploads once, close each run on a defined set, dispatch it.

Storage, queue and object store sit behind the small protocols below, so this module imports no
AWS SDK. Every step is idempotent, which is what makes at-least-once S3 events safe:

1. ``record_object``: one transaction puts the object item (only if new), increments the batch's
   and the run's counters, on condition that the run is still OPEN. A duplicate event changes
   nothing; an upload to a run that is no longer OPEN is recorded apart as a late upload. Then one
   read of the run item: two DynamoDB calls per object in the common case.
2. When the run's count reaches what it expects (its manifest's total, or the stack's
   ``BATCHES_PER_RUN`` x ``IMAGES_PER_BATCH`` without a manifest), the batch counts are read
   (one Query) and compared with the manifest (or the stack shape). A run whose counts match is
   claimed OPEN -> DISPATCHING with a condition on the count that was checked, so the set it holds
   is exactly the set that was verified, and the shard plan is stored with the claim.
3. One message per shard is sent to the FIFO runs queue with deduplication id
   ``<run_id>.<shard>``, then DISPATCHING -> DISPATCHED. Any record finding the run DISPATCHING
   (a retry, a duplicate, a late upload) sends again: SQS drops the copies within its five-minute
   deduplication window, so a lost SendMessage response or a failed state update sends nothing
   twice.
4. A run that is still OPEN when it is first seen gets one check (a one-time schedule in AWS),
   due ``run_timeout`` later; the run item remembers that it has one, so later uploads cost
   nothing more. When the check comes (:meth:`BatchCounter.check_run`): a closed run needs
   nothing; a run uploaded to less than ``run_timeout`` ago is checked again at its last upload
   plus ``run_timeout``; otherwise it is claimed OPEN -> INCOMPLETE on condition that its last
   upload is the one that was checked, and only the claimant publishes the ``incomplete``
   notification, naming the missing batches and the counts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol
from urllib.parse import quote, unquote_plus

from batch_counter.keys import (
    InvalidKeyError,
    ManifestKey,
    UploadKey,
    is_job_key,
    manifest_key,
    parse_job_key,
    parse_key,
    run_id_of,
)
from batch_counter.manifest import Manifest, ManifestError, parse_manifest

RUN_MESSAGE_VERSION = 2
DEFAULT_SHARD_IMAGES = 5000
JOB_MESSAGE_VERSION = 1
#: Largest job document the counter reads into a job message (the worker's limit too).
MAX_JOB_DOCUMENT_BYTES = 64 * 1024


class JobState(StrEnum):
    DISPATCHING = "DISPATCHING"
    DISPATCHED = "DISPATCHED"


@dataclass(frozen=True)
class JobClaim:
    """The job item of the tracking table after a claim: the first document seen for the id."""

    job_id: str
    state: JobState
    etag: str
    size: int
    key: str
    bucket: str
    #: True when this call created the item (the first event for the id).
    new: bool


class RunState(StrEnum):
    OPEN = "OPEN"
    DISPATCHING = "DISPATCHING"
    DISPATCHED = "DISPATCHED"
    INCOMPLETE = "INCOMPLETE"


@dataclass(frozen=True)
class ObjectCreated:
    """One S3 ObjectCreated notification, key already URL-decoded."""

    bucket: str
    key: str
    size: int
    etag: str
    event_time: str


@dataclass(frozen=True)
class Shard:
    """Whole batches ``first_batch`` .. ``last_batch`` in the order of ``shard_order``."""

    first_batch: str
    last_batch: str
    images: int


def shard_order(batch_id: str) -> str:
    """The order of batches in shards: that of the object items' sort keys (``OBJ#<batch>/``)."""
    return batch_id + "/"


def plan_shards(sizes: Mapping[str, int], *, shard_images: int) -> list[Shard]:
    """Consecutive whole batches, at most ``shard_images`` images a shard (a larger batch alone)."""
    shards: list[Shard] = []
    first = last = ""
    images = 0
    for batch_id in sorted(sizes, key=shard_order):
        size = sizes[batch_id]
        if images and images + size > shard_images:
            shards.append(Shard(first, last, images))
            images = 0
        if not images:
            first = batch_id
        last = batch_id
        images += size
    if images:
        shards.append(Shard(first, last, images))
    return shards


@dataclass(frozen=True)
class RunSnapshot:
    """The run item of the tracking table."""

    run_id: str
    state: RunState
    image_count: int
    manifest_sha: str | None = None
    expected_images: int | None = None
    failure: str | None = None
    plan: tuple[Shard, ...] = ()
    bucket: str | None = None
    last_upload_at: datetime | None = None
    check_scheduled: bool = False
    late_count: int = 0
    late_reported: int = 0
    last_late_at: datetime | None = None
    late_check_scheduled: bool = False
    late_reported_at: str | None = None


class Recorded(StrEnum):
    NEW = "new"
    DUPLICATE = "duplicate"
    LATE = "late"


class ManifestRecorded(StrEnum):
    RECORDED = "recorded"
    SAME = "same"
    DIFFERENT = "different"
    CLOSED = "closed"


class TrackingStore(Protocol):
    """Durable tracking of uploads, batches and runs (DynamoDB in AWS)."""

    def record_object(self, upload: UploadKey, obj: ObjectCreated, *, now: datetime) -> Recorded:
        """Record the object once in an OPEN run (one call)."""
        ...

    def record_objects(
        self, run_id: str, uploads: Sequence[tuple[UploadKey, ObjectCreated]], *, now: datetime
    ) -> bool:
        """Record new objects of one OPEN run together (one call, all or nothing); False, with
        nothing changed, if one of them is already recorded or the run no longer takes uploads."""
        ...

    def get_run(self, run_id: str) -> RunSnapshot | None:
        """The run item (one consistent read)."""
        ...

    def batch_counts(self, run_id: str) -> dict[str, int]:
        """Objects recorded per batch."""
        ...

    def record_manifest(
        self, run_id: str, manifest: Manifest, *, bucket: str, now: datetime
    ) -> ManifestRecorded:
        """Attach the manifest to the OPEN run (creating the run item if needed)."""
        ...

    def claim_dispatch(
        self,
        run_id: str,
        *,
        seen_images: int | None,
        plan: Sequence[Shard],
        failure: str | None,
        extras: Mapping[str, int],
        bucket: str,
        now: datetime,
    ) -> RunSnapshot | None:
        """OPEN -> DISPATCHING if the run still holds ``seen_images``; the new item, or None."""
        ...

    def mark_dispatched(self, run_id: str, *, now: datetime) -> None:
        """DISPATCHING -> DISPATCHED (no-op if already done)."""
        ...

    def record_late(self, run_id: str, *, key: str, reason: str, now: datetime) -> bool:
        """Keep an upload the run no longer takes and count it on the run (``late_count``,
        ``last_late_at``); True the first time."""
        ...

    def late_uploads(self, run_id: str) -> list[dict[str, str]]:
        """The run's late uploads: key, reason, recorded_at (ISO 8601), in key order."""
        ...

    def mark_late_check_scheduled(self, run_id: str) -> None:
        """Remember that a check for the run's unreported late uploads exists."""
        ...

    def claim_late_report(
        self, run_id: str, *, late_count: int, last_late_at: datetime, reported_at: str
    ) -> bool:
        """Mark ``late_count`` late uploads reported, up to those recorded at ``reported_at``
        (and the late check done), if the run still has exactly that many; True if claimed."""
        ...

    def release_late_report(self, run_id: str, *, late_reported: int, reported_at: str) -> None:
        """Undo a claim whose report could not be sent (the retried check reports them)."""
        ...

    def record_bad_key(
        self,
        *,
        run_id: str | None,
        bucket: str,
        key: str,
        reason: str,
        copied_to: str | None,
        now: datetime,
    ) -> None:
        """Keep a rejected key where an operator (and its run's notification) sees it."""
        ...

    def mark_check_scheduled(self, run_id: str) -> None:
        """Remember that the run's incomplete-run check exists."""
        ...

    def mark_incomplete(self, run_id: str, *, last_upload_at: datetime, now: datetime) -> bool:
        """OPEN -> INCOMPLETE if the last upload is still ``last_upload_at``; True if claimed."""
        ...

    def reopen(self, run_id: str) -> None:
        """INCOMPLETE -> OPEN (its notification could not be sent; the check comes again)."""
        ...

    def reported(self, run_id: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        """The run's bad keys and late uploads, as the worker's notification lists them."""
        ...

    def claim_job(self, job_id: str, obj: ObjectCreated, *, now: datetime) -> JobClaim:
        """Create the job's item (DISPATCHING, with the document's ETag and size) if it does
        not exist; return the item as it is now (one conditional write, one read if it
        existed)."""
        ...

    def mark_job_dispatched(self, job_id: str, *, now: datetime) -> None:
        """DISPATCHING -> DISPATCHED (no-op if already done)."""
        ...

    def record_job_duplicate(
        self, job_id: str, obj: ObjectCreated, *, copied_to: str | None, now: datetime
    ) -> bool:
        """Keep a second document uploaded under a claimed job id; True the first time."""
        ...


class RunChecks(Protocol):
    """One-time checks of runs that may stay incomplete (EventBridge Scheduler in AWS)."""

    def schedule_check(self, run_id: str, *, at: datetime) -> None:
        """Have :meth:`BatchCounter.check_run` called for the run at ``at`` (idempotent)."""
        ...


class Notifier(Protocol):
    """The notifications topic (SNS in AWS)."""

    def publish(self, *, subject: str, message: str) -> None: ...


class RunQueue(Protocol):
    """The queue the workers consume (an SQS FIFO queue in AWS)."""

    def send_run(self, body: str, *, deduplication_id: str, group_id: str) -> str:
        """Send one run message; return its message id."""
        ...


class ObjectStore(Protocol):
    """Reads of manifests and copies of rejected uploads (S3 in AWS)."""

    def get(self, bucket: str, key: str) -> bytes | None:
        """The object's bytes; None if it does not exist."""
        ...

    def copy(self, *, bucket: str, key: str, to_key: str, metadata: Mapping[str, str]) -> bool:
        """Copy within the bucket; False if the source does not exist."""
        ...


class Outcome(StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    REJECTED_KEY = "rejected_key"
    LATE = "late"
    MANIFEST = "manifest"
    JOB = "job"
    JOB_DUPLICATE = "job_duplicate"


@dataclass
class RecordResult:
    """What happened to the S3 notifications of one SQS record (for metrics and logs)."""

    outcomes: list[tuple[str, Outcome]] = field(default_factory=list)
    rejected: list[InvalidKeyError] = field(default_factory=list)
    dispatched_runs: list[str] = field(default_factory=list)
    failed_runs: list[tuple[str, str]] = field(default_factory=list)
    ignored_events: int = 0
    dispatched_jobs: list[str] = field(default_factory=list)
    duplicate_jobs: list[tuple[str, str]] = field(default_factory=list)


def rejected_job_key(job_id: str, etag: str) -> str:
    """Where a second document uploaded under a claimed job id is kept."""
    digest = hashlib.sha256(etag.encode()).hexdigest()[:24]
    return f"rejected/jobs/{job_id}/{digest}.json"


def build_job_message(
    *, job_id: str, obj: ObjectCreated, document: str | None, failure: str | None, now: datetime
) -> str:
    """The JSON body of a job message (documented in the README): the document as uploaded
    (the worker validates it), or why it could not be read."""
    return json.dumps(
        {
            "type": "job",
            "version": JOB_MESSAGE_VERSION,
            "job_id": job_id,
            "bucket": obj.bucket,
            "key": obj.key,
            "etag": obj.etag,
            "size": obj.size,
            "document": document,
            "failure": failure,
            "dispatched_at": now.astimezone(UTC)
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z"),
        },
        separators=(",", ":"),
    )


def rejected_key_for(key: str, run_id: str | None) -> str:
    """Where a bad-key upload is copied: under its run when the key names a valid run id."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"rejected/{run_id or '_unknown_run'}/_bad_keys/{digest}"


class Checked(StrEnum):
    """What a run's check found."""

    GONE = "gone"
    CLOSED = "closed"
    RESCHEDULED = "rescheduled"
    INCOMPLETE = "incomplete"
    LATE = "late"


#: The event a run's check invokes the function with.
CHECK_EVENT_MARKER = "check-run"


def check_event(run_id: str) -> dict[str, str]:
    """The payload of a run's check (the schedule's input)."""
    return {"imgpipe": CHECK_EVENT_MARKER, "run_id": run_id}


#: Longest lists a notification carries, as the worker's (the counts are always full).
NOTIFICATION_LIST_LIMIT = 100


def build_incomplete_notification(
    *,
    run: RunSnapshot,
    counts: Mapping[str, int],
    manifest: Manifest | None,
    images_per_batch: int,
    batches_per_run: int,
    run_timeout: timedelta,
    bad_keys: Sequence[dict[str, str]] = (),
    late_uploads: Sequence[dict[str, str]] = (),
) -> dict[str, object]:
    """The ``incomplete`` notification: the run notification's fields, plus what is missing.

    With a manifest, the missing batches are those of the manifest with fewer objects than it
    announces; without one, the batches seen with fewer than ``images_per_batch`` objects, and
    ``unseen_batches`` counts the batches of the stack's run shape that never got an upload.
    """
    if manifest is not None:
        expected = {b: m.images for b, m in manifest.batches.items()}
        expected_batches = len(expected)
        extras = {b: n for b, n in counts.items() if b not in expected}
    else:
        expected = {b: images_per_batch for b in counts}
        expected_batches = batches_per_run
        extras = {}
    missing = [
        {"batch_id": b, "expected": n, "received": counts.get(b, 0)}
        for b, n in sorted(expected.items())
        if counts.get(b, 0) < n
    ]
    unseen = 0 if manifest is not None else max(batches_per_run - len(counts), 0)
    expected_images = (
        manifest.total_images if manifest is not None else images_per_batch * batches_per_run
    )
    limit = NOTIFICATION_LIST_LIMIT
    minutes = run_timeout.total_seconds() / 60
    return {
        "run_id": run.run_id,
        "status": "incomplete",
        "notification_id": f"{run.run_id}:incomplete",
        "parquet_uri": None,
        "batch_count": len(counts),
        "statistics": [],
        "images_processed": 0,
        "shards": 0,
        "rejected_count": 0,
        "rejected": [],
        "bad_keys": list(bad_keys[:limit]),
        "bad_key_count": len(bad_keys),
        "late_uploads": list(late_uploads[:limit]),
        "late_upload_count": len(late_uploads),
        "extra_batches": dict(sorted(extras.items())[:limit]),
        "error": (
            f"run incomplete: no upload for {minutes:g} minutes, {run.image_count} of "
            f"{expected_images} images received, {len(missing) + unseen} of {expected_batches} "
            "batches missing or short"
        ),
        "expected_images": expected_images,
        "received_images": run.image_count,
        "expected_batches": expected_batches,
        "missing_batches": missing[:limit],
        "missing_batch_count": len(missing),
        "unseen_batches": unseen,
        "manifest": manifest is not None,
        "last_upload_at": (
            None
            if run.last_upload_at is None
            else run.last_upload_at.astimezone(UTC).isoformat(timespec="seconds")
        ),
    }


def _is_md5_etag(etag: str) -> bool:
    """A single-part upload's ETag is the MD5 of its bytes (multipart ones end in ``-<parts>``;
    SSE-KMS objects have other ETags, but the raw bucket uses SSE-S3)."""
    text = etag.strip('"')
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def build_late_notification(
    *,
    run: RunSnapshot,
    late_uploads: Sequence[dict[str, str]],
    late_total: int,
    run_timeout: timedelta,
    bad_keys: Sequence[dict[str, str]] = (),
) -> dict[str, object]:
    """The ``late`` notification: the incomplete notification's shape, for uploads that came
    after the run was closed (``late_uploads``: this group, since the previous report)."""
    limit = NOTIFICATION_LIST_LIMIT
    minutes = run_timeout.total_seconds() / 60
    count = len(late_uploads)
    return {
        "run_id": run.run_id,
        "status": "late",
        "notification_id": f"{run.run_id}:late:{late_total}",
        "parquet_uri": None,
        "batch_count": 0,
        "statistics": [],
        "images_processed": 0,
        "shards": len(run.plan),
        "rejected_count": 0,
        "rejected": [],
        "bad_keys": list(bad_keys[:limit]),
        "bad_key_count": len(bad_keys),
        "late_uploads": list(late_uploads[:limit]),
        "late_upload_count": count,
        "late_upload_total": late_total,
        "extra_batches": {},
        "error": (
            f"{count} upload{'s' if count != 1 else ''} arrived after run {run.run_id} was "
            f"closed ({run.state.value.lower()}); kept under uploads/, not processed; no "
            f"further late upload for {minutes:g} minutes"
        ),
        "run_state": run.state.value,
        "received_images": run.image_count,
        "last_late_at": (
            None
            if run.last_late_at is None
            else run.last_late_at.astimezone(UTC).isoformat(timespec="seconds")
        ),
    }


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
    shard: int,
    plan: Sequence[Shard],
    failure: str | None,
    now: datetime,
) -> str:
    """The JSON body of one shard's run message (documented in the README): a reference to the
    run and its shard, not a list of keys."""
    part = plan[shard] if plan else Shard("", "", 0)
    message = {
        "version": RUN_MESSAGE_VERSION,
        "run_id": run_id,
        "bucket": bucket,
        "shard": shard,
        "shards": max(len(plan), 1),
        "first_batch": part.first_batch,
        "last_batch": part.last_batch,
        "images": part.images,
        "failure": failure,
        "dispatched_at": now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    return json.dumps(message, separators=(",", ":"))


#: Most uploads recorded in one transaction (DynamoDB takes 100 actions: one put per upload,
#: one update per batch and one of the run).
RECORD_GROUP_LIMIT = 48


@dataclass
class Prerecorded:
    """Uploads of a batch of SQS records recorded together, before each record is handled.

    ``recorded`` holds ``(message id, object key)`` of the uploads recorded as new;
    ``advance_with`` names, per run, the one record that reads the run and closes it if due
    (the others skip that read: the run item already counts every upload of the batch).
    """

    recorded: set[tuple[str, str]] = field(default_factory=set)
    advance_with: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Verdict:
    plan: list[Shard]
    failure: str | None
    extras: dict[str, int]


@dataclass(frozen=True, kw_only=True)
class BatchCounter:
    """Counts uploads per run and dispatches each complete run exactly once, in shards."""

    store: TrackingStore
    queue: RunQueue
    objects: ObjectStore
    images_per_batch: int
    batches_per_run: int
    shard_images: int = DEFAULT_SHARD_IMAGES
    checks: RunChecks | None = None
    notifier: Notifier | None = None
    run_timeout: timedelta = timedelta(hours=1)

    def prerecord(self, records: Sequence[tuple[str, str]], *, now: datetime) -> Prerecorded:
        """Record the new uploads of a batch of SQS records ``(message id, body)`` with one
        transaction per run (up to :data:`RECORD_GROUP_LIMIT` uploads each) instead of one each.

        Only well-formed upload keys are taken, each key once. A group that the table refuses
        (a duplicate among them, a run no longer open) or that fails changes nothing: its
        records then go through :meth:`handle_record` alone, which decides and reports. Pass the
        result to :meth:`handle_record` for every record of the batch.
        """
        groups: dict[str, list[tuple[str, UploadKey, ObjectCreated]]] = {}
        seen: set[str] = set()
        for message_id, body in records:
            try:
                notifications = parse_s3_notifications(body) or []
            except MalformedEventError:
                continue
            for obj in notifications:
                try:
                    parsed = parse_key(obj.key)
                except InvalidKeyError:
                    continue
                if isinstance(parsed, UploadKey) and obj.key not in seen:
                    seen.add(obj.key)
                    groups.setdefault(parsed.run_id, []).append((message_id, parsed, obj))
        done = Prerecorded()
        for run_id, uploads in groups.items():
            if len(uploads) < 2:
                continue
            for start in range(0, len(uploads), RECORD_GROUP_LIMIT):
                chunk = uploads[start : start + RECORD_GROUP_LIMIT]
                try:
                    recorded = self.store.record_objects(
                        run_id, [(upload, obj) for _, upload, obj in chunk], now=now
                    )
                except Exception:  # each record then records itself, retried and reported
                    recorded = False
                if recorded:
                    done.recorded.update((message_id, obj.key) for message_id, _, obj in chunk)
                    done.advance_with[run_id] = chunk[-1][0]
        return done

    def handle_record(
        self,
        body: str,
        *,
        message_id: str,
        now: datetime,
        prerecorded: Prerecorded | None = None,
    ) -> RecordResult:
        """Process one SQS record. Raises only for failures worth a retry of the record."""
        result = RecordResult()
        notifications = parse_s3_notifications(body)
        if notifications is None:
            result.ignored_events += 1
            return result
        for obj in notifications:
            if is_job_key(obj.key):
                self._job(obj, now=now, result=result)
                continue
            try:
                parsed = parse_key(obj.key)
            except InvalidKeyError as exc:
                self._reject_key(obj, exc, now=now)
                result.rejected.append(exc)
                result.outcomes.append((obj.key, Outcome.REJECTED_KEY))
                continue
            if isinstance(parsed, ManifestKey):
                self._manifest(parsed, obj, now=now, result=result)
                continue
            if prerecorded is not None and (message_id, obj.key) in prerecorded.recorded:
                result.outcomes.append((obj.key, Outcome.RECORDED))
                if prerecorded.advance_with.get(parsed.run_id) == message_id:
                    self._advance(
                        self.store.get_run(parsed.run_id), bucket=obj.bucket, now=now, result=result
                    )
                continue
            recorded = self.store.record_object(parsed, obj, now=now)
            outcome = {
                Recorded.NEW: Outcome.RECORDED,
                Recorded.DUPLICATE: Outcome.DUPLICATE,
                Recorded.LATE: Outcome.LATE,
            }[recorded]
            if recorded is Recorded.LATE and not self.store.record_late(
                parsed.run_id, key=obj.key, reason="after_dispatch", now=now
            ):
                outcome = Outcome.DUPLICATE
            result.outcomes.append((obj.key, outcome))
            self._advance(
                self.store.get_run(parsed.run_id), bucket=obj.bucket, now=now, result=result
            )
        return result

    def _job(self, obj: ObjectCreated, *, now: datetime, result: RecordResult) -> None:
        """Dispatch a job document exactly once per job id.

        The first event for ``jobs/<job_id>.json`` claims the id (a conditional write keeping
        the document's ETag and size); the document is read and sent in ONE job message
        (deduplication id ``<job_id>.job``) and the item goes DISPATCHING -> DISPATCHED.
        A redelivered event for the same document finds DISPATCHING (sends again: SQS drops
        the copy) or DISPATCHED (nothing). A different document under a claimed id is copied
        to ``rejected/jobs/<job_id>/`` and reported: it does not run.
        """
        try:
            job_id = parse_job_key(obj.key)
        except InvalidKeyError as exc:
            self._reject_key(obj, exc, now=now)
            result.rejected.append(exc)
            result.outcomes.append((obj.key, Outcome.REJECTED_KEY))
            return
        claim = self.store.claim_job(job_id, obj, now=now)
        if claim.etag != obj.etag or claim.size != obj.size:
            to_key = rejected_job_key(job_id, obj.etag)
            copied = self.objects.copy(
                bucket=obj.bucket,
                key=obj.key,
                to_key=to_key,
                metadata={
                    "reason": "duplicate_job_id",
                    "job-id": job_id,
                    "source-key": quote(obj.key, safe="/"),
                },
            )
            first = self.store.record_job_duplicate(
                job_id,
                obj,
                copied_to=f"s3://{obj.bucket}/{to_key}" if copied else None,
                now=now,
            )
            outcome = Outcome.JOB_DUPLICATE if first else Outcome.DUPLICATE
            result.outcomes.append((obj.key, outcome))
            if first:
                result.duplicate_jobs.append((job_id, f"s3://{obj.bucket}/{to_key}"))
            return
        if claim.state is JobState.DISPATCHED:
            result.outcomes.append((obj.key, Outcome.DUPLICATE))
            return
        document: str | None = None
        failure: str | None = None
        if obj.size > MAX_JOB_DOCUMENT_BYTES:
            failure = (
                f"the job document has {obj.size} bytes; at most {MAX_JOB_DOCUMENT_BYTES} are "
                "allowed (a job holds parameters; its inputs go under inputs/)"
            )
        else:
            data = self.objects.get(obj.bucket, obj.key)
            if data is None:
                failure = f"the job document s3://{obj.bucket}/{obj.key} was deleted before it "
                failure += "was read"
            elif _is_md5_etag(obj.etag) and hashlib.md5(data).hexdigest() != obj.etag.strip('"'):
                failure = (
                    f"the job document s3://{obj.bucket}/{obj.key} was replaced before it was "
                    "read (a job id runs its first document only; the replacement is kept "
                    f"under rejected/jobs/{job_id}/)"
                )
            else:
                try:
                    document = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    failure = f"invalid job document: the document is not UTF-8 text ({exc})"
        self.queue.send_run(
            build_job_message(job_id=job_id, obj=obj, document=document, failure=failure, now=now),
            deduplication_id=f"{job_id}.job",
            group_id=f"{job_id}.job",
        )
        self.store.mark_job_dispatched(job_id, now=now)
        result.outcomes.append((obj.key, Outcome.JOB))
        result.dispatched_jobs.append(job_id)

    def _reject_key(self, obj: ObjectCreated, exc: InvalidKeyError, *, now: datetime) -> None:
        run_id = run_id_of(obj.key)
        to_key = rejected_key_for(obj.key, run_id)
        copied = self.objects.copy(
            bucket=obj.bucket,
            key=obj.key,
            to_key=to_key,
            metadata={
                "reason": exc.reason,
                "source-key": quote(obj.key, safe="/"),
                "run-id": run_id or "",
            },
        )
        self.store.record_bad_key(
            run_id=run_id,
            bucket=obj.bucket,
            key=obj.key,
            reason=exc.reason,
            copied_to=f"s3://{obj.bucket}/{to_key}" if copied else None,
            now=now,
        )

    def _manifest(
        self, key: ManifestKey, obj: ObjectCreated, *, now: datetime, result: RecordResult
    ) -> None:
        result.outcomes.append((obj.key, Outcome.MANIFEST))
        data = self.objects.get(obj.bucket, obj.key)
        if data is None:
            return  # deleted since: nothing to attach (the run keeps the stack's defaults)
        try:
            manifest = parse_manifest(data, run_id=key.run_id)
        except ManifestError as exc:
            self._fail(key.run_id, f"malformed manifest: {exc}", obj=obj, now=now, result=result)
            return
        recorded = self.store.record_manifest(key.run_id, manifest, bucket=obj.bucket, now=now)
        if recorded is ManifestRecorded.DIFFERENT:
            self._fail(
                key.run_id,
                "a second manifest differs from the first (a run has one manifest)",
                obj=obj,
                now=now,
                result=result,
            )
            return
        if recorded is ManifestRecorded.CLOSED:
            # The run was closed on the stack's defaults before its manifest arrived: a
            # manifest describing exactly that set changes nothing; any other is reported.
            sizes = {b: m.images for b, m in manifest.batches.items()}
            if self.store.batch_counts(key.run_id) != sizes:
                self.store.record_late(
                    key.run_id, key=obj.key, reason="manifest_contradicts_closed_run", now=now
                )
        self._advance(self.store.get_run(key.run_id), bucket=obj.bucket, now=now, result=result)

    def _fail(
        self, run_id: str, reason: str, *, obj: ObjectCreated, now: datetime, result: RecordResult
    ) -> None:
        """Close an OPEN run as failed (reported by the worker); a closed run records a late one."""
        claimed = self.store.claim_dispatch(
            run_id, seen_images=None, plan=(), failure=reason, extras={}, bucket=obj.bucket, now=now
        )
        if claimed is None:
            self.store.record_late(run_id, key=obj.key, reason="manifest_after_dispatch", now=now)
            run = self.store.get_run(run_id)
        else:
            run = claimed
            result.failed_runs.append((run_id, reason))
        self._advance(run, bucket=obj.bucket, now=now, result=result)

    def _advance(
        self, run: RunSnapshot | None, *, bucket: str, now: datetime, result: RecordResult
    ) -> None:
        if run is None:
            return
        if run.state is not RunState.OPEN:
            self._ensure_late_check(run, now=now)
        if run.state is RunState.OPEN:
            with_manifest = run.manifest_sha is not None and run.expected_images is not None
            expected = (
                run.expected_images
                if with_manifest and run.expected_images is not None
                else self.images_per_batch * self.batches_per_run
            )
            # Without a manifest only exactly the stack's total can be its shape: a run past it
            # (a larger run whose manifest comes last) costs no Query per upload.
            if run.image_count < expected or (not with_manifest and run.image_count != expected):
                self._ensure_check(run, now=now)
                return
            verdict = self._verify(run, bucket=bucket)
            if verdict is None:
                self._ensure_check(run, now=now)
                return
            claimed = self.store.claim_dispatch(
                run.run_id,
                seen_images=run.image_count,
                plan=verdict.plan,
                failure=verdict.failure,
                extras=verdict.extras,
                bucket=bucket,
                now=now,
            )
            if claimed is None:
                # The count moved (that upload's record checks again) or another record claimed.
                run = self.store.get_run(run.run_id)
                if run is not None and run.state is RunState.OPEN:
                    self._ensure_check(run, now=now)
                if run is None or run.state is not RunState.DISPATCHING:
                    return
            else:
                run = claimed
                if verdict.failure is not None:
                    result.failed_runs.append((run.run_id, verdict.failure))
        if run.state is RunState.DISPATCHING:
            run_bucket = run.bucket or bucket
            for shard in range(max(len(run.plan), 1)):
                body = build_run_message(
                    run_id=run.run_id,
                    bucket=run_bucket,
                    shard=shard,
                    plan=run.plan,
                    failure=run.failure,
                    now=now,
                )
                self.queue.send_run(
                    body,
                    deduplication_id=f"{run.run_id}.{shard}",
                    group_id=f"{run.run_id}.{shard}",
                )
            self.store.mark_dispatched(run.run_id, now=now)
            result.dispatched_runs.append(run.run_id)

    def _verify(self, run: RunSnapshot, *, bucket: str) -> _Verdict | None:
        """The run's verdict once its counts may be met: a plan, a failure, or None (not yet)."""
        counts = self.store.batch_counts(run.run_id)
        if run.manifest_sha is None:
            shape_met = len(counts) == self.batches_per_run and all(
                n == self.images_per_batch for n in counts.values()
            )
            if not shape_met:
                return None
            return _Verdict(plan_shards(counts, shard_images=self.shard_images), None, {})
        data = self.objects.get(bucket, manifest_key(run.run_id))
        if data is None:
            return None
        try:
            manifest = parse_manifest(data, run_id=run.run_id)
        except ManifestError:
            return None  # replaced by a bad manifest: its own event fails the run
        if manifest.sha256 != run.manifest_sha:
            return None  # replaced: its own event decides
        over = [
            f"{batch_id} has {counts.get(batch_id, 0)} objects, the manifest announces {b.images}"
            for batch_id, b in sorted(manifest.batches.items())
            if counts.get(batch_id, 0) > b.images
        ]
        extras = {b: n for b, n in counts.items() if b not in manifest.batches}
        if over:
            failure = "more objects than the manifest announces: " + "; ".join(over)
            return _Verdict([], failure, extras)
        if any(counts.get(b, 0) < m.images for b, m in manifest.batches.items()):
            return None
        sizes = {b: m.images for b, m in manifest.batches.items()}
        return _Verdict(plan_shards(sizes, shard_images=self.shard_images), None, extras)

    def _ensure_check(self, run: RunSnapshot, *, now: datetime) -> None:
        """Give an OPEN run its one check (only the first record that sees the run without one)."""
        if self.checks is None or run.check_scheduled:
            return
        self.checks.schedule_check(run.run_id, at=now + self.run_timeout)
        self.store.mark_check_scheduled(run.run_id)

    def _ensure_late_check(self, run: RunSnapshot, *, now: datetime) -> None:
        """Give a closed run's unreported late uploads one check (the first record that sees
        them without one): it reports them ``run_timeout`` after the last of the group."""
        if self.checks is None or run.late_check_scheduled or run.late_count <= run.late_reported:
            return
        self.checks.schedule_check(run.run_id, at=(run.last_late_at or now) + self.run_timeout)
        self.store.mark_late_check_scheduled(run.run_id)

    def _check_late(self, run: RunSnapshot, *, now: datetime, _attempt: int = 0) -> Checked:
        """A closed run's check: report its late uploads once per group, when no other has come
        for ``run_timeout``; check again later while they still come."""
        if run.late_count <= run.late_reported:
            return Checked.CLOSED
        last = run.last_late_at or now
        due = last + self.run_timeout
        if due > now:
            if self.checks is None:
                raise RuntimeError("check_run needs a RunChecks to check the run again")
            self.checks.schedule_check(run.run_id, at=due)
            return Checked.RESCHEDULED
        if self.notifier is None:
            raise RuntimeError("check_run needs a Notifier to report late uploads")
        since = run.late_reported_at or ""
        group = [e for e in self.store.late_uploads(run.run_id) if e["recorded_at"] > since]
        claimed = self.store.claim_late_report(
            run.run_id,
            late_count=run.late_count,
            last_late_at=last,
            reported_at=max((e["recorded_at"] for e in group), default=since),
        )
        if not claimed:
            # A late upload came in since the read, or another check reported: read again.
            if _attempt >= 3:
                raise RuntimeError(f"run {run.run_id}: the late-upload claim kept failing; retry")
            again = self.store.get_run(run.run_id)
            if again is None:
                return Checked.GONE
            return self._check_late(again, now=now, _attempt=_attempt + 1)
        try:
            bad_keys, _ = self.store.reported(run.run_id)
            body = build_late_notification(
                run=run,
                late_uploads=group,
                late_total=run.late_count,
                run_timeout=self.run_timeout,
                bad_keys=bad_keys,
            )
            self.notifier.publish(
                subject=f"imgpipe run {run.run_id}: late uploads",
                message=json.dumps(body, separators=(",", ":")),
            )
        except Exception:
            self.store.release_late_report(
                run.run_id, late_reported=run.late_reported, reported_at=since
            )
            raise
        return Checked.LATE

    def check_run(self, run_id: str, *, now: datetime, _attempt: int = 0) -> Checked:
        """A run's check: report it incomplete once, report its late uploads once per group,
        check it again later, or do nothing."""
        run = self.store.get_run(run_id)
        if run is None:
            return Checked.GONE
        if run.state is not RunState.OPEN:
            return self._check_late(run, now=now)
        last = run.last_upload_at or now
        due = last + self.run_timeout
        if due > now:
            if self.checks is None:
                raise RuntimeError("check_run needs a RunChecks to check the run again")
            self.checks.schedule_check(run_id, at=due)
            return Checked.RESCHEDULED
        if self.notifier is None:
            raise RuntimeError("check_run needs a Notifier to report an incomplete run")
        if not self.store.mark_incomplete(run_id, last_upload_at=last, now=now):
            # Another check won, or an upload came in since the read: read again (a few times:
            # each failed claim means the run item changed).
            if _attempt >= 3:
                raise RuntimeError(f"run {run_id}: the incomplete claim kept failing; retry")
            return self.check_run(run_id, now=now, _attempt=_attempt + 1)
        try:
            body = self._incomplete_notification(run)
            self.notifier.publish(
                subject=f"imgpipe run {run_id} incomplete",
                message=json.dumps(body, separators=(",", ":")),
            )
        except Exception:
            # Not announced: reopen so that the retried check reports it.
            self.store.reopen(run_id)
            raise
        return Checked.INCOMPLETE

    def _incomplete_notification(self, run: RunSnapshot) -> dict[str, object]:
        manifest: Manifest | None = None
        if run.manifest_sha is not None and run.bucket is not None:
            data = self.objects.get(run.bucket, manifest_key(run.run_id))
            if data is not None:
                try:
                    manifest = parse_manifest(data, run_id=run.run_id)
                except ManifestError:
                    manifest = None
        bad_keys, late_uploads = self.store.reported(run.run_id)
        return build_incomplete_notification(
            run=run,
            counts=self.store.batch_counts(run.run_id),
            manifest=manifest,
            images_per_batch=self.images_per_batch,
            batches_per_run=self.batches_per_run,
            run_timeout=self.run_timeout,
            bad_keys=bad_keys,
            late_uploads=late_uploads,
        )
