"""``batch-stats demo``: the serverless flow end to end on this machine, with its outputs.

Generates a run, uploads it to the emulated raw bucket (plus a few bad uploads), lets the batch
counter and the worker do their work, and shows the statistics table, the Parquet URI, the
PostgreSQL rows and the webhook's notification; writes a preview and a plot to the output folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from batch_stats.engine import (
    BatchStats,
    EngineParams,
    decode_image,
    draw_plan,
    format_table,
    image_rng,
    run_seed,
)
from batch_stats.local.pipeline import LocalPipeline, local_pipeline
from batch_stats.worker.metrics import EmfMetrics
from batch_stats.worker.upload import PlannedUpload, upload_run

DEFAULT_BAD = ("truncated", "not_png")


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    run_id: str = "demo-run"
    params: EngineParams = field(default_factory=EngineParams)
    bad: Sequence[str] = DEFAULT_BAD
    bad_key: bool = True
    out_dir: Path = Path("out/demo")
    seed: int | None = None
    #: Worker processes on the runs queue (1: the worker runs in this process).
    workers: int = 1
    shard_images: int = 5000
    #: Batches the run lacks: the stack expects this many more than are uploaded, so the run
    #: stays incomplete and its check (due ``run_timeout`` seconds after the last upload)
    #: reports it instead of a worker processing it.
    missing_batches: int = 0
    run_timeout: int = 3


class _Console:
    def __init__(self) -> None:
        self._started = time.perf_counter()

    def step(self, text: str) -> None:
        print(f"[{time.perf_counter() - self._started:6.1f} s] {text}", flush=True)

    def bar(self, total: int, description: str, unit: str) -> tqdm[Any]:
        return tqdm(total=total, desc=f"  {description}", unit=unit, file=sys.stderr, disable=None)


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Run the demo; return the notification it received. Prints as it goes."""
    console = _Console()
    params = options.params
    options.out_dir.mkdir(parents=True, exist_ok=True)
    total = params.batches * params.images_per_batch
    worker_bars: list[tqdm[Any]] = []  # the worker's bar, opened when the worker starts
    with (
        tempfile.TemporaryDirectory(prefix="imgpipe-local-") as tmp,
        open(options.out_dir / "worker-metrics.jsonl", "w") as worker_emf,
    ):
        stack_params = dataclasses.replace(params, batches=params.batches + options.missing_batches)
        with local_pipeline(
            Path(tmp),
            params=stack_params,
            run_timeout=options.run_timeout if options.missing_batches else 3600,
            on_image=lambda ref: worker_bars[-1].update(),
            step=console.step,
            lambda_log_level="ERROR",
            metrics=EmfMetrics(worker_emf),
            shard_images=options.shard_images,
        ) as pipeline:
            raw = pipeline.resources.names.raw_bucket
            console.step(
                f"uploading run {options.run_id!r}: {params.batches} batches x "
                f"{params.images_per_batch} images ({len(options.bad)} of them bad: "
                f"{', '.join(options.bad) or 'none'}) to s3://{raw}/uploads/{options.run_id}/"
            )
            s3 = pipeline.session.client("s3")
            with console.bar(total, "upload", "img") as bar:
                uploads = upload_run(
                    s3,
                    raw,
                    options.run_id,
                    params=params,
                    bad=options.bad,
                    seed=options.seed,
                    progress=lambda upload: bar.update(),
                )
            if options.bad_key:
                key = f"uploads/{options.run_id}/stray-file.png"
                s3.put_object(Bucket=raw, Key=key, Body=b"not in a batch folder")
                console.step(f"also uploaded a file with a bad key: {key}")

            console.step("batch counter Lambda: handling the ingest queue's S3 events")
            with (
                console.bar(total, "lambda", "event") as bar,
                open(options.out_dir / "lambda-metrics.jsonl", "w") as emf,
                contextlib.redirect_stdout(emf),  # Powertools prints its EMF lines
            ):
                pipeline.pump_lambda(on_batch=bar.update)
            _show_tracking(pipeline, options.run_id, console)

            if options.missing_batches:
                console.step(
                    f"the stack expects {stack_params.batches} batches: the run stays incomplete; "
                    f"its check fires {options.run_timeout} s after the last upload"
                )
                for answer in pipeline.await_checks():
                    console.step(f"run check: {answer}")
                report: dict[str, Any] = pipeline.webhook.get(timeout=30)["Message"]
                (options.out_dir / "notification.json").write_text(json.dumps(report, indent=2))
                console.step(f"run {report['run_id']} {report['status']}: {report['error']}")
                print("== Notification received by the webhook")
                print(json.dumps(report, indent=2))
                return report

            if options.workers == 1:
                console.step("worker: processing the run from the runs queue")
                with console.bar(total, "worker", "img") as bar:
                    worker_bars.append(bar)
                    (outcome,) = pipeline.run_worker(runs=1)
                console.step(f"run {outcome.run_id} {outcome.status}")
                envelope = pipeline.webhook.get(timeout=30)
                statistics: Sequence[BatchStats] = outcome.statistics
                parquet_uri = outcome.parquet_uri
            else:
                envelope = _run_worker_processes(pipeline, options, console, worker_emf)
                parquet_uri = envelope["Message"]["parquet_uri"]
                statistics = _read_statistics(s3, parquet_uri)
            notification: dict[str, Any] = envelope["Message"]
            rows = pipeline.database.batch_rows(options.run_id)
            if parquet_uri is not None:
                bucket, _, key = parquet_uri.removeprefix("s3://").partition("/")
                local_copy = options.out_dir / "batch_stats.parquet"
                s3.download_file(bucket, key, str(local_copy))
            preview = _first_accepted(uploads, notification)
            if preview is not None:
                data = s3.get_object(Bucket=raw, Key=preview.key)["Body"].read()
                write_preview(
                    data,
                    upload=preview,
                    run_id=options.run_id,
                    params=params,
                    path=options.out_dir / "preview.png",
                )
            (options.out_dir / "notification.json").write_text(json.dumps(notification, indent=2))
            if statistics:
                plot_statistics(statistics, path=options.out_dir / "statistics.png")
        console.step("local services stopped")

    _print_results(statistics, parquet_uri, rows, envelope, options.out_dir)
    return notification


