"""Processing one run, and the loop that takes runs off the queue.

Order of effects for a run (all idempotent by run id, so a redelivered message is harmless):
download + decode + process (concurrently) -> copy rejected uploads -> Parquet to the
deterministic results key -> PostgreSQL upsert in one transaction -> SNS notification (once per
run and status) -> delete the message. While it works, a heartbeat extends the message's
visibility and the ECS task is protected from scale-in.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
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
from batch_stats.worker.database import ResultsDatabase, RunRecord
from batch_stats.worker.messages import ImageRef, InvalidRunMessageError, Rejection, RunMessage
from batch_stats.worker.metrics import EmfMetrics
from batch_stats.worker.retry import RETRY_DELAY_SECONDS, backoff_delay

log = logging.getLogger(__name__)

FINISHED = "finished"
FAILED = "failed"
_METADATA_LIMIT = 1024  # S3 user metadata: 2 KB in total, US-ASCII


class RunAbandonedError(Exception):
    """The run was given up (shutdown); its message is left for another worker."""


def results_key(run_id: str) -> str:
    return f"results/{run_id}/batch_stats.parquet"


def rejected_key(run_id: str, batch_id: str, name: str) -> str:
    return f"rejected/{run_id}/{batch_id}/{name}"


@dataclass(frozen=True)
class RunOutcome:
    """The result of a processed run (what was stored and announced)."""

    run_id: str
    status: str
    parquet_uri: str | None
    statistics: Sequence[BatchStats]
    images_processed: int
    rejections: Sequence[Rejection]
    error: str | None
    notified: bool

    def notification(self) -> dict[str, Any]:
        """The SNS message body (JSON object)."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "parquet_uri": self.parquet_uri,
            "statistics": [stats.as_row() for stats in self.statistics],
            "images_processed": self.images_processed,
            "rejected_count": len(self.rejections),
            "rejected": [rejection.as_dict() for rejection in self.rejections],
            "error": self.error,
        }


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


class RunProcessor:
    """Processes run messages with the engine and stores, then announces, the results."""

    def __init__(
        self,
        *,
        objects: ObjectStore,
        database: ResultsDatabase,
        notifier: Notifier,
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
        self._raw_bucket = raw_bucket
        self._results_bucket = results_bucket
        self._concurrency = concurrency
        self._params = params or EngineParams()

    @property
    def database(self) -> ResultsDatabase:
        return self._db

    def run_params(self, run: RunMessage) -> EngineParams:
        return dataclasses.replace(
            self._params, images_per_batch=run.images_per_batch, batches=run.batches_per_run
        )

    def process(self, run: RunMessage, *, cancel: threading.Event | None = None) -> RunOutcome:
        cancel = cancel or threading.Event()
        if run.bucket != self._raw_bucket:
            return self._finish(
                run,
                stats=[],
                counts={},
                rejections=[],
                error=f"the run's bucket {run.bucket!r} is not the raw bucket {self._raw_bucket!r}",
            )
        params = self.run_params(run)
        seed = run_seed(run.run_id)
        refs = run.images
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
        rejections: list[Rejection] = []
        for ref, result in zip(refs, results, strict=True):
            if isinstance(result, Rejection):
                rejections.append(result)
            else:
                per_batch.setdefault(ref.batch_id, []).append(result)
        stats = [summarize_batch(batch_id, per_batch[batch_id]) for batch_id in sorted(per_batch)]
        counts = {batch_id: len(values) for batch_id, values in per_batch.items()}
        error = None if stats else "no image of the run could be processed"
        return self._finish(
            run, stats=stats, counts=counts, rejections=rejections, error=error, params=params
        )

    def _one_image(
        self, run_id: str, ref: ImageRef, *, params: EngineParams, seed: int, plan: ImagePlan
    ) -> tuple[int, int] | Rejection:
        """Counts of one image; ``plan`` was drawn for the run's image size."""
        try:
            data = self._objects.get(self._raw_bucket, ref.key)
        except ObjectMissingError as exc:
            return Rejection(ref.key, ref.batch_id, ref.name, "missing", str(exc), None)
        try:
            image = decode_image(data, name=ref.name, params=params)
            del data
            height, width = image.shape[:2]
            if (height, width) != (params.image_height, params.image_width):
                rng = image_rng(seed, ref.batch_id, ref.name)
                plan = draw_plan(rng, height=height, width=width, params=params)
            return count_crop(image, plan=plan, params=params)
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

    def _finish(
        self,
        run: RunMessage,
        *,
        stats: list[BatchStats],
        counts: dict[str, int],
        rejections: list[Rejection],
        error: str | None,
        params: EngineParams | None = None,
    ) -> RunOutcome:
        status = FINISHED if error is None else FAILED
        parquet_uri = None
        if stats:
            buffer = io.BytesIO()
            metadata = run_metadata(
                params=params or self.run_params(run),
                seed=run_seed(run.run_id),
                run_id=run.run_id,
                source=f"s3://{run.bucket}/uploads/{run.run_id}/",
                images_rejected=str(len(rejections)),
            )
            write_batch_stats(stats, buffer, metadata=metadata)
            key = results_key(run.run_id)
            self._objects.put(
                self._results_bucket,
                key,
                buffer.getvalue(),
                content_type="application/vnd.apache.parquet",
                metadata={"run-id": run.run_id},
            )
            parquet_uri = f"s3://{self._results_bucket}/{key}"
        images_processed = sum(counts.values())
        announced = self._db.save_run(
            RunRecord(
                run_id=run.run_id,
                status=status,
                parquet_uri=parquet_uri,
                stats=stats,
                image_counts=counts,
                images_processed=images_processed,
                rejections=rejections,
                error=error,
            )
        )
        outcome = RunOutcome(
            run_id=run.run_id,
            status=status,
            parquet_uri=parquet_uri,
            statistics=stats,
            images_processed=images_processed,
            rejections=rejections,
            error=error,
            notified=False,
        )
        if announced == status:
            log.info("run %s was already announced as %s; not notifying again", run.run_id, status)
            return outcome
        self._notifier.publish(
            subject=f"imgpipe run {run.run_id} {status}",
            message=json.dumps(outcome.notification()),
        )
        self._db.mark_notified(run.run_id, status)
        return dataclasses.replace(outcome, notified=True)


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
    ) -> None:
        self._queue = queue
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

    def handle(self, message: ReceivedMessage) -> RunOutcome | None:
        started = time.monotonic()
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
        log.info("run %s: processing %d images", run.run_id, len(run.images))
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
        self._metrics.emit(
            {
                "RunsFinished" if outcome.status == FINISHED else "RunsFailed": 1,
                "RunDurationSeconds": round(duration, 3),
                "ImagesProcessed": outcome.images_processed,
                "ImagesRejected": len(outcome.rejections),
            },
            run_id=run.run_id,
        )
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

    def retry_delay(self, receive_count: int) -> int:
        """Seconds before a failed run is received again: ``retry_delay_seconds`` doubled at
        each receive, at most ten times it (see :mod:`batch_stats.worker.retry`)."""
        return backoff_delay(self._retry_delay, receive_count)

    def _release(self, message: ReceivedMessage, seconds: int) -> None:
        try:
            self._queue.set_visibility(message, seconds)
        except Exception:
            log.warning("could not release message %s", message.message_id)
