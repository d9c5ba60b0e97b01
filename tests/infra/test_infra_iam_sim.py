"""The IAM stand-in itself: AWS's documented evaluation rules on small policies."""

from __future__ import annotations

from typing import Any

import pytest

from infra.iam_sim import Request, TemplateResolver, UnsupportedPolicyError, evaluate

TOPIC = "arn:aws:sns:us-east-1:111122223333:t"
ALLOW_ALARMS: dict[str, Any] = {
    "Effect": "Allow",
    "Principal": {"Service": "cloudwatch.amazonaws.com"},
    "Action": "sns:Publish",
    "Resource": TOPIC,
    "Condition": {
        "StringEquals": {"aws:SourceAccount": "111122223333"},
        "ArnLike": {"aws:SourceArn": "arn:aws:cloudwatch:us-east-1:111122223333:alarm:*"},
    },
}
DENY_HTTP: dict[str, Any] = {
    "Effect": "Deny",
    "Principal": "*",
    "Action": "sns:Publish",
    "Resource": TOPIC,
    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
}


def _publish(**context: str) -> Request:
    return Request(
        action="sns:Publish",
        resource=TOPIC,
        principal={"Service": "cloudwatch.amazonaws.com"},
        context=context,
    )


def test_allow_needs_every_condition_and_an_explicit_deny_wins() -> None:
    ok = {
        "aws:SourceAccount": "111122223333",
        "aws:SourceArn": "arn:aws:cloudwatch:us-east-1:111122223333:alarm:a",
        "aws:SecureTransport": "true",
    }
    assert evaluate([ALLOW_ALARMS, DENY_HTTP], _publish(**ok)) == "Allow"
    insecure = ok | {"aws:SecureTransport": "false"}
    assert evaluate([ALLOW_ALARMS, DENY_HTTP], _publish(**insecure)) == "ExplicitDeny"
    other = ok | {"aws:SourceAccount": "999999999999"}
    assert evaluate([ALLOW_ALARMS], _publish(**other)) == "ImplicitDeny"
    missing = {k: v for k, v in ok.items() if k != "aws:SourceArn"}
    assert evaluate([ALLOW_ALARMS], _publish(**missing)) == "ImplicitDeny"
    assert evaluate([], _publish(**ok)) == "ImplicitDeny"


def test_arn_like_matches_segment_by_segment() -> None:
    # The account segment may not be matched by a wildcard in another segment.
    arn = "arn:aws:cloudwatch:us-east-1:999999999999:alarm:111122223333"
    context = {"aws:SourceAccount": "111122223333", "aws:SourceArn": arn}
    assert evaluate([ALLOW_ALARMS], _publish(**context)) == "ImplicitDeny"


def test_actions_match_case_insensitively_and_with_wildcards() -> None:
    statement = {"Effect": "Allow", "Action": "dynamodb:Get*", "Resource": "*"}
    assert evaluate([statement], Request(action="dynamodb:getitem", resource="x")) == "Allow"
    assert evaluate([statement], Request(action="dynamodb:PutItem", resource="x")) == (
        "ImplicitDeny"
    )


def test_what_it_does_not_implement_is_refused_not_guessed() -> None:
    statement = {"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"}
    with pytest.raises(UnsupportedPolicyError, match="NotAction"):
        evaluate([statement], Request(action="sqs:SendMessage", resource="x"))
    condition = {
        "Effect": "Allow",
        "Action": "*",
        "Resource": "*",
        "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}},
    }
    with pytest.raises(UnsupportedPolicyError, match="DateGreaterThan"):
        evaluate([condition], Request(action="sqs:SendMessage", resource="x"))


def test_references_resolve_to_the_names_aws_gives() -> None:
    template = {
        "Resources": {
            "Q": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "q1"}},
            "B": {"Type": "AWS::S3::Bucket", "Properties": {}},
        }
    }
    resolver = TemplateResolver(template, "111122223333", "eu-west-1")
    assert resolver.resolve({"Fn::GetAtt": ["Q", "Arn"]}) == "arn:aws:sqs:eu-west-1:111122223333:q1"
    assert resolver.resolve({"Ref": "Q"}) == "https://sqs.eu-west-1.amazonaws.com/111122223333/q1"
    joined = {"Fn::Join": ["", [{"Fn::GetAtt": ["B", "Arn"]}, "/uploads/*"]]}
    assert resolver.resolve(joined) == "arn:aws:s3:::B/uploads/*"
    assert resolver.resolve({"Fn::Sub": "arn:${AWS::Partition}:x:${AWS::Region}"}) == (
        "arn:aws:x:eu-west-1"
    )