def _run_worker_processes(
    pipeline: LocalPipeline, options: DemoOptions, console: _Console, metrics: Any
) -> dict[str, Any]:
    """Run ``options.workers`` worker processes (the container's command) on the runs queue until
    the run's notification arrives; stop them with SIGTERM as ECS would."""
    import os
    import signal
    import subprocess

    console.step(
        f"{options.workers} worker processes (python -m batch_stats.worker) on the runs queue"
    )
    environ = {**os.environ, "LOG_LEVEL": "WARNING"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "batch_stats.worker"],
            env=environ,
            stdout=metrics,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(options.workers)
    ]
    try:
        envelope = pipeline.webhook.get(timeout=600)
        console.step(
            f"run {envelope['Message']['run_id']} {envelope['Message']['status']} in "
            f"{envelope['Message']['shards']} shard(s)"
        )
        return envelope
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _read_statistics(s3: Any, parquet_uri: str | None) -> list[BatchStats]:
    if parquet_uri is None:
        return []
    import io

    from batch_stats.engine import read_batch_stats

    bucket, _, key = parquet_uri.removeprefix("s3://").partition("/")
    stats, _ = read_batch_stats(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    return stats


def _show_tracking(pipeline: LocalPipeline, run_id: str, console: _Console) -> None:
    ddb = pipeline.session.client("dynamodb")
    table = pipeline.resources.names.tracking_table
    run = ddb.get_item(TableName=table, Key={"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": "RUN"}})
    item = run.get("Item", {})
    console.step(
        f"tracking table: run state {item.get('state', {}).get('S')}, "
        f"{item.get('image_count', {}).get('N')} images, "
        f"{len(json.loads(item.get('plan', {}).get('S', '[]')))} shard message(s)"
    )
    bad = ddb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "BADKEY"}},
    )["Items"]
    for entry in bad:
        console.step(f"bad key recorded: {entry['key']['S']} ({entry['reason']['S']})")


def _first_accepted(
    uploads: Sequence[PlannedUpload], notification: dict[str, Any]
) -> PlannedUpload | None:
    rejected = {r["key"] for r in notification.get("rejected", [])}
    return next((u for u in uploads if u.key not in rejected), None)


