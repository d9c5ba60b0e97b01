"""Jobs in the worker: the job and job-shard messages, and running a job's shards.

A ``job`` message (sent once by the batch counter for ``jobs/<job_id>.json``) carries the job's
document. The worker validates it (:func:`batch_stats.jobs.document.parse_job_document`: one
validator, where the kinds live), records the job in PostgreSQL (``jobs``), and either runs its
only shard at once or sends one ``job-shard`` message per shard to the runs queue (deduplication
id ``<job_id>.<shard>``), which any worker takes. Each shard runs
:meth:`~batch_stats.jobs.base.JobKind.run_shard` in a fresh scratch folder and stores its summary
under the job row's lock; the worker that stores the last one runs
:meth:`~batch_stats.jobs.base.JobKind.finish` and publishes the job's one notification (claimed
under the same lock). Everything is idempotent, so a redelivered message (a task killed
mid-shard, a lost delete) does the same work again and announces nothing twice.

A job whose document or parameters are invalid (JobSpecError) or whose inputs can never work
(JobInputError) fails: its row says ``failed`` with the reason, a manifest with
``"status": "failed"`` listing what is present goes under its output prefix (``jobs/<job_id>/``
in the results bucket when the kind is unknown), and one ``failed`` notification goes out. Any
other error is retried like a run's (growing delays); when the last receive the queue allows
fails too, the worker ends the job ``failed`` (:meth:`JobProcessor.give_up`) and the message
moves to the runs DLQ, whose alarm notifies the topic (if even that record fails, the job stays
``running`` in ``batch-stats job-status`` and a redrive resumes it).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from batch_stats.jobs.base import JobContext, JobInputError, JobKind, JobSpecError, JobStore
from batch_stats.jobs.document import is_job_id, kind_name_of, parse_job_document
from batch_stats.jobs.manifest import write_manifest
from batch_stats.jobs.registry import get_kind
from batch_stats.worker.adapters import Notifier
from batch_stats.worker.database import ResultsDatabase

log = logging.getLogger(__name__)

JOB_MESSAGE = "job"
JOB_SHARD_MESSAGE = "job-shard"
JOB_MESSAGE_VERSION = 1
#: Most shards one job may fan out to.
MAX_JOB_SHARDS = 10_000
SUCCEEDED = "succeeded"
FAILED = "failed"
RUNNING = "running"
#: Longest list a notification carries, as for runs (SNS messages are at most 256 KB).
NOTIFICATION_LIST_LIMIT = 100


class InvalidJobMessageError(ValueError):
    """A job message that cannot be processed, whatever the retry (a poison message)."""


@dataclass(frozen=True)
class JobMessage:
    """A job to start: its document as uploaded (or why it could not be read)."""

    job_id: str
    bucket: str
    key: str
    etag: str
    document: str | None
    failure: str | None


@dataclass(frozen=True)
class JobShardMessage:
    """One shard of a started job."""

    job_id: str
    shard: int
    shards: int


def parse_job_message(body: str) -> JobMessage | JobShardMessage | None:
    """The job message in ``body``; None when it is not one (a run message)."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("type") not in (JOB_MESSAGE, JOB_SHARD_MESSAGE):
        return None
    if data.get("version") != JOB_MESSAGE_VERSION:
        raise InvalidJobMessageError(
            f"job message version {data.get('version')!r} is not supported "
            f"(allowed: {JOB_MESSAGE_VERSION})"
        )
    job_id = data.get("job_id")
    if not is_job_id(job_id):
        raise InvalidJobMessageError(f"job_id {job_id!r} is not a valid job id")
    assert isinstance(job_id, str)
    if data["type"] == JOB_SHARD_MESSAGE:
        shard, shards = data.get("shard"), data.get("shards")
        if (
            not isinstance(shard, int)
            or not isinstance(shards, int)
            or isinstance(shard, bool)
            or isinstance(shards, bool)
            or not 0 <= shard < shards <= MAX_JOB_SHARDS
        ):
            raise InvalidJobMessageError(
                f"shard {shard!r} of {shards!r} is not allowed (0 <= shard < shards <= "
                f"{MAX_JOB_SHARDS})"
            )
        return JobShardMessage(job_id=job_id, shard=shard, shards=shards)
    texts = {}
    for name in ("bucket", "key", "etag"):
        value = data.get(name, "")
        if not isinstance(value, str):
            raise InvalidJobMessageError(f"{name} {value!r} is not a string")
        texts[name] = value
    document, failure = data.get("document"), data.get("failure")
    if document is not None and not isinstance(document, str):
        raise InvalidJobMessageError("document is not a string or null")
    if failure is not None and not isinstance(failure, str):
        raise InvalidJobMessageError("failure is not a string or null")
    if document is None and failure is None:
        raise InvalidJobMessageError("a job message carries its document or a failure")
    return JobMessage(job_id=job_id, document=document, failure=failure, **texts)


