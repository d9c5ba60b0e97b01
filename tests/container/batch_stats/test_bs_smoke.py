"""The smoke test of a deployed stack, run against the local pipeline (moto, real PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from batch_stats import smoke
from batch_stats.local.services import moto_server, patched_environ

pytestmark = pytest.mark.slow


def test_smoke_runs_through_the_local_pipeline_and_cleans_up(tmp_path: Path) -> None:
    steps: list[str] = []
    with smoke.local_target(tmp_path, images_per_batch=3, batches=2) as target:
        session = boto3.Session()
        report = smoke.run_smoke(
            session, target, run_id="smoke-local-1", timeout=120, step=steps.append
        )
        s3, sqs = session.client("s3"), session.client("sqs")
        # What it created is gone: every uploaded version, the Parquet object, the queue and
        # its subscription.
        for bucket, prefix in (
            (target.raw_bucket, "uploads/smoke-local-1/"),
            (target.results_bucket, "results/smoke-local-1/"),
        ):
            versions = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
            assert "Versions" not in versions
            assert "DeleteMarkers" not in versions
        assert not [
            u for u in sqs.list_queues().get("QueueUrls", []) if u.endswith("imgpipe-smoke-local-1")
        ]
        subscriptions = session.client("sns").list_subscriptions_by_topic(
            TopicArn=target.topic_arn
        )["Subscriptions"]
        assert not [s for s in subscriptions if s["Endpoint"].endswith("imgpipe-smoke-local-1")]
    assert report.status == "finished"
    assert report.batches == 2
    assert report.images_processed == 6
    assert (
        report.parquet_uri
        == f"s3://{target.results_bucket}/results/smoke-local-1/batch_stats.parquet"
    )
    assert 0 < report.upload_seconds <= report.total_seconds
    assert any("checked s3://" in s for s in steps)
    text = "\n".join(report.lines())
    assert "upload -> notice" in text


def test_smoke_reads_the_run_shape_and_names_from_the_stack_outputs() -> None:
    template = {
        "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {
            "RawBucketName": {"Value": "raw-b"},
            "ResultsBucketName": {"Value": "results-b"},
            "TopicArn": {"Value": "arn:aws:sns:us-east-1:123456789012:t"},
            "ImagesPerBatch": {"Value": "20"},
            "BatchesPerRun": {"Value": "5"},
        },
    }
    with moto_server() as endpoint, patched_environ(endpoint.environ()):
        session = boto3.Session()
        cloudformation = session.client("cloudformation")
        cloudformation.create_stack(StackName="Imgpipe-x", TemplateBody=json.dumps(template))
        target = smoke.target_from_stack(session, "Imgpipe-x")
        assert target == smoke.Target(
            "raw-b", "results-b", "arn:aws:sns:us-east-1:123456789012:t", 20, 5
        )
        del template["Outputs"]["BatchesPerRun"]
        cloudformation.create_stack(StackName="Imgpipe-y", TemplateBody=json.dumps(template))
        with pytest.raises(smoke.SmokeError, match="lacks the outputs BatchesPerRun"):
            smoke.target_from_stack(session, "Imgpipe-y")
        with pytest.raises(smoke.SmokeError, match="cannot read stack Imgpipe-nope"):
            smoke.target_from_stack(session, "Imgpipe-nope")