def painted_crop(
    image: npt.NDArray[np.uint8], *, rng: np.random.Generator, params: EngineParams
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], tuple[int, int]]:
    """(image with the squares, its crop, crop corner), drawn exactly as the engine draws them."""
    height, width = image.shape[:2]
    plan = draw_plan(rng, height=height, width=width, params=params)
    painted = image.copy()
    size = plan.placement.size
    for corner, value in ((plan.placement.white, 255), (plan.placement.black, 0)):
        painted[corner[0] : corner[0] + size, corner[1] : corner[1] + size] = value
    cy, cx = plan.crop
    crop = painted[cy : cy + params.crop_height, cx : cx + params.crop_width]
    return painted, crop, plan.crop


def write_preview(
    data: bytes, *, upload: PlannedUpload, run_id: str, params: EngineParams, path: Path
) -> None:
    """One image before, and after squares + crop (the worker's own random choices)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    image = decode_image(data, name=upload.name, params=params)
    rng = image_rng(run_seed(run_id), upload.batch_id, upload.name)
    painted, crop, (cy, cx) = painted_crop(image, rng=rng, params=params)
    figure, axes = plt.subplots(1, 3, figsize=(14, 3.6), width_ratios=[2.5, 2.5, 1.2])
    axes[0].imshow(image)
    axes[0].set_title(f"{upload.batch_id}/{upload.name}: uploaded")
    axes[1].imshow(painted)
    axes[1].add_patch(
        Rectangle(
            (cx - 0.5, cy - 0.5),
            params.crop_width,
            params.crop_height,
            fill=False,
            edgecolor="red",
            linewidth=2,
        )
    )
    axes[1].set_title("white and black squares, crop in red")
    axes[2].imshow(crop)
    axes[2].set_title(f"crop {params.crop_height}x{params.crop_width}")
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_statistics(stats: Sequence[BatchStats], *, path: Path) -> None:
    """Per batch and colour: mean with min-max range and +-1 standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(stats, key=lambda s: s.batch_id)
    x = np.arange(len(ordered))
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for offset, colour, face in ((-0.15, "white", "#d9d9d9"), (0.15, "black", "#303030")):
        avg = np.array([getattr(s, f"{colour}_avg") for s in ordered])
        low = np.array([getattr(s, f"{colour}_min") for s in ordered])
        high = np.array([getattr(s, f"{colour}_max") for s in ordered])
        std = np.array([getattr(s, f"{colour}_std") or 0.0 for s in ordered])
        axis.bar(x + offset, avg, width=0.3, color=face, edgecolor="black", label=f"{colour} mean")
        axis.errorbar(
            x + offset, avg, yerr=[avg - low, high - avg], fmt="none", ecolor="tab:red", capsize=4
        )
        axis.errorbar(x + offset, avg, yerr=std, fmt="none", ecolor="tab:blue", elinewidth=3)
    axis.set_xticks(x, [s.batch_id for s in ordered])
    axis.set_ylabel("pixels in the crop")
    axis.set_title("Per-batch white/black pixel counts (red: min to max, blue: mean \u00b1 1 std)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _print_results(
    stats: Sequence[BatchStats],
    parquet_uri: str | None,
    rows: list[dict[str, object]],
    envelope: dict[str, Any],
    out_dir: Path,
) -> None:
    print("\n== Statistics (per batch; counts in the crop)")
    print(format_table(stats) if stats else "(no batch could be processed)")
    print(f"\n== Parquet\n{parquet_uri}")
    print("\n== PostgreSQL rows (table batch_stats)")
    for row in rows:
        print("  " + ", ".join(f"{k}={_short(v)}" for k, v in row.items()))
    message = envelope["Message"]
    print(f"\n== Notification received by the webhook (SNS subject: {envelope.get('Subject')!r})")
    shown = {**message, "statistics": f"[{len(message.get('statistics', []))} rows, as above]"}
    print(json.dumps(shown, indent=2))
    print(f"\n== Files in {out_dir}/")
    for path in sorted(out_dir.iterdir()):
        print(f"  {path}")


def _short(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def parse_bad(text: str) -> tuple[str, ...]:
    from batch_stats.worker.upload import BAD_UPLOADS

    kinds = tuple(k for k in (part.strip() for part in text.split(",")) if k)
    unknown = [k for k in kinds if k not in BAD_UPLOADS]
    if unknown:
        raise ValueError(
            f"unknown bad upload kinds {unknown}; allowed: {', '.join(BAD_UPLOADS)} "
            "(comma-separated, or empty for none)"
        )
    return kinds
