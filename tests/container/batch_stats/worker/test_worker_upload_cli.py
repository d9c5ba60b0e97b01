"""``batch-stats upload-run``: a generated run lands in the raw bucket under uploads/<run_id>/."""

from __future__ import annotations

import boto3
import pytest
from batch_stats.cli import main
from batch_stats.engine import EngineParams, decode_image
from batch_stats.local.resources import LocalResources


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
    assert keys == [f"uploads/cli-run/batch_00{b}/img_000{i}.png" for b in (1, 2) for i in (1, 2)]
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
