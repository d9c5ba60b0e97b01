"""``batch-stats upload-run``, ``upload`` and ``status``: runs into the raw bucket, and back."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from batch_counter.manifest import parse_manifest
from batch_stats.cli import main
from batch_stats.engine import EngineParams, decode_image
from batch_stats.local.resources import LocalResources
from batch_stats.worker.config import WorkerSettings
from batch_stats.worker.runner import Worker
from batch_stats.worker.upload import encode_png


def test_upload_run_writes_a_generated_run(
    monkeypatch: pytest.MonkeyPatch,
    session: boto3.Session,
    resources: LocalResources,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RAW_BUCKET", resources.names.raw_bucket)
    argv = ["upload-run", "--run-id", "cli-run", "--batches", "2", "--images-per-batch", "2"]
    status = main([*argv, "--bad", "empty"])
    assert status == 0
    assert "uploaded 4 images of run cli-run" in capsys.readouterr().out
    s3 = session.client("s3")
    listed = s3.list_objects_v2(Bucket=resources.names.raw_bucket, Prefix="uploads/cli-run/")
    keys = sorted(item["Key"] for item in listed["Contents"])
    assert keys == [
        "uploads/cli-run/_manifest.json",
        *(f"uploads/cli-run/batch_00{b}/img_000{i}.png" for b in (1, 2) for i in (1, 2)),
    ]
    manifest_body = s3.get_object(Bucket=resources.names.raw_bucket, Key=keys.pop(0))["Body"]
    manifest = parse_manifest(manifest_body.read(), run_id="cli-run")
    for key in keys:
        _, _, batch_id, name = key.split("/")
        data = s3.get_object(Bucket=resources.names.raw_bucket, Key=key)["Body"].read()
        assert manifest.batches[batch_id].objects[name] == hashlib.sha256(data).hexdigest()
    sizes = {item["Key"]: item["Size"] for item in listed["Contents"]}
    assert sizes["uploads/cli-run/batch_002/img_0001.png"] == 0  # the requested bad upload
    body = s3.get_object(Bucket=resources.names.raw_bucket, Key=keys[0])["Body"].read()
    assert decode_image(body, name="img_0001.png", params=EngineParams()).shape == (256, 512, 3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["upload-run", "--run-id", "../etc"], "run id '../etc' is not allowed"),
        (["upload-run", "--bad", "gif"], "unknown bad upload kinds ['gif']"),
        (["upload-run", "--batches", "0"], "expected a positive integer"),
    ],
)
def test_upload_run_rejects_bad_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_upload_run_needs_a_bucket(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RAW_BUCKET", raising=False)
    assert main(["upload-run"]) == 2
    assert "pass --bucket or set RAW_BUCKET" in capsys.readouterr().err


def test_upload_sends_a_users_folder_then_its_manifest(
    monkeypatch: pytest.MonkeyPatch,
    session: boto3.Session,
    resources: LocalResources,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = np.random.default_rng(3)
    layout = {"day-1": ["a.png"], "day-2": ["b.png", "c.png"]}
    bodies = {}
    for batch_id, names in layout.items():
        (tmp_path / batch_id).mkdir()
        for name in names:
            body = encode_png(rng.integers(0, 256, (210, 220, 3), dtype=np.uint8))
            (tmp_path / batch_id / name).write_bytes(body)
            bodies[f"uploads/own/{batch_id}/{name}"] = body
    monkeypatch.setenv("RAW_BUCKET", resources.names.raw_bucket)
    assert main(["upload", str(tmp_path), "--run-id", "own"]) == 0
    assert "uploaded 3 images in 2 batches of run own" in capsys.readouterr().out
    s3 = session.client("s3")
    for key, body in bodies.items():
        assert s3.get_object(Bucket=resources.names.raw_bucket, Key=key)["Body"].read() == body
    data = s3.get_object(Bucket=resources.names.raw_bucket, Key="uploads/own/_manifest.json")
    manifest = parse_manifest(data["Body"].read(), run_id="own")
    assert {b: m.images for b, m in manifest.batches.items()} == {"day-1": 1, "day-2": 2}
    assert (
        manifest.batches["day-2"].objects["c.png"]
        == hashlib.sha256(bodies["uploads/own/day-2/c.png"]).hexdigest()
    )


def test_upload_refuses_a_folder_it_cannot_upload_as_is(
    monkeypatch: pytest.MonkeyPatch,
    session: boto3.Session,
    resources: LocalResources,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "b1" / "nested").mkdir(parents=True)
    (tmp_path / "b1" / "photo.jpg").write_bytes(b"x")
    (tmp_path / "b1" / "ok.png").write_bytes(b"x")
    (tmp_path / "bad batch").mkdir()
    monkeypatch.setenv("RAW_BUCKET", resources.names.raw_bucket)
    assert main(["upload", str(tmp_path), "--run-id", "r1"]) == 2
    err = capsys.readouterr().err
    assert "3 entries" in err
    for part in ("nested: not a regular file", "photo.jpg: image name not allowed", "bad batch"):
        assert part in err
    listed = session.client("s3").list_objects_v2(Bucket=resources.names.raw_bucket)
    assert listed.get("KeyCount", 0) == 0  # nothing uploaded


def test_status_shows_counts_results_and_reports(
    monkeypatch: pytest.MonkeyPatch,
    settings: WorkerSettings,
    resources: LocalResources,
    session: boto3.Session,
    worker: Worker,
    dispatch_run: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    dispatch_run("run-st", bad=("empty",))
    assert worker.poll_once()
    capsys.readouterr()  # the worker's metric lines
    for name, value in {
        "TRACKING_TABLE_NAME": resources.names.tracking_table,
        "RAW_BUCKET": resources.names.raw_bucket,
        "DATABASE_URL": settings.database_url or "",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["status", "run-st", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "DISPATCHED"
    assert [(b["batch_id"], b["received"]) for b in status["batches"]] == [
        ("batch_001", 3),
        ("batch_002", 3),
    ]
    results = status["results"]
    assert (results["status"], results["shards_done"], results["images_processed"]) == (
        "finished",
        1,
        5,
    )
    assert [r["reason"] for r in results["rejected"]] == ["empty"]
    assert results["parquet_uri"].endswith("results/run-st/batch_stats.parquet")
    assert main(["status", "run-st"]) == 0
    text = capsys.readouterr().out
    assert "run run-st: DISPATCHED (stack defaults, no manifest)" in text
    assert "results: finished, shards 1 of 1 done, 5 images processed, 1 rejected" in text
    assert main(["status", "nope"]) == 1
    assert "unknown" in capsys.readouterr().out
