"""The whole flow in local mode: S3 upload -> notification -> Lambda -> worker -> webhook."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_stats.engine import EngineParams, read_batch_stats
from batch_stats.local.pipeline import LocalPipeline
from batch_stats.worker.upload import upload_run


def test_runs_flow_end_to_end_with_one_notification_each(
    pipeline: LocalPipeline, small: EngineParams
) -> None:
    s3 = pipeline.session.client("s3")
    sqs = pipeline.session.client("sqs")
    raw = pipeline.resources.names.raw_bucket
    upload_run(s3, raw, "flow-a", params=small)
    upload_run(s3, raw, "flow-b", params=small, bad=("empty", "decompression_bomb"))
    s3.put_object(Bucket=raw, Key="uploads/flow-b/not-a-batch.png", Body=b"x")

    # S3 delivers events at least once: every event is delivered a second time. The received
    # originals come back when their visibility timeout expires; the copies are new messages.
    events = []
    while batch := sqs.receive_message(
        QueueUrl=pipeline.resources.ingest_queue_url, MaxNumberOfMessages=10
    ).get("Messages", []):
        events += batch
    assert len(events) == 2 * 6 + 1 + 1  # uploads, the bad key, the s3:TestEvent
    for message in events:
        sqs.send_message(QueueUrl=pipeline.resources.ingest_queue_url, MessageBody=message["Body"])

    records = pipeline.pump_lambda()
    assert records == 2 * len(events)
    outcomes = pipeline.run_worker(runs=2, timeout=60)
    assert sorted(o.run_id for o in outcomes) == ["flow-a", "flow-b"]

    received = [pipeline.webhook.get(timeout=10) for _ in range(2)]
    time.sleep(1)
    assert pipeline.webhook.pending() == []  # exactly one message per run
    by_run = {envelope["Message"]["run_id"]: envelope["Message"] for envelope in received}
    assert by_run["flow-a"]["status"] == "finished"
    assert by_run["flow-a"]["rejected_count"] == 0
    assert by_run["flow-b"]["status"] == "finished"
    assert {r["reason"] for r in by_run["flow-b"]["rejected"]} == {"empty", "decompression_bomb"}
    # No second run message is waiting: each run was dispatched once.
    assert not pipeline.worker.poll_once()

    for run_id, images in (("flow-a", 6), ("flow-b", 4)):
        uri = by_run[run_id]["parquet_uri"]
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        assert bucket == pipeline.resources.names.results_bucket
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        stats, metadata = read_batch_stats(io.BytesIO(body))
        assert metadata["run_id"] == run_id
        rows = pipeline.database.batch_rows(run_id)
        assert [r["batch_id"] for r in rows] == [s.batch_id for s in stats]
        assert sum(int(str(r["image_count"])) for r in rows) == images
        assert [r["white_avg"] for r in rows] == [s.white_avg for s in stats]

    bad_keys = pipeline.session.client("dynamodb").query(
        TableName=pipeline.resources.names.tracking_table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "BADKEY"}},
    )["Items"]
    assert [item["key"]["S"] for item in bad_keys] == ["uploads/flow-b/not-a-batch.png"]


def test_environment_matches_the_stack_contract(pipeline: LocalPipeline) -> None:
    from batch_counter.config import REQUIRED_ENV_VARS as LAMBDA_VARS
    from batch_stats.worker.config import REQUIRED_ENV_VARS as WORKER_VARS

    for name in (*LAMBDA_VARS, *WORKER_VARS, "DATABASE_URL", "AWS_ENDPOINT_URL"):
        assert os.environ.get(name), name
    assert os.environ["TRACKING_TABLE_NAME"] == "imgpipe-test-tracking"
    assert os.environ["RAW_BUCKET"] == "imgpipe-test-raw-123456789012-us-east-1"
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")


def _demo(work_dir: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TMPDIR": str(work_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "batch_stats.cli", "demo", "--out", str(work_dir / "out"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _processes_under(path: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmdline and "pytest" not in cmdline:
            found.append(cmdline)
    return found


@pytest.mark.slow
def test_demo_command_shows_every_output(work_dir: Path) -> None:
    process = _demo(work_dir, "--batches", "2", "--images-per-batch", "3")
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    for section in (
        "== Statistics",
        "== Parquet\ns3://imgpipe-local-results-123456789012-us-east-1/results/demo-run/"
        "batch_stats.parquet",
        "== PostgreSQL rows",
        "== Notification received by the webhook",
        '"status": "finished"',
        "bad key recorded: uploads/demo-run/stray-file.png (wrong_depth)",
        "local services stopped",
    ):
        assert section in stdout
    out = work_dir / "out"
    for name in ("preview.png", "statistics.png", "batch_stats.parquet", "notification.json"):
        assert (out / name).stat().st_size > 0
    assert (out / "preview.png").read_bytes().startswith(b"\x89PNG")
    assert _processes_under(work_dir) == []


@pytest.mark.slow
def test_demo_stops_everything_on_ctrl_c(work_dir: Path) -> None:
    process = _demo(work_dir)
    assert process.stdout is not None
    for line in process.stdout:
        if "uploading run" in line:
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted" in stderr
    assert _processes_under(work_dir) == []


@pytest.mark.slow
def test_demo_with_worker_processes_fans_a_run_out_in_shards(work_dir: Path) -> None:
    process = _demo(
        work_dir,
        *("--batches", "4", "--images-per-batch", "3", "--bad", ""),
        *("--workers", "2", "--shard-images", "3"),
    )
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "2 worker processes (python -m batch_stats.worker) on the runs queue" in stdout
    assert "run demo-run finished in 4 shard(s)" in stdout
    notification = json.loads((work_dir / "out" / "notification.json").read_text())
    assert (notification["shards"], notification["images_processed"]) == (4, 12)
    stats, _ = read_batch_stats(work_dir / "out" / "batch_stats.parquet")
    assert [s.batch_id for s in stats] == [f"batch_00{b}" for b in range(1, 5)]
    assert _processes_under(work_dir) == []


@pytest.mark.slow
def test_demo_reports_a_run_that_stays_incomplete(work_dir: Path) -> None:
    """The stack expects one batch more than is uploaded: the run's check schedule (fired by
    the local driver when due) reports it once, naming the batch that never came."""
    process = _demo(
        work_dir,
        "--batches",
        "2",
        "--images-per-batch",
        "2",
        "--missing-batches",
        "1",
        "--run-timeout",
        "2",
        "--no-bad-key",
    )
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    assert "run check: {'run_id': 'demo-run', 'checked': 'incomplete'}" in stdout
    notification = json.loads((work_dir / "out" / "notification.json").read_text())
    assert notification["status"] == "incomplete"
    assert (notification["expected_images"], notification["received_images"]) == (6, 4)
    assert (notification["expected_batches"], notification["unseen_batches"]) == (3, 1)
    assert notification["missing_batches"] == []
    assert _processes_under(work_dir) == []


@pytest.mark.slow
def test_demo_job_runs_a_synthetic_stats_job_through_the_local_stack(work_dir: Path) -> None:
    process = _demo(work_dir, "--job", "synthetic-stats")
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    for section in (
        "submitted s3://imgpipe-local-raw-123456789012-us-east-1/jobs/demo-synthetic-stats.json",
        "job demo-synthetic-stats succeeded (2 shards)",
        "== Job status (batch-stats job-status)",
        "synthetic-stats: succeeded, shards 2 of 2 done",
        "== Notification received by the webhook",
        '"status": "succeeded"',
    ):
        assert section in stdout
    out = work_dir / "out"
    assert (out / "preview.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((out / "job.json").read_text())["kind"] == "synthetic-stats"
    assert json.loads((out / "notification.json").read_text())["job_id"] == "demo-synthetic-stats"
    assert _processes_under(work_dir) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "shards"), [("digits", 2), ("mosaic", 1)], ids=["digits", "mosaic"]
)
def test_demo_job_runs_each_kind_with_its_preview(work_dir: Path, kind: str, shards: int) -> None:
    process = _demo(work_dir, "--job", kind)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    assert f"job demo-{kind} succeeded ({shards} shard" in stdout
    assert f"{kind}: succeeded, shards {shards} of {shards} done" in stdout
    out = work_dir / "out"
    previews = [p for p in out.glob("preview.*") if p.stat().st_size > 0]
    assert len(previews) == 1
    assert json.loads((out / "notification.json").read_text())["kind"] == kind
    assert _processes_under(work_dir) == []
