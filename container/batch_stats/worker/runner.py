"""Processing one shard of a run, and the loop that takes shards off the queue.

Order of effects for a shard (all idempotent by run id and shard, so a redelivered message is
harmless): page the shard's objects from the tracking table -> download + decode + process
(concurrently) -> copy rejected uploads -> the shard's Parquet part (runs of several shards) ->
its rows, rejections and "done" mark in one PostgreSQL transaction, which also counts the shards
done under the run's row lock. The worker that sees the last shard done writes the run's Parquet
file (deterministic key), the run's row, and publishes the one notification under that row lock
-> delete the message. While it works, a heartbeat extends the message's visibility and the ECS
task is protected from scale-in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from batch_stats.engine import (
    BatchStats,
    EngineParams,
    ImagePlan,
    ImageRejected,
    count_crop,
    decode_image,
    draw_plan,
    image_rng,
    read_batch_stats,
    run_metadata,
    run_seed,
    summarize_batch,
    write_batch_stats,
)
from batch_stats.worker.adapters import (
    Notifier,
    ObjectMissingError,
    ObjectStore,
    ReceivedMessage,
    RunQueue,
    TaskProtection,
)
from batch_stats.worker.database import ResultsDatabase, RunRecord, ShardRecord
from batch_stats.worker.jobs import (
    InvalidJobMessageError,
    JobMessage,
    JobOutcome,
    JobProcessor,
    JobShardMessage,
    parse_job_message,
)
from batch_stats.worker.messages import (
    ImageRef,
    InvalidRunMessageError,
    ManifestEntry,
    Rejection,
    RunMessage,
    manifest_batches,
)
from batch_stats.worker.metrics import EmfMetrics
from batch_stats.worker.retry import RETRY_DELAY_SECONDS, backoff_delay
from batch_stats.worker.tracking import RunTracking

log = logging.getLogger(__name__)

FINISHED = "finished"
FAILED = "failed"
_METADATA_LIMIT = 1024  # S3 user metadata: 2 KB in total, US-ASCII


class _ChecksumMismatchError(Exception):
    """The object's bytes are not those the run's manifest announces."""


class RunAbandonedError(Exception):
    """The run was given up (shutdown); its message is left for another worker."""


def results_key(run_id: str) -> str:
    return f"results/{run_id}/batch_stats.parquet"


def rejected_key(run_id: str, batch_id: str, name: str) -> str:
    return f"rejected/{run_id}/{batch_id}/{name}"


#: Longest lists a notification carries (SNS messages are at most 256 KB); the counts are full,
#: and the Parquet file, the database and ``batch-stats status`` have everything.
NOTIFICATION_LIST_LIMIT = 100


@dataclass(frozen=True)
class RunOutcome:
    """The result of a processed shard; ``final``: it finished the run (stored and announced)."""

    run_id: str
    status: str
    parquet_uri: str | None
    statistics: Sequence[BatchStats]
    images_processed: int
    rejections: Sequence[Rejection]
    error: str | None
    notified: bool
    shard: int = 0
    shards: int = 1
    final: bool = True
    images_rejected: int | None = None
    bad_keys: Sequence[dict[str, str]] = ()
    late_uploads: Sequence[dict[str, str]] = ()
    extra_batches: dict[str, int] = dataclasses.field(default_factory=dict)

    def notification(self) -> dict[str, Any]:
        """The SNS message body (JSON object)."""
        limit = NOTIFICATION_LIST_LIMIT
        return {
            "run_id": self.run_id,
            "status": self.status,
            "notification_id": f"{self.run_id}:{self.status}",
            "parquet_uri": self.parquet_uri,
            "batch_count": len(self.statistics),
            "statistics": [stats.as_row() for stats in self.statistics[:limit]],
            "images_processed": self.images_processed,
            "shards": self.shards,
            "rejected_count": (
                len(self.rejections) if self.images_rejected is None else self.images_rejected
            ),
            "rejected": [rejection.as_dict() for rejection in self.rejections[:limit]],
            "bad_keys": list(self.bad_keys[:limit]),
            "bad_key_count": len(self.bad_keys),
            "late_uploads": list(self.late_uploads[:limit]),
            "late_upload_count": len(self.late_uploads),
            "extra_batches": dict(sorted(self.extra_batches.items())[:limit]),
            "error": self.error,
        }


def part_key(run_id: str, shard: int) -> str:
    return f"results/{run_id}/parts/shard-{shard:05d}.parquet"


#: Printable US-ASCII but ``%``: what S3 user metadata (sent as HTTP headers) carries as is.
_METADATA_SAFE = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) != "%")


def _ascii(text: str) -> str:
    """``text`` as an S3 user metadata value: printable US-ASCII, at most 1 KiB.

    Control characters, ``%`` and non-ASCII characters are percent-encoded (as UTF-8), so that a
    name holding a newline or a bell cannot fail the copy of its rejected upload, and
    ``urllib.parse.unquote`` gives the text back. A cut never splits an escape.
    """
    encoded = quote(text, safe=_METADATA_SAFE)
    if len(encoded) > _METADATA_LIMIT:
        encoded = encoded[:_METADATA_LIMIT]
        escape = encoded.rfind("%", _METADATA_LIMIT - 2)
        if escape != -1:
            encoded = encoded[:escape]
    return encoded


def _select(
    run_id: str, found: Iterable[ImageRef], manifest: dict[str, ManifestEntry] | None
) -> tuple[list[ImageRef], list[Rejection], list[str]]:
    """The shard's images to process, the ones refused up front, and the shard's batch ids.

    Without a manifest the run's objects are exactly those recorded when it was closed. With
    one, only the manifest's batches belong to the run (objects of other batches are its extras,
    reported from the run item); where the manifest names a batch's images, an object it does
    not name is refused (``not_in_manifest``) and a named one that is absent is ``missing``.
    """
    refs: list[ImageRef] = []
    refused: list[Rejection] = []
    seen: dict[str, set[str]] = {}
    for ref in found:
        if manifest is not None:
            entry = manifest.get(ref.batch_id)
            if entry is None:
                continue
            if entry.objects:
                if ref.name not in entry.objects:
                    refused.append(
                        Rejection(
                            ref.key,
                            ref.batch_id,
                            ref.name,
                            "not_in_manifest",
                            f"{ref.name}: not among the images the manifest names for "
                            f"{ref.batch_id}; the upload is kept",
                            None,
                        )
                    )
                    continue
                ref = dataclasses.replace(ref, sha256=entry.objects[ref.name])
        seen.setdefault(ref.batch_id, set()).add(ref.name)
        refs.append(ref)
    if manifest is not None:
        for batch_id in sorted(seen):
            for name in sorted(set(manifest[batch_id].objects) - seen[batch_id]):
                refused.append(
                    Rejection(
                        f"uploads/{run_id}/{batch_id}/{name}",
                        batch_id,
                        name,
                        "missing",
                        f"{name}: named by the manifest but not uploaded",
                        None,
                    )
                )
    return refs, refused, sorted(seen)


class RunProcessor:
    """Processes run messages (one shard each) with the engine; stores, then announces, runs."""

    def __init__(
        self,
        *,
        objects: ObjectStore,
        database: ResultsDatabase,
        notifier: Notifier,
        tracking: RunTracking,
        raw_bucket: str,
        results_bucket: str,
        concurrency: int = 16,
        params: EngineParams | None = None,
        on_image: Callable[[ImageRef], object] | None = None,
    ) -> None:
        self._objects = objects
        self._on_image = on_image
        self._db = database
        self._notifier = notifier
        self._tracking = tracking
        self._raw_bucket = raw_bucket
        self._results_bucket = results_bucket
        self._concurrency = concurrency
        self._params = params or EngineParams()

    @property
    def database(self) -> ResultsDatabase:
        return self._db

    def process(self, run: RunMessage, *, cancel: threading.Event | None = None) -> RunOutcome:
        cancel = cancel or threading.Event()
        if run.bucket != self._raw_bucket:
            return self._fail_run(
                run,
                f"the run's bucket {run.bucket!r} is not the raw bucket {self._raw_bucket!r}",
                report=False,
            )
        if run.failure is not None:
            return self._fail_run(run, run.failure)
        info = self._tracking.run_info(run.run_id)
        if info is None:
            return self._fail_run(
                run, f"run {run.run_id!r} is not in the tracking table", report=False
            )
        manifest: dict[str, ManifestEntry] | None = None
        if info.manifest_sha is not None:
            key = f"uploads/{run.run_id}/_manifest.json"
            try:
                data = self._objects.get(self._raw_bucket, key)
            except ObjectMissingError:
                return self._fail_run(run, f"the run's manifest {key} was deleted")
            if hashlib.sha256(data).hexdigest() != info.manifest_sha:
                return self._fail_run(
                    run, f"the run's manifest {key} was replaced after the run was closed"
                )
            manifest = manifest_batches(data)
        found = self._tracking.objects(
            run.run_id, first_batch=run.first_batch, last_batch=run.last_batch
        )
        refs, rejections, shard_batches = _select(run.run_id, found, manifest)
        params = self._params
        seed = run_seed(run.run_id)
        # Every image's squares and crop are drawn first, for the run's image size (an image of
        # another size gets its own draw later): the interpreter-heavy draws then run back to
        # back instead of between decodes, which evict their code and data from the CPU caches.
        plans = [
            draw_plan(
                image_rng(seed, ref.batch_id, ref.name),
                height=params.image_height,
                width=params.image_width,
                params=params,
            )
            for ref in refs
        ]

        def one(ref: ImageRef, plan: ImagePlan) -> tuple[int, int] | Rejection:
            if cancel.is_set():
                raise RunAbandonedError(run.run_id)
            result = self._one_image(run.run_id, ref, params=params, seed=seed, plan=plan)
            if self._on_image is not None:
                self._on_image(ref)
            return result

        if self._concurrency == 1:
            results = [one(ref, plan) for ref, plan in zip(refs, plans, strict=True)]
        else:
            with ThreadPoolExecutor(self._concurrency, thread_name_prefix="image") as pool:
                results = list(pool.map(one, refs, plans))
        if cancel.is_set():
            raise RunAbandonedError(run.run_id)
        per_batch: dict[str, list[tuple[int, int]]] = {}
        for ref, result in zip(refs, results, strict=True):
            if isinstance(result, Rejection):
                rejections.append(result)
            else:
                per_batch.setdefault(ref.batch_id, []).append(result)
        stats = [summarize_batch(batch_id, per_batch[batch_id]) for batch_id in sorted(per_batch)]
        counts = {batch_id: len(values) for batch_id, values in per_batch.items()}
        part_uri = None
        if run.shards > 1 and stats:
            part_uri = self._put_parquet(
                part_key(run.run_id, run.shard),
                stats,
                run_metadata(
                    params=params, seed=seed, run_id=run.run_id, shard=f"{run.shard}/{run.shards}"
                ),
            )
        done = self._db.save_shard(
            ShardRecord(
                run_id=run.run_id,
                shard=run.shard,
                shards=run.shards,
                batch_ids=shard_batches,
                stats=stats,
                image_counts=counts,
                rejections=rejections,
                part_uri=part_uri,
            )
        )
        if done < run.shards:
            log.info("run %s: shard %d done (%d of %d)", run.run_id, run.shard, done, run.shards)
            return RunOutcome(
                run_id=run.run_id,
                status="processing",
                parquet_uri=part_uri,
                statistics=stats,
                images_processed=sum(counts.values()),
                rejections=rejections,
                error=None,
                notified=False,
                shard=run.shard,
                shards=run.shards,
                final=False,
            )
        return self._finalize(run, stats if run.shards == 1 else None, extras=info.extras)

    def _put_parquet(self, key: str, stats: Sequence[BatchStats], metadata: dict[str, str]) -> str:
        buffer = io.BytesIO()
        write_batch_stats(stats, buffer, metadata=metadata)
        self._objects.put(
            self._results_bucket,
            key,
            buffer.getvalue(),
            content_type="application/vnd.apache.parquet",
            metadata={"run-id": metadata["run_id"]},
        )
        return f"s3://{self._results_bucket}/{key}"

    def _finalize(
        self, run: RunMessage, stats: list[BatchStats] | None, *, extras: dict[str, int]
    ) -> RunOutcome:
        """Write the run's Parquet file (from the shards' parts), its row, and announce it once.

        Runs in every worker that sees the last shard done (a redelivered shard too): each step
        is idempotent, and the notification is claimed under the run's row lock.
        """
        totals = self._db.run_totals(run.run_id)
        if stats is None:
            merged: list[BatchStats] = []
            for uri in totals.part_uris:
                key = uri.removeprefix(f"s3://{self._results_bucket}/")
                part, _ = read_batch_stats(io.BytesIO(self._objects.get(self._results_bucket, key)))
                merged.extend(part)
            stats = sorted(merged, key=lambda s: s.batch_id)
        error = None if stats else "no image of the run could be processed"
        parquet_uri = None
        if stats:
            params = dataclasses.replace(
                self._params, batches=len(stats), images_per_batch=max(totals.largest_batch, 1)
            )
            parquet_uri = self._put_parquet(
                results_key(run.run_id),
                stats,
                run_metadata(
                    params=params,
                    seed=run_seed(run.run_id),
                    run_id=run.run_id,
                    source=f"s3://{run.bucket}/uploads/{run.run_id}/",
                    images_rejected=str(totals.images_rejected),
                ),
            )
        status = FINISHED if error is None else FAILED
        self._db.finish_run(
            run.run_id,
            status=status,
            parquet_uri=parquet_uri,
            images_processed=totals.images_processed,
            images_rejected=totals.images_rejected,
            error=error,
        )
        reported = self._tracking.reported(run.run_id)
        outcome = RunOutcome(
            run_id=run.run_id,
            status=status,
            parquet_uri=parquet_uri,
            statistics=stats,
            images_processed=totals.images_processed,
            rejections=self._db.rejections(run.run_id),
            error=error,
            notified=False,
            shard=run.shard,
            shards=run.shards,
            images_rejected=totals.images_rejected,
            bad_keys=reported.bad_keys,
            late_uploads=reported.late_uploads,
            extra_batches=extras,
        )
        return self._announce(outcome)

    def _announce(self, outcome: RunOutcome) -> RunOutcome:
        def publish() -> None:
            self._notifier.publish(
                subject=f"imgpipe run {outcome.run_id} {outcome.status}",
                message=json.dumps(outcome.notification()),
            )

        if not self._db.notify_once(outcome.run_id, outcome.status, publish):
            log.info(
                "run %s was already announced as %s; not notifying again",
                outcome.run_id,
                outcome.status,
            )
            return outcome
        return dataclasses.replace(outcome, notified=True)

    def _fail_run(self, run: RunMessage, error: str, *, report: bool = True) -> RunOutcome:
        """Store and announce a run that cannot be processed (nothing uploaded is touched)."""
        self._db.save_run(
            RunRecord(
                run_id=run.run_id,
                status=FAILED,
                parquet_uri=None,
                stats=[],
                image_counts={},
                images_processed=0,
                rejections=[],
                error=error,
            )
        )
        reported = self._tracking.reported(run.run_id) if report else None
        info = self._tracking.run_info(run.run_id) if report else None
        outcome = RunOutcome(
            run_id=run.run_id,
            status=FAILED,
            parquet_uri=None,
            statistics=[],
            images_processed=0,
            rejections=[],
            error=error,
            notified=False,
            shard=run.shard,
            shards=run.shards,
            bad_keys=reported.bad_keys if reported else (),
            late_uploads=reported.late_uploads if reported else (),
            extra_batches=info.extras if info else {},
        )
        return self._announce(outcome)

    def _one_image(
        self, run_id: str, ref: ImageRef, *, params: EngineParams, seed: int, plan: ImagePlan
    ) -> tuple[int, int] | Rejection:
        """Counts of one image; ``plan`` was drawn for the run's image size."""
        try:
            data = self._objects.get(self._raw_bucket, ref.key)
        except ObjectMissingError as exc:
            return Rejection(ref.key, ref.batch_id, ref.name, "missing", str(exc), None)
        try:
            if ref.sha256 is not None and hashlib.sha256(data).hexdigest() != ref.sha256:
                raise _ChecksumMismatchError(
                    f"{ref.name}: its SHA-256 differs from the manifest's {ref.sha256}"
                )
            image = decode_image(data, name=ref.name, params=params)
            del data
            height, width = image.shape[:2]
            if (height, width) != (params.image_height, params.image_width):
                rng = image_rng(seed, ref.batch_id, ref.name)
                plan = draw_plan(rng, height=height, width=width, params=params)
            return count_crop(image, plan=plan, params=params)
        except _ChecksumMismatchError as exc:
            reason, detail = "checksum_mismatch", str(exc)
        except ImageRejected as exc:
            reason, detail = exc.reason, str(exc)
        except ValueError as exc:
            reason, detail = "unprocessable", f"{ref.name}: {exc}"
        to_key = rejected_key(run_id, ref.batch_id, ref.name)
        self._objects.copy(
            bucket=self._raw_bucket,
            key=ref.key,
            to_key=to_key,
            metadata={
                "reason": reason,
                "detail": _ascii(detail),
                "run-id": run_id,
                "source-key": _ascii(ref.key),
            },
        )
        return Rejection(
            ref.key, ref.batch_id, ref.name, reason, detail, f"s3://{self._raw_bucket}/{to_key}"
        )


