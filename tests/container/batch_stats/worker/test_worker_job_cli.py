"""``batch-stats submit`` and ``batch-stats job-status`` against moto's server and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from batch_stats.cli import main
from batch_stats.local.resources import LocalResources
from batch_stats.worker.config import WorkerSettings
from batch_stats.worker.runner import Worker

from .conftest import count_uploads, make_counter

DOCUMENT = {
    "version": 1,
    "kind": "synthetic-stats",
    "params": {
        "batches": 2,
        "images_per_batch": 3,
        "seed": 5,
        "image_height": 48,
        "image_width": 64,
        "square_size": 8,
        "crop_height": 32,
        "crop_width": 32,
    },
}


def test_submit_refuses_a_bad_document_listing_every_problem_and_uploads_nothing(
    tmp_path: Path,
    resources: LocalResources,
    session: boto3.Session,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RAW_BUCKET", resources.names.raw_bucket)
    path = tmp_path / "bad-job.json"
    path.write_text(
        json.dumps(
            {
                "version": 3,
                "kind": "synthetic-stats",
                "params": {"batches": "2", "images_per_batch": 0, "shade": 1},
            }
        )
    )
    assert main(["submit", str(path)]) == 2
    err = capsys.readouterr().err
    assert "is not a valid job document (4 problems); nothing was uploaded" in err
    for problem in (
        "  - version 3 is not supported (allowed: 1)",
        "  - params: unknown keys ['shade']",
        "  - params: batches '2' is a str, not an integer (allowed: 1-100000)",
        "  - params: images_per_batch 0 is out of range (allowed: 1-10000)",
    ):
        assert problem in err
    listed = session.client("s3").list_objects_v2(Bucket=resources.names.raw_bucket)
    assert listed.get("KeyCount", 0) == 0


def test_submit_refuses_a_file_name_that_is_not_a_job_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "my job.json"
    path.write_text(json.dumps(DOCUMENT))
    assert main(["submit", str(path)]) == 2
    assert "job id 'my job' (from the file name 'my job.json') is not allowed" in (
        capsys.readouterr().err
    )


def test_submit_uploads_the_document_and_job_status_follows_it(
    tmp_path: Path,
    resources: LocalResources,
    session: boto3.Session,
    settings: WorkerSettings,
    worker: Worker,
    run_jobs: Callable[..., list[Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in {
        "RAW_BUCKET": resources.names.raw_bucket,
        "TRACKING_TABLE_NAME": resources.names.tracking_table,
        "DATABASE_URL": settings.database_url or "",
    }.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(DOCUMENT))
    assert main(["submit", str(path), "--job-id", "cli-job"]) == 0
    assert "submitted synthetic-stats job cli-job (1 shard)" in capsys.readouterr().out
    stored = session.client("s3").get_object(
        Bucket=resources.names.raw_bucket, Key="jobs/cli-job.json"
    )
    assert json.loads(stored["Body"].read()) == DOCUMENT

    count_uploads(
        session, resources, make_counter(session, resources, images_per_batch=3, batches=2)
    )
    assert main(["job-status", "cli-job", "--json"]) == 0
    waiting = json.loads(capsys.readouterr().out)
    assert waiting["dispatch"]["state"] == "DISPATCHED"
    assert waiting["job"] is None  # the worker has not taken it yet

    run_jobs(worker)
    capsys.readouterr()
    assert main(["job-status", "cli-job", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["job"]["status"] == "succeeded"
    assert status["job"]["outputs"]["parquet_uri"].endswith("results/cli-job/batch_stats.parquet")
    assert main(["job-status", "cli-job"]) == 0
    text = capsys.readouterr().out
    assert "synthetic-stats: succeeded, shards 1 of 1 done" in text
    assert main(["job-status", "nope"]) == 1
    assert "job nope: unknown" in capsys.readouterr().out
