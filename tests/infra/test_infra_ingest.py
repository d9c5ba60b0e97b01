"""Ingest: the S3 notification covers uploads/ only and feeds an encrypted queue with a DLQ."""

from __future__ import annotations

import json
from typing import Any

from infra.naming import resource_names


def _queue(synth: Any, name: str) -> tuple[str, dict[str, Any]]:
    found = synth.template.find_resources("AWS::SQS::Queue", {"Properties": {"QueueName": name}})
    assert len(found) == 1, f"expected one queue named {name}, found {sorted(found)}"
    ((logical_id, queue),) = found.items()
    return logical_id, dict(queue["Properties"])


def test_raw_bucket_notifies_the_ingest_queue_for_uploads_and_job_documents_only(
    dev: Any,
) -> None:
    names = resource_names(stage="dev", account="123456789012", region="us-east-1")
    ingest_id, _ = _queue(dev, names.ingest_queue)
    (notification,) = dev.resources("Custom::S3BucketNotifications").values()
    config = notification["Properties"]["NotificationConfiguration"]
    assert set(config) == {"QueueConfigurations"}
    configs = config["QueueConfigurations"]
    assert [c["Filter"] for c in configs] == [
        {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
        for prefix in ("uploads/", "jobs/")
    ]
    for queue_config in configs:
        assert queue_config["Events"] == ["s3:ObjectCreated:*"]
        assert queue_config["QueueArn"] == {"Fn::GetAtt": [ingest_id, "Arn"]}


def test_ingest_queue_has_a_dlq_after_five_receives(dev: Any) -> None:
    names = resource_names(stage="dev", account="123456789012", region="us-east-1")
    dlq_id, dlq = _queue(dev, names.ingest_dlq)
    _, queue = _queue(dev, names.ingest_queue)
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": 5,
    }
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    # Six times the Lambda timeout, as AWS recommends for SQS event sources.
    lambdas = [
        f["Properties"]
        for f in dev.resources("AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == "batch_counter.handler.lambda_handler"
    ]
    assert queue["VisibilityTimeout"] == 6 * lambdas[0]["Timeout"]


def test_every_queue_is_encrypted_and_ssl_only(dev: Any) -> None:
    queues = dev.resources("AWS::SQS::Queue")
    assert len(queues) == 4
    for logical_id, queue in queues.items():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True, logical_id
    denied: set[str] = set()
    for policy in dev.resources("AWS::SQS::QueuePolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Deny" and statement.get("Condition") == {
                "Bool": {"aws:SecureTransport": "false"}
            }:
                denied.update(ref["Ref"] for ref in policy["Properties"]["Queues"])
    assert denied == set(queues), json.dumps(sorted(denied))