def shard_message(job_id: str, shard: int, shards: int) -> str:
    return json.dumps(
        {
            "type": JOB_SHARD_MESSAGE,
            "version": JOB_MESSAGE_VERSION,
            "job_id": job_id,
            "shard": shard,
            "shards": shards,
        },
        separators=(",", ":"),
    )


class ShardQueue(Protocol):
    """Where a job's shard messages go (the runs FIFO queue)."""

    def send(self, body: str, *, deduplication_id: str, group_id: str) -> str: ...


def failed_prefix(job_id: str) -> str:
    """Output prefix of a job whose kind is unknown (for its failed manifest)."""
    return f"jobs/{job_id}/"


@dataclass(frozen=True)
class JobOutcome:
    """What handling a job message did; ``final``: the job ended (stored and announced)."""

    job_id: str
    kind: str | None
    status: str
    shard: int
    shards: int
    final: bool
    outputs: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None
    notified: bool = False
    duration_s: float | None = None

    def notification(self) -> dict[str, Any]:
        """The SNS message: the fields of a run's notification, plus the job's own."""
        outputs = dict(self.outputs)
        statistics = list(outputs.get("statistics", []))[:NOTIFICATION_LIST_LIMIT]
        return {
            "type": "job",
            "job_id": self.job_id,
            "kind": self.kind,
            "run_id": self.job_id,
            "status": self.status,
            "notification_id": f"job:{self.job_id}:{self.status}",
            "parquet_uri": outputs.get("parquet_uri"),
            "batch_count": int(outputs.get("batches", 0) or 0),
            "statistics": statistics,
            "images_processed": int(outputs.get("images", 0) or 0),
            "shards": self.shards,
            "rejected_count": 0,
            "rejected": [],
            "bad_keys": [],
            "bad_key_count": 0,
            "late_uploads": [],
            "late_upload_count": 0,
            "extra_batches": {},
            "error": self.reason,
            "outputs": {k: v for k, v in outputs.items() if k != "statistics"},
            "manifest_uri": outputs.get("manifest_uri"),
            "duration_s": self.duration_s,
        }