class Heartbeat:
    """Keeps extending a message's visibility while its run is processed."""

    def __init__(self, queue: RunQueue, message: ReceivedMessage, *, timeout: int) -> None:
        self._queue = queue
        self._message = message
        self._timeout = timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def _beat(self) -> None:
        # Extend at once (the queue's own timeout may be shorter than ours), then every third.
        interval = max(self._timeout / 3, 0.5)
        while True:
            try:
                self._queue.set_visibility(self._message, self._timeout)
            except Exception:
                log.warning("could not extend the visibility of %s", self._message.message_id)
            if self._stop.wait(interval):
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Worker:
    """Long-polls the runs queue and processes one run at a time."""

    def __init__(
        self,
        *,
        queue: RunQueue,
        processor: RunProcessor,
        visibility_timeout: int,
        protection: TaskProtection | None = None,
        metrics: EmfMetrics | None = None,
        wait_seconds: int = 20,
        retry_delay_seconds: int = RETRY_DELAY_SECONDS,
        shutdown_grace_seconds: float = 25.0,
        jobs: JobProcessor | None = None,
    ) -> None:
        self._queue = queue
        self._jobs = jobs
        self._processor = processor
        self._visibility = visibility_timeout
        self._protection = protection or TaskProtection(None)
        self._metrics = metrics or EmfMetrics()
        self._wait = wait_seconds
        self._retry_delay = retry_delay_seconds
        self._grace = shutdown_grace_seconds
        self.stopping = threading.Event()
        #: True while a received message is handled (a shutdown then waits for it).
        self.busy = False
        self._abandon = threading.Event()
        self.on_outcome: Callable[[RunOutcome], None] | None = None
        self.on_job_outcome: Callable[[JobOutcome], None] | None = None

    def migrate(self) -> int:
        """Create or migrate the database schema (at start-up); return its version."""
        return self._processor.database.migrate()

    def close(self) -> None:
        """Close the database connection (the worker can be used again afterwards)."""
        self._processor.database.close()

    def request_stop(self) -> None:
        """Stop taking runs; give the current run ``shutdown_grace_seconds`` to finish."""
        if self.stopping.is_set():
            self._abandon.set()  # a second request: give up the current run now
            return
        self.stopping.set()
        timer = threading.Timer(self._grace, self._abandon.set)
        timer.daemon = True
        timer.start()

    def run_forever(self) -> None:
        log.info("worker polling for runs")
        try:
            while not self.stopping.is_set():
                self.poll_once()
        finally:
            self.close()
        log.info("worker stopped")

    def poll_once(self) -> bool:
        """Receive and handle at most one message; True if there was one."""
        message = self._queue.receive(wait_seconds=self._wait)
        if message is None:
            return False
        self.busy = True
        try:
            self.handle(message)
        finally:
            self.busy = False
        return True

    def handle(self, message: ReceivedMessage) -> RunOutcome | JobOutcome | None:
        started = time.monotonic()
        try:
            job = parse_job_message(message.body)
        except InvalidJobMessageError as exc:
            log.error(
                "poison job message %s (receive %d): %s; released at once, it goes to the DLQ "
                "after the maximum receives",
                message.message_id,
                message.receive_count,
                exc,
            )
            self._release(message, 0)
            return None
        if job is not None:
            return self._handle_job(message, job, started=started)
        try:
            run = RunMessage.from_json(message.body)
        except InvalidRunMessageError as exc:
            log.error(
                "poison run message %s (receive %d): %s; released at once, it goes to the DLQ "
                "after the maximum receives",
                message.message_id,
                message.receive_count,
                exc,
            )
            self._release(message, 0)  # never becomes valid: no point in waiting
            return None
        log.info(
            "run %s: processing shard %d of %d (%d images)",
            run.run_id,
            run.shard + 1,
            run.shards,
            run.images,
        )
        self._protection.set(True)
        try:
            with Heartbeat(self._queue, message, timeout=self._visibility):
                outcome = self._processor.process(run, cancel=self._abandon)
            self._queue.delete(message)
        except RunAbandonedError:
            log.warning("run %s abandoned at shutdown; its message is released", run.run_id)
            self._release(message, 0)
            return None
        except Exception:
            delay = self.retry_delay(message.receive_count)
            log.exception(
                "run %s failed (receive %d); the message is kept and retried in %d s",
                run.run_id,
                message.receive_count,
                delay,
            )
            self._metrics.emit({"RunErrors": 1}, run_id=run.run_id)
            self._release(message, delay)
            return None
        finally:
            self._protection.set(False)
        duration = time.monotonic() - started
        values: dict[str, float] = {"ShardsProcessed": 1}
        if outcome.final:
            values.update(
                {
                    "RunsFinished" if outcome.status == FINISHED else "RunsFailed": 1,
                    "RunDurationSeconds": round(duration, 3),
                    "ImagesProcessed": outcome.images_processed,
                    "ImagesRejected": len(outcome.rejections),
                }
            )
        self._metrics.emit(values, run_id=run.run_id)
        log.info(
            "run %s %s in %.2f s: %d images, %d rejected, %s",
            run.run_id,
            outcome.status,
            duration,
            outcome.images_processed,
            len(outcome.rejections),
            outcome.parquet_uri,
        )
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome

    def _handle_job(
        self, message: ReceivedMessage, job: JobMessage | JobShardMessage, *, started: float
    ) -> JobOutcome | None:
        if self._jobs is None:
            log.error("job message %s but this worker runs no jobs", message.message_id)
            self._release(message, self.retry_delay(message.receive_count))
            return None
        shard = job.shard if isinstance(job, JobShardMessage) else None
        log.info(
            "job %s: %s", job.job_id, "starting" if shard is None else f"processing shard {shard}"
        )
        self._protection.set(True)
        try:
            with Heartbeat(self._queue, message, timeout=self._visibility):
                outcome = self._jobs.process(job)
            self._queue.delete(message)
        except Exception as exc:
            delay = self.retry_delay(message.receive_count)
            log.exception(
                "job %s failed (receive %d); the message is kept and retried in %d s",
                job.job_id,
                message.receive_count,
                delay,
            )
            self._metrics.emit({"JobErrors": 1}, job_id=job.job_id)
            last = self._max_receives()
            if last is not None and message.receive_count >= last:
                self._give_up(job, f"gave up after {message.receive_count} attempts: {exc!r}")
            self._release(message, delay)
            return None
        finally:
            self._protection.set(False)
        if outcome.final and outcome.notified:
            values: dict[str, float] = {
                "JobsSucceeded" if outcome.status == "succeeded" else "JobsFailed": 1
            }
            if outcome.duration_s is not None:
                values["JobDurationSeconds"] = round(outcome.duration_s, 3)
            self._metrics.emit(
                values,
                dimensions=("service", "Kind"),
                Kind=outcome.kind or "unknown",
                job_id=outcome.job_id,
            )
        log.info(
            "job %s: %s (shard %d of %d) in %.2f s",
            outcome.job_id,
            outcome.status,
            outcome.shard + 1,
            outcome.shards,
            time.monotonic() - started,
        )
        if self.on_job_outcome is not None:
            self.on_job_outcome(outcome)
        return outcome

    def _max_receives(self) -> int | None:
        """The runs queue's maxReceiveCount, read once (None: unknown, or no DLQ)."""
        if not hasattr(self, "_max_receive_count"):
            reader = getattr(self._queue, "max_receives", None)
            try:
                self._max_receive_count: int | None = None if reader is None else reader()
            except Exception:
                log.warning("could not read the runs queue's redrive policy")
                return None
        return self._max_receive_count

    def _give_up(self, job: JobMessage | JobShardMessage, reason: str) -> None:
        """The job's last receive failed: its message goes to the DLQ next; end the job as
        failed (announced) so that it does not stay ``running``."""
        assert self._jobs is not None
        try:
            outcome = self._jobs.give_up(job, reason)
        except Exception:
            log.exception("job %s: could not record it as failed; see the runs DLQ", job.job_id)
            return
        log.error(
            "job %s failed for good: %s; its message goes to the runs DLQ", job.job_id, reason
        )
        if outcome is not None and outcome.notified:
            self._metrics.emit(
                {"JobsFailed": 1},
                dimensions=("service", "Kind"),
                Kind=outcome.kind or "unknown",
                job_id=outcome.job_id,
            )
        if outcome is not None and self.on_job_outcome is not None:
            self.on_job_outcome(outcome)

    def retry_delay(self, receive_count: int) -> int:
        """Seconds before a failed run is received again: ``retry_delay_seconds`` doubled at
        each receive, at most ten times it (see :mod:`batch_stats.worker.retry`)."""
        return backoff_delay(self._retry_delay, receive_count)

    def _release(self, message: ReceivedMessage, seconds: int) -> None:
        try:
            self._queue.set_visibility(message, seconds)
        except Exception:
            log.warning("could not release message %s", message.message_id)
