"""Worker: Fargate service scaling from zero on the runs queue, and a least-privilege task role."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.naming import resource_names

NAMES = resource_names(stage="dev", account="123456789012", region="us-east-1")


def _one(
    synth: Any, type_name: str, props: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    found = synth.template.find_resources(type_name, {"Properties": props} if props else None)
    assert len(found) == 1, sorted(found)
    ((logical_id, resource),) = found.items()
    return logical_id, dict(resource["Properties"])


@pytest.fixture(scope="module")
def container(dev: Any) -> dict[str, Any]:
    _, task = _one(dev, "AWS::ECS::TaskDefinition")
    (definition,) = [c for c in task["ContainerDefinitions"] if c["Name"] == "worker"]
    return dict(definition)


def test_container_environment_is_the_contract(dev: Any, container: dict[str, Any]) -> None:
    env = {item["Name"]: item["Value"] for item in container["Environment"]}
    runs_id, _ = _one(dev, "AWS::SQS::Queue", {"QueueName": NAMES.runs_queue})
    table_id, _ = _one(dev, "AWS::DynamoDB::Table", {"TableName": NAMES.tracking_table})
    topic_id, _ = _one(dev, "AWS::SNS::Topic")
    secret_id, _ = _one(
        dev,
        "AWS::SecretsManager::SecretTargetAttachment",
        {
            "SecretId": {
                "Ref": _one(dev, "AWS::SecretsManager::Secret", {"Name": NAMES.db_app_secret})[0]
            }
        },
    )
    raw_id, _ = _one(dev, "AWS::S3::Bucket", {"BucketName": NAMES.raw_bucket})
    results_id, _ = _one(dev, "AWS::S3::Bucket", {"BucketName": NAMES.results_bucket})
    assert env == {
        "RUNS_QUEUE_URL": {"Ref": runs_id},
        "RAW_BUCKET": {"Ref": raw_id},
        "RESULTS_BUCKET": {"Ref": results_id},
        "NOTIFICATIONS_TOPIC_ARN": {"Ref": topic_id},
        "TRACKING_TABLE_NAME": {"Ref": table_id},
        "DB_SECRET_ARN": {"Ref": secret_id},
        "DOWNLOAD_CONCURRENCY": "16",
        "VISIBILITY_TIMEOUT_SECONDS": "900",
        "LOG_LEVEL": "INFO",
    }
    assert "Secrets" not in container  # the worker reads the secret itself, per connection


def test_container_image_is_built_from_the_repository_root(
    dev: Any, container: dict[str, Any]
) -> None:
    assert container["StopTimeout"] == 120
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    assets = [p for p in dev.outdir.glob("asset.*") if (p / "container" / "Dockerfile").is_file()]
    assert len(assets) == 1
    files = {str(p.relative_to(assets[0])) for p in assets[0].rglob("*") if p.is_file()}
    assert {
        "container/Dockerfile",
        "container/requirements.txt",
        "container/batch_stats/worker/__main__.py",
        "container/batch_stats/jobs/mosaic.py",
        "number_generator/data/t10k-images-idx3-ubyte.gz",
        "photo_mosaic/index.py",
    } <= files
    # The root .dockerignore keeps the context small: the three packages and the requirements,
    # without the local mode (moto, pgserver), tests, infra, node_modules, docs or caches.
    tops = {f.split("/")[0] for f in files}
    assert tops == {".dockerignore", "container", "number_generator", "photo_mosaic"}
    assert not [f for f in files if f.startswith("container/batch_stats/local/")]
    assert not [f for f in files if "__pycache__" in f or f.startswith("number_generator/docs/")]
    assert sum((assets[0] / f).stat().st_size for f in files) < 5_000_000
    (assets_file,) = dev.outdir.glob("*.assets.json")
    (image,) = json.loads(assets_file.read_text())["dockerImages"].values()
    assert image["source"]["dockerFile"] == "container/Dockerfile"


def test_service_idles_at_zero_tasks_in_public_subnets_without_inbound_rules(dev: Any) -> None:
    _, service = _one(dev, "AWS::ECS::Service")
    assert service["DesiredCount"] == 0
    assert service["LaunchType"] == "FARGATE"
    network = service["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "ENABLED"
    (sg_ref,) = network["SecurityGroups"]
    sg = dev.raw["Resources"][sg_ref["Fn::GetAtt"][0]]["Properties"]
    assert "SecurityGroupIngress" not in sg
    ingress_to_worker = [
        rule
        for rule in dev.resources("AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"] == sg_ref
    ]
    assert ingress_to_worker == []


def test_task_scratch_disk_holds_a_large_mosaic_jobs_tiles(dev: Any) -> None:
    # A mosaic job keeps its downloaded tiles on the task's disk (100,000 tiles of 150 KB:
    # 15 GB); Fargate's default is 20 GiB including the image.
    _, task = _one(dev, "AWS::ECS::TaskDefinition")
    assert task["EphemeralStorage"] == {"SizeInGiB": 50}


def test_prod_runs_workers_in_private_subnets_behind_one_nat(prod: Any) -> None:
    _, service = _one(prod, "AWS::ECS::Service")
    assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
    prod.template.resource_count_is("AWS::EC2::NatGateway", 1)


def test_scaling_policies_count_runs_waiting_or_in_progress(dev: Any) -> None:
    """The shape of the policies; their behaviour is simulated in test_infra_scaling."""
    _, target = _one(dev, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 2)
    policies = dev.resources("AWS::ApplicationAutoScaling::ScalingPolicy")
    assert len(policies) == 2  # no CPU target-tracking policy
    types = sorted(
        p["Properties"]["StepScalingPolicyConfiguration"]["AdjustmentType"]
        for p in policies.values()
    )
    assert types == ["ChangeInCapacity", "ExactCapacity"]
    alarms = [
        a["Properties"]
        for a in dev.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"]["AlarmActions"][0].get("Ref") in policies
    ]
    assert len(alarms) == 2
    for alarm in alarms:
        expression = next(m for m in alarm["Metrics"] if "Expression" in m)
        assert expression["Expression"] == "FILL(visible, 0) + FILL(inflight, 0)"
        metric_names = {
            m["Id"]: m["MetricStat"]["Metric"]["MetricName"]
            for m in alarm["Metrics"]
            if "MetricStat" in m
        }
        assert metric_names == {
            "visible": "ApproximateNumberOfMessagesVisible",
            "inflight": "ApproximateNumberOfMessagesNotVisible",
        }


def _task_role_statements(synth: Any) -> list[dict[str, Any]]:
    _, task = _one(synth, "AWS::ECS::TaskDefinition")
    role_id = task["TaskRoleArn"]["Fn::GetAtt"][0]
    policies = [
        p["Properties"]
        for p in synth.resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in p["Properties"]["Roles"]
    ]
    assert len(policies) == 1
    assert "ManagedPolicyArns" not in synth.raw["Resources"][role_id]["Properties"]
    return list(policies[0]["PolicyDocument"]["Statement"])


def _actions(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def _unordered(resources: list[Any]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in resources)


def test_task_role_is_least_privilege(dev: Any) -> None:
    statements = {s.get("Sid", ""): s for s in _task_role_statements(dev)}
    raw_id, _ = _one(dev, "AWS::S3::Bucket", {"BucketName": NAMES.raw_bucket})
    results_id, _ = _one(dev, "AWS::S3::Bucket", {"BucketName": NAMES.results_bucket})

    def objects(bucket_id: str, prefix: str) -> dict[str, Any]:
        return {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, f"/{prefix}*"]]}

    assert _actions(statements["ReadUploads"]) == {"s3:GetObject"}
    assert statements["ReadUploads"]["Resource"] == objects(raw_id, "uploads/")
    # The last shard of a run merges the shards' Parquet parts.
    assert _actions(statements["ReadResultParts"]) == {"s3:GetObject"}
    assert statements["ReadResultParts"]["Resource"] == objects(results_id, "results/")
    # Runs by reference: the run item and its objects are read from the tracking table.
    table_id, _ = _one(dev, "AWS::DynamoDB::Table", {"TableName": NAMES.tracking_table})
    assert _actions(statements["ReadRunTracking"]) == {"dynamodb:GetItem", "dynamodb:Query"}
    assert statements["ReadRunTracking"]["Resource"] == {"Fn::GetAtt": [table_id, "Arn"]}
    assert _actions(statements["WriteRejectedAndResults"]) == {
        "s3:PutObject",
        "s3:AbortMultipartUpload",
    }
    assert statements["WriteRejectedAndResults"]["Resource"] == [
        objects(raw_id, "rejected/"),
        objects(results_id, "results/"),
    ]
    assert statements["ListUploads"]["Condition"] == {"StringLike": {"s3:prefix": ["uploads/*"]}}
    # Jobs: documents and inputs are read from the raw bucket, inputs listed by prefix only;
    # outputs and caches written under their prefixes of the results bucket; shard messages
    # sent to the runs queue.
    assert _actions(statements["ReadJobDocumentsAndInputs"]) == {"s3:GetObject"}
    assert _unordered(statements["ReadJobDocumentsAndInputs"]["Resource"]) == _unordered(
        [objects(raw_id, "jobs/"), objects(raw_id, "inputs/")]
    )
    assert statements["ListJobInputs"]["Condition"] == {"StringLike": {"s3:prefix": ["inputs/*"]}}
    job_outputs = [objects(results_id, p) for p in ("datasets/", "mosaics/", "cache/", "jobs/")]
    assert _actions(statements["WriteJobOutputs"]) == {"s3:PutObject", "s3:AbortMultipartUpload"}
    assert _unordered(statements["WriteJobOutputs"]["Resource"]) == _unordered(job_outputs)
    assert _unordered(statements["ReadJobOutputsAndCaches"]["Resource"]) == _unordered(job_outputs)
    assert statements["ListJobOutputs"]["Condition"] == {
        "StringLike": {"s3:prefix": ["results/*", "datasets/*", "mosaics/*", "cache/*", "jobs/*"]}
    }
    runs_id, _ = _one(dev, "AWS::SQS::Queue", {"QueueName": NAMES.runs_queue})
    assert _actions(statements["SendJobShards"]) == {"sqs:SendMessage"}
    assert statements["SendJobShards"]["Resource"] == {"Fn::GetAtt": [runs_id, "Arn"]}
    assert _actions(statements["PublishRunNotifications"]) == {"sns:Publish"}
    assert _actions(statements["EncryptForTheTopic"]) == {"kms:Decrypt", "kms:GenerateDataKey"}

    every = _task_role_statements(dev)
    all_actions = set().union(*(_actions(s) for s in every))
    assert {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "secretsmanager:GetSecretValue",
    } <= all_actions
    # Nothing else: no wildcard actions, no '*' resources, no DynamoDB writes, no bucket-wide
    # writes.
    assert not [a for a in all_actions if a.endswith("*")]
    assert {a for a in all_actions if a.startswith("dynamodb:")} == {
        "dynamodb:GetItem",
        "dynamodb:Query",
    }
    assert not [s for s in every if s["Resource"] == "*"]
    assert all(s["Effect"] == "Allow" for s in every)
