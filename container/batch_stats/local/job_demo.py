"""``batch-stats demo --job KIND``: one job through the same local stack as ``make demo``.

The kind's demo parameters (:meth:`JobKind.demo_params`, which uploads any inputs to the raw
bucket first) become a job document uploaded to ``jobs/<job_id>.json``, exactly as
``batch-stats submit`` does; moto's S3 notification puts the event on the ingest queue, the
batch counter Lambda handler dispatches the job, the worker validates and runs it (fanning out
over shards through the runs queue), and the webhook receives the notification. The kind's
preview (:meth:`JobKind.write_preview`), the document, the notification and the job's status
are written to the output folder.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch_stats.engine import EngineParams
from batch_stats.jobs.document import JOB_SCHEMA_VERSION, job_key, parse_job_document
from batch_stats.jobs.registry import get_kind
from batch_stats.local.pipeline import local_pipeline
from batch_stats.worker.adapters import S3ObjectStore
from batch_stats.worker.metrics import EmfMetrics
from batch_stats.worker.status import format_job_status, job_status
from batch_stats.worker.tracking import DynamoRunTracking


@dataclass(frozen=True, kw_only=True)
class JobDemoOptions:
    kind: str
    out_dir: Path = Path("out/demo")
    #: Default: ``demo-<kind>``.
    job_id: str | None = None


def run_job_demo(options: JobDemoOptions) -> dict[str, Any]:
    """Run one job of ``options.kind`` locally; return its notification. Prints as it goes."""
    started = time.perf_counter()

    def step(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {text}", flush=True)

    kind = get_kind(options.kind)
    job_id = options.job_id or f"demo-{options.kind}"
    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="imgpipe-local-") as tmp,
        open(out / "worker-metrics.jsonl", "w") as worker_emf,
        local_pipeline(
            Path(tmp),
            params=EngineParams(),
            step=step,
            lambda_log_level="ERROR",
            metrics=EmfMetrics(worker_emf),
        ) as pipeline,
    ):
        s3 = pipeline.session.client("s3")
        store = S3ObjectStore(s3)
        raw = pipeline.resources.names.raw_bucket
        results = pipeline.resources.names.results_bucket
        scratch = Path(tmp) / "demo-inputs"
        scratch.mkdir()
        step(f"{options.kind}: preparing the demo job (inputs go to s3://{raw}/inputs/)")
        params = kind.demo_params(store=store, input_bucket=raw, scratch=scratch)
        document = {"version": JOB_SCHEMA_VERSION, "kind": options.kind, "params": params}
        data = json.dumps(document, indent=2).encode()
        parse_job_document(data, job_id=job_id)  # what `batch-stats submit` checks first
        (out / "job.json").write_bytes(data)
        key = job_key(job_id)
        s3.put_object(Bucket=raw, Key=key, Body=data, ContentType="application/json")
        step(f"submitted s3://{raw}/{key}: {json.dumps(params)}")
        step("batch counter Lambda: dispatching the job document")
        with (
            open(out / "lambda-metrics.jsonl", "w") as emf,
            contextlib.redirect_stdout(emf),  # Powertools prints its EMF lines
        ):
            pipeline.pump_lambda()
        step("worker: validating and running the job (shards through the runs queue)")
        (outcome,) = pipeline.run_jobs(jobs=1)
        step(f"job {job_id} {outcome.status} ({outcome.shards} shards)")
        notification: dict[str, Any] = pipeline.webhook.get(timeout=30)["Message"]
        (out / "notification.json").write_text(json.dumps(notification, indent=2))
        status = job_status(
            job_id,
            database=pipeline.database,
            tracking=DynamoRunTracking(
                pipeline.session.client("dynamodb"), pipeline.resources.names.tracking_table
            ),
        )
        print("== Job status (batch-stats job-status)")
        print(format_job_status(status))
        if outcome.status == "succeeded":
            preview = kind.write_preview(
                outcome.outputs, store=store, output_bucket=results, path=out / "preview.png"
            )
            step(f"preview written to {preview}")
        print("== Notification received by the webhook")
        print(json.dumps(notification, indent=2))
        return notification
