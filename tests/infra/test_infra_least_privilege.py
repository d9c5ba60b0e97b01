"""Least privilege, derived from the code: the batch counter's role allows exactly the DynamoDB
actions its handler performs under the Lambda flow tests, and every call it makes is allowed.

The flow tests run in a subprocess with a plugin that records each boto3 operation made below
the handler module (the Lambda's entry point); the synthesized policy is then evaluated for
each recorded request by :mod:`infra.iam_sim`. When the counter's calls change, the expected
actions change with them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from batch_counter import handler

from infra.iam_sim import Request, TemplateResolver, evaluate, identity_statements
from infra.naming import PROJECT

ROOT = Path(__file__).resolve().parents[2]
#: The Lambda's tests: every call the handler makes under them is recorded.
LAMBDA_TESTS = ROOT / "tests" / "lambdas" / "batch_counter"
PLUGINS = Path(__file__).resolve().parent / "plugins"
ACCOUNT, REGION = "123456789012", "us-east-1"

pytestmark = pytest.mark.slow

#: Items of a DynamoDB transaction and the IAM action each one needs (the transaction itself
#: is not an IAM action).
_TRANSACT_ITEMS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}


#: S3 operations on one object and the IAM action each needs.
_S3_OBJECT_ACTIONS = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "DeleteObject": "s3:DeleteObject",
}


def iam_actions(call: dict[str, Any]) -> list[tuple[str, str]]:
    """(IAM action, resource name) pairs one recorded call needs."""
    service, operation, params = call["service"], call["operation"], call["params"]
    if service == "dynamodb" and operation in ("TransactWriteItems", "TransactGetItems"):
        needed = []
        for item in params["TransactItems"]:
            ((kind, body),) = item.items()
            needed.append((f"dynamodb:{_TRANSACT_ITEMS[kind]}", body["TableName"]))
        return needed
    if service == "dynamodb":
        return [(f"dynamodb:{operation}", params["TableName"])]
    if service == "sqs":
        return [(f"sqs:{operation}", params["QueueUrl"].rsplit("/", 1)[1])]
    if service == "s3" and operation == "CopyObject":
        source = params["CopySource"]
        return [
            ("s3:GetObject", f"{source['Bucket']}/{source['Key']}"),
            ("s3:PutObject", f"{params['Bucket']}/{params['Key']}"),
        ]
    if service == "s3" and operation in _S3_OBJECT_ACTIONS:
        return [(_S3_OBJECT_ACTIONS[operation], f"{params['Bucket']}/{params['Key']}")]
    if service == "scheduler" and operation == "CreateSchedule":
        # Creating a schedule with a target role passes that role to Scheduler.
        return [
            ("scheduler:CreateSchedule", f"{params['GroupName']}/{params['Name']}"),
            ("iam:PassRole", params["Target"]["RoleArn"].rsplit("/", 1)[1]),
        ]
    if service == "sns" and operation == "Publish":
        # The topic is encrypted with a customer managed key: publishing uses it.
        topic = params["TopicArn"].rsplit(":", 1)[1]
        return [("sns:Publish", topic), ("kms:GenerateDataKey", topic), ("kms:Decrypt", topic)]
    raise AssertionError(
        f"the handler called {service}:{operation}: add its IAM action(s) to iam_actions()"
    )


@pytest.fixture(scope="module")
def handler_calls(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("calls") / "calls.jsonl"
    env = dict(os.environ)
    env.update(
        AWS_CALLS_OUT=str(out),
        AWS_CALLS_INSIDE=str(handler.__file__),
        PYTHONPATH=os.pathsep.join(filter(None, [str(PLUGINS), env.get("PYTHONPATH", "")])),
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "aws_call_recorder",
            str(LAMBDA_TESTS),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    calls = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert calls, "the flow tests made no AWS call through the handler"
    return calls


def _template_name(local_name: str) -> str | None:
    """``imgpipe-bc3-tracking`` (a test's stage) -> ``imgpipe-dev-tracking``; None for a
    resource that is not the pipeline's (a test pointing the handler at a missing table)."""
    parts = local_name.split("-", 2)
    if len(parts) < 3 or parts[0] != PROJECT:
        return None
    return f"{PROJECT}-dev-{parts[2]}"


def _lambda_role(dev: Any) -> str:
    (function,) = [
        f["Properties"]
        for f in dev.resources("AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == "batch_counter.handler.lambda_handler"
    ]
    return str(function["Role"]["Fn::GetAtt"][0])


def _arn_of(resolver: TemplateResolver, service: str, name: str) -> str:
    if service == "s3":
        bucket, _, key = name.partition("/")
        return f"{_arn_of(resolver, 's3-bucket', bucket)}/{key}"
    if service == "scheduler":
        return f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/{name}"
    if service == "kms":  # the key of the topic ``name``
        for logical_id, resource in resolver.resources.items():
            if resource["Type"] == "AWS::SNS::Topic" and resolver.physical_name(logical_id) == name:
                return str(resolver.resolve(resource["Properties"]["KmsMasterKeyId"]))
        raise AssertionError(f"no topic named {name} in the template")
    if service == "sns":
        for logical_id, resource in resolver.resources.items():
            if resource["Type"] == "AWS::SNS::Topic" and resolver.physical_name(logical_id) == name:
                return resolver.ref(logical_id)
        raise AssertionError(f"no topic named {name} in the template")
    type_name = {
        "dynamodb": "AWS::DynamoDB::Table",
        "sqs": "AWS::SQS::Queue",
        "s3-bucket": "AWS::S3::Bucket",
        "iam": "AWS::IAM::Role",
    }[service]
    for logical_id, resource in resolver.resources.items():
        if resource["Type"] == type_name and resolver.physical_name(logical_id) == name:
            return resolver.get_att(logical_id, "Arn")
    raise AssertionError(f"no {type_name} named {name} in the template")


def test_every_call_the_counter_makes_is_allowed_and_nothing_more(
    dev: Any, handler_calls: list[dict[str, Any]]
) -> None:
    resolver = TemplateResolver(dev.raw, ACCOUNT, REGION)
    statements = identity_statements(resolver, _lambda_role(dev))
    needed = {
        (action, _arn_of(resolver, action.split(":")[0], template_name))
        for call in handler_calls
        for action, name in iam_actions(call)
        if (template_name := _template_name(name)) is not None
    }
    # A role passed by CreateSchedule is passed to Scheduler.
    passed_to = {"iam:PassedToService": "scheduler.amazonaws.com"}
    denied = [
        (action, arn)
        for action, arn in sorted(needed)
        if evaluate(
            statements,
            Request(
                action=action, resource=arn, context=passed_to if action == "iam:PassRole" else {}
            ),
        )
        != "Allow"
    ]
    # The check schedules and their notification are among the recorded calls.
    assert {"scheduler:CreateSchedule", "iam:PassRole", "sns:Publish"} <= {a for a, _ in needed}
    assert denied == [], f"calls the code makes but the role does not allow: {denied}"

    # Nothing else on the table: every DynamoDB action the role allows is one the code uses.
    table_arn = _arn_of(resolver, "dynamodb", f"{PROJECT}-dev-tracking")
    used = {action for action, arn in needed if arn == table_arn}
    allowed_on_table = {
        action
        for statement in statements
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        if action.startswith("dynamodb:")
    }
    assert allowed_on_table == used
    for statement in statements:
        if any(str(a).startswith("dynamodb:") for a in statement["Action"]):
            assert statement["Resource"] == table_arn, statement  # not the whole account


def test_the_counter_passes_only_the_scheduler_role_and_only_to_scheduler(dev: Any) -> None:
    resolver = TemplateResolver(dev.raw, ACCOUNT, REGION)
    statements = identity_statements(resolver, _lambda_role(dev))
    role_arn = _arn_of(resolver, "iam", f"{PROJECT}-dev-run-checks-scheduler")
    own_role = resolver.get_att(_lambda_role(dev), "Arn")
    to_scheduler = {"iam:PassedToService": "scheduler.amazonaws.com"}
    assert evaluate(statements, Request("iam:PassRole", role_arn, context=to_scheduler)) == "Allow"
    assert (
        evaluate(
            statements,
            Request("iam:PassRole", role_arn, context={"iam:PassedToService": "ec2.amazonaws.com"}),
        )
        == "ImplicitDeny"
    )
    assert evaluate(statements, Request("iam:PassRole", own_role, context=to_scheduler)) == (
        "ImplicitDeny"
    )
    other_group = f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/default/x"
    assert evaluate(statements, Request("scheduler:CreateSchedule", other_group)) == "ImplicitDeny"
    for action in ("scheduler:DeleteSchedule", "scheduler:UpdateSchedule"):
        own_group = f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/{PROJECT}-dev-run-checks/x"
        assert evaluate(statements, Request(action, own_group)) == "ImplicitDeny"


@pytest.mark.parametrize(
    "action",
    ["dynamodb:Scan", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:DeleteTable"],
)
def test_the_counter_cannot_scan_or_delete(dev: Any, action: str) -> None:
    resolver = TemplateResolver(dev.raw, ACCOUNT, REGION)
    statements = identity_statements(resolver, _lambda_role(dev))
    table_arn = _arn_of(resolver, "dynamodb", f"{PROJECT}-dev-tracking")
    assert evaluate(statements, Request(action=action, resource=table_arn)) == "ImplicitDeny"
