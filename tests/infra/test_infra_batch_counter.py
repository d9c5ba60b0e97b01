"""Batch counter: the Lambda, its table, the runs queue and the Lambda's permissions."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from infra.app import build_app
from infra.config import StageConfig
from infra.constructs.batch_counter import HANDLER
from infra.naming import resource_names

NAMES = resource_names(stage="dev", account="123456789012", region="us-east-1")


@pytest.fixture(scope="module")
def function(dev: Any) -> dict[str, Any]:
    found = {
        logical_id: resource["Properties"]
        for logical_id, resource in dev.resources("AWS::Lambda::Function").items()
        if resource["Properties"].get("Handler") == HANDLER
    }
    assert len(found) == 1, sorted(found)
    return next(iter(found.values()))


def _logical_id(synth: Any, type_name: str, props: dict[str, Any]) -> str:
    found = synth.template.find_resources(type_name, {"Properties": props})
    assert len(found) == 1, sorted(found)
    return str(next(iter(found)))


def test_lambda_runs_the_handler_on_python_313_with_the_powertools_layer(
    dev: Any, function: dict[str, Any]
) -> None:
    assert function["Runtime"] == "python3.13"
    assert function["Handler"] == "batch_counter.handler.lambda_handler"
    assert function["Architectures"] == ["x86_64"]
    (layer,) = function["Layers"]
    # Resolved at deploy time from the public SSM parameter of the pinned Powertools release.
    parameters = dev.raw["Parameters"]
    assert parameters[layer["Ref"]] == {
        "Type": "AWS::SSM::Parameter::Value<String>",
        "Default": "/aws/service/powertools/python/x86_64/python3.13/3.37.0",
    }


def test_powertools_layer_release_matches_the_pinned_lambda_extra() -> None:
    pyproject = tomllib.loads(
        (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    )
    pins = dict(
        line.split("==") for line in pyproject["project"]["optional-dependencies"]["lambda"]
    )
    assert StageConfig(stage="dev").powertools_version == pins["aws-lambda-powertools"]


def test_lambda_environment_is_the_contract(dev: Any, function: dict[str, Any]) -> None:
    table_id = _logical_id(dev, "AWS::DynamoDB::Table", {"TableName": NAMES.tracking_table})
    queue_id = _logical_id(dev, "AWS::SQS::Queue", {"QueueName": NAMES.runs_queue})
    role_id = _logical_id(dev, "AWS::IAM::Role", {"RoleName": NAMES.scheduler_role})
    (topic_id,) = dev.resources("AWS::SNS::Topic")
    assert function["Environment"]["Variables"] == {
        "TRACKING_TABLE_NAME": {"Ref": table_id},
        "RUNS_QUEUE_URL": {"Ref": queue_id},
        "IMAGES_PER_BATCH": "20",
        "BATCHES_PER_RUN": "5",
        "SHARD_IMAGES": "5000",
        "RUN_TIMEOUT": "3600",
        "SCHEDULE_GROUP_NAME": NAMES.schedule_group,
        "SCHEDULER_ROLE_ARN": {"Fn::GetAtt": [role_id, "Arn"]},
        "NOTIFICATIONS_TOPIC_ARN": {"Ref": topic_id},
        "POWERTOOLS_SERVICE_NAME": "batch-counter",
        "POWERTOOLS_METRICS_NAMESPACE": "ImagePipeline",
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }


def test_run_shape_is_configurable_from_context(tmp_path: Path) -> None:
    _, stack = build_app(
        {"stage": "dev", "images_per_batch": "7", "batches_per_run": "3"},
        outdir=str(tmp_path),
        nag=False,
    )
    Template.from_stack(stack).has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": HANDLER,
            "Environment": {
                "Variables": Match.object_like({"IMAGES_PER_BATCH": "7", "BATCHES_PER_RUN": "3"})
            },
        },
    )


def test_lambda_consumes_the_ingest_queue_reporting_partial_failures(dev: Any) -> None:
    ingest_id = _logical_id(dev, "AWS::SQS::Queue", {"QueueName": NAMES.ingest_queue})
    dev.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": {"Fn::GetAtt": [ingest_id, "Arn"]},
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "BatchSize": 10,
        },
    )


def test_tracking_table_is_on_demand_with_point_in_time_recovery(dev: Any) -> None:
    dev.template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "TableName": NAMES.tracking_table,
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True},
            "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
        },
    )


def test_runs_queue_outlasts_a_run_and_dead_letters_after_three_receives(dev: Any) -> None:
    dlq_id = _logical_id(dev, "AWS::SQS::Queue", {"QueueName": NAMES.runs_dlq})
    dev.template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "QueueName": NAMES.runs_queue,
            "VisibilityTimeout": 900,
            "RedrivePolicy": {
                "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
                "maxReceiveCount": 8,
            },
        },
    )


def test_lambda_role_has_only_its_table_queues_and_log_group(
    dev: Any, function: dict[str, Any]
) -> None:
    role_id = function["Role"]["Fn::GetAtt"][0]
    role = dev.raw["Resources"][role_id]["Properties"]
    assert "ManagedPolicyArns" not in role
    policies = [
        p["Properties"]
        for p in dev.resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in p["Properties"]["Roles"]
    ]
    (policy,) = policies
    actions = {
        action
        for statement in policy["PolicyDocument"]["Statement"]
        for action in (
            [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        )
    }
    # The DynamoDB actions are derived from the code in test_infra_least_privilege.
    assert actions >= {
        "sqs:SendMessage",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }
    assert not any(a.endswith("*") for a in actions), sorted(actions)
    for statement in policy["PolicyDocument"]["Statement"]:
        assert statement["Resource"] != "*", statement


def test_run_checks_have_their_group_and_a_role_that_may_only_invoke_the_counter(
    dev: Any, function: dict[str, Any]
) -> None:
    (group,) = dev.resources("AWS::Scheduler::ScheduleGroup").values()
    assert group["Properties"]["Name"] == NAMES.schedule_group
    role_id = _logical_id(dev, "AWS::IAM::Role", {"RoleName": NAMES.scheduler_role})
    role = dev.raw["Resources"][role_id]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": "123456789012"}
    (policy,) = [
        p["Properties"]
        for p in dev.resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in p["Properties"]["Roles"]
    ]
    (statement,) = policy["PolicyDocument"]["Statement"]
    (function_id,) = [
        logical_id
        for logical_id, r in dev.resources("AWS::Lambda::Function").items()
        if r["Properties"].get("Handler") == HANDLER
    ]
    assert statement["Action"] == "lambda:InvokeFunction"
    assert statement["Resource"] == {"Fn::GetAtt": [function_id, "Arn"]}
    # The counter's own timeout is the stage's.
    assert function["Environment"]["Variables"]["RUN_TIMEOUT"] == str(
        StageConfig(stage="dev").incomplete_run_timeout_seconds
    )


def test_a_run_timeout_beyond_seven_days_is_refused() -> None:
    with pytest.raises(ValueError, match="incomplete_run_timeout_seconds must be <= 604800"):
        StageConfig(stage="dev", incomplete_run_timeout_seconds=8 * 24 * 3600)


def test_lambda_asset_holds_the_package_without_caches(dev: Any) -> None:
    assets = [p for p in dev.outdir.glob("asset.*") if (p / "batch_counter").is_dir()]
    assert assets, "no Lambda asset with batch_counter/ in the cloud assembly"
    for asset in assets:
        files = {str(p.relative_to(asset)) for p in asset.rglob("*") if p.is_file()}
        assert "batch_counter/handler.py" in files
        assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
        assert {f.split("/")[0] for f in files} == {"batch_counter"}


def test_every_dlq_outlives_its_source_queue(dev: Any) -> None:
    """A standard queue's DLQ keeps a message only for what is left of its retention, counted
    from the first enqueue: a DLQ must keep messages longer than its source does."""
    queues = dev.resources("AWS::SQS::Queue")
    sources = {
        logical_id: q["Properties"]
        for logical_id, q in queues.items()
        if "RedrivePolicy" in q["Properties"]
    }
    assert len(sources) == 2
    for logical_id, source in sources.items():
        dlq_id = source["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        dlq = queues[dlq_id]["Properties"]
        assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600, dlq_id
        assert source["MessageRetentionPeriod"] == 4 * 24 * 3600, logical_id