class JobProcessor:
    """Runs job messages: validation, the job's row, fan-out, shards, finish, notification."""

    def __init__(
        self,
        *,
        store: JobStore,
        database: ResultsDatabase,
        notifier: Notifier,
        queue: ShardQueue,
        raw_bucket: str,
        results_bucket: str,
        scratch_root: Path | None = None,
    ) -> None:
        self._store = store
        self._db = database
        self._notifier = notifier
        self._queue = queue
        self._raw_bucket = raw_bucket
        self._results_bucket = results_bucket
        self._scratch_root = scratch_root

    def process(self, message: JobMessage | JobShardMessage) -> JobOutcome:
        if isinstance(message, JobShardMessage):
            return self._shard_message(message)
        return self._job_message(message)

    # --- a new job --------------------------------------------------------------------------

    def _job_message(self, message: JobMessage) -> JobOutcome:
        job_id = message.job_id
        row = self._db.job_row(job_id)
        if row is not None and row["status"] in (SUCCEEDED, FAILED):
            # A redelivered job message: finish announcing if needed, nothing runs again.
            return self._announce(self._ended(row, shard=0))
        if message.failure is not None:
            return self._fail(job_id, None, None, message.failure, etag=message.etag)
        if message.bucket != self._raw_bucket:
            return self._fail(
                job_id,
                None,
                None,
                f"the job's bucket {message.bucket!r} is not the raw bucket {self._raw_bucket!r}",
                etag=message.etag,
            )
        document = message.document or ""
        try:
            spec = parse_job_document(document, job_id=job_id)
        except JobSpecError as exc:
            name = kind_name_of(document)
            kind = _kind_or_none(name)
            return self._fail(
                job_id,
                kind,
                _raw_params(document),
                f"invalid job document: {exc}",
                etag=message.etag,
                kind_name=name,
            )
        shards = spec.kind.shards(spec.params)
        if not 1 <= shards <= MAX_JOB_SHARDS:
            return self._fail(
                job_id,
                spec.kind,
                spec.raw_params,
                f"the job would split into {shards} shards; at most {MAX_JOB_SHARDS} are "
                "allowed (make it smaller or split it into several jobs)",
                etag=message.etag,
            )
        self._db.create_job(
            job_id, kind=spec.kind_name, params=spec.raw_params, shards=shards, etag=message.etag
        )
        self._db.start_job(job_id)
        if shards == 1:
            return self._run_shard(job_id, spec.kind, spec.params, shard=0, shards=1)
        for shard in range(shards):
            self._queue.send(
                shard_message(job_id, shard, shards),
                deduplication_id=f"{job_id}.{shard}",
                group_id=f"{job_id}.{shard}",
            )
        log.info("job %s (%s): %d shard messages sent", job_id, spec.kind_name, shards)
        return JobOutcome(
            job_id=job_id, kind=spec.kind_name, status=RUNNING, shard=0, shards=shards, final=False
        )

    # --- one shard ---------------------------------------------------------------------------

    def _shard_message(self, message: JobShardMessage) -> JobOutcome:
        row = self._db.job_row(message.job_id)
        if row is None:
            raise LookupError(f"job {message.job_id!r} has no row: its shard cannot run")
        if row["status"] == FAILED:
            log.info("job %s already failed; shard %d skipped", message.job_id, message.shard)
            return self._announce(self._ended(row, shard=message.shard))
        kind = get_kind(row["kind"])
        try:
            params = kind.parse(row["params"])
        except JobSpecError as exc:
            return self._fail(message.job_id, kind, row["params"], f"invalid parameters: {exc}")
        return self._run_shard(
            message.job_id, kind, params, shard=message.shard, shards=message.shards
        )

    def _context(self, job_id: str, scratch: Path) -> JobContext:
        return JobContext(
            job_id=job_id,
            input_bucket=self._raw_bucket,
            output_bucket=self._results_bucket,
            store=self._store,
            scratch=scratch,
            rows=self._db,
        )

    def _run_shard(
        self, job_id: str, kind: JobKind[Any], params: Any, *, shard: int, shards: int
    ) -> JobOutcome:
        try:
            with tempfile.TemporaryDirectory(
                prefix=f"job-{job_id}-{shard}-", dir=self._scratch_root
            ) as scratch:
                summary = kind.run_shard(
                    params, shard=shard, shards=shards, ctx=self._context(job_id, Path(scratch))
                )
            json.dumps(summary)  # must be JSON-able: fail here, not in the database
            done = self._db.save_job_shard(job_id, shard=shard, shards=shards, summary=summary)
            if done < shards:
                log.info("job %s: shard %d done (%d of %d)", job_id, shard, done, shards)
                return JobOutcome(
                    job_id=job_id,
                    kind=kind.name,
                    status=RUNNING,
                    shard=shard,
                    shards=shards,
                    final=False,
                )
            row = self._db.job_row(job_id)
            if row is not None and row["status"] == FAILED:
                return self._announce(self._ended(row, shard=shard))
            results = self._db.job_shard_results(job_id)[:shards]
            with tempfile.TemporaryDirectory(
                prefix=f"job-{job_id}-finish-", dir=self._scratch_root
            ) as scratch:
                outputs = kind.finish(
                    params, shard_results=results, ctx=self._context(job_id, Path(scratch))
                )
        except (JobSpecError, JobInputError) as exc:
            return self._fail(job_id, kind, None, str(exc))
        self._db.finish_job(job_id, status=SUCCEEDED, outputs=outputs, reason=None)
        row = self._db.job_row(job_id)
        assert row is not None
        return self._announce(self._ended(row, shard=shard))

    def give_up(self, message: JobMessage | JobShardMessage, reason: str) -> JobOutcome | None:
        """Fail the job of a message that is about to go to the DLQ (its last receive failed):
        the job ends ``failed`` with ``reason``, its failed manifest and one notification,
        instead of staying ``running``. None if the job had already ended."""
        row = self._db.job_row(message.job_id)
        if row is not None and row["status"] in (SUCCEEDED, FAILED):
            return None
        kind: JobKind[Any] | None = None
        params: Mapping[str, Any] | None = None
        name: str | None = None
        if row is not None:
            name, params = row["kind"], row["params"]
            kind = _kind_or_none(name)
        elif isinstance(message, JobMessage) and message.document is not None:
            name = kind_name_of(message.document)
            kind, params = _kind_or_none(name), _raw_params(message.document)
        return self._fail(message.job_id, kind, params, reason, kind_name=name)

    # --- the end of a job ---------------------------------------------------------------------

    def _fail(
        self,
        job_id: str,
        kind: JobKind[Any] | None,
        params: Mapping[str, Any] | None,
        reason: str,
        *,
        etag: str | None = None,
        kind_name: str | None = None,
    ) -> JobOutcome:
        """Store, describe (failed manifest) and announce a job that cannot succeed."""
        name = kind.name if kind is not None else kind_name
        log.warning("job %s (%s) failed: %s", job_id, name, reason)
        self._db.create_job(job_id, kind=name, params=params, shards=1, etag=etag)
        prefix = kind.output_prefix(job_id) if kind is not None else failed_prefix(job_id)
        row = self._db.job_row(job_id)
        assert row is not None
        manifest_uri = write_manifest(
            self._store,
            self._results_bucket,
            prefix,
            job_id=job_id,
            kind=name or "unknown",
            status=FAILED,
            params=row["params"] or {},
            reason=reason,
        )
        self._db.finish_job(
            job_id, status=FAILED, outputs={"manifest_uri": manifest_uri}, reason=reason
        )
        row = self._db.job_row(job_id)
        assert row is not None
        return self._announce(self._ended(row, shard=0))

    def _ended(self, row: Mapping[str, Any], *, shard: int) -> JobOutcome:
        return JobOutcome(
            job_id=str(row["job_id"]),
            kind=row["kind"],
            status=str(row["status"]),
            shard=shard,
            shards=int(row["shards"]),
            final=True,
            outputs=dict(row["outputs"] or {}),
            reason=row["reason"],
            duration_s=row["duration_s"],
        )

    def _announce(self, outcome: JobOutcome) -> JobOutcome:
        def publish() -> str:
            return self._notifier.publish(
                subject=f"imgpipe job {outcome.job_id} {outcome.status}",
                message=json.dumps(outcome.notification()),
            )

        if not self._db.notify_job_once(outcome.job_id, outcome.status, publish):
            log.info("job %s was already announced; not notifying again", outcome.job_id)
            return outcome
        return JobOutcome(**{**outcome.__dict__, "notified": True})


def _kind_or_none(name: str | None) -> JobKind[Any] | None:
    if name is None:
        return None
    try:
        return get_kind(name)
    except (JobSpecError, ImportError):
        return None


def _raw_params(document: str) -> dict[str, Any] | None:
    """The document's ``params`` object, if it has one (kept with a failed job)."""
    try:
        data = json.loads(document)
    except json.JSONDecodeError:
        return None
    params = data.get("params") if isinstance(data, dict) else None
    return params if isinstance(params, dict) else None
