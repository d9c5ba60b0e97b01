"""Notifications: a KMS-encrypted topic with the subscriptions given as context."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match

from infra.iam_sim import Request, TemplateResolver, evaluate
from infra.naming import resource_names

NOTIFY_EMAIL = "ops@example.com"
NOTIFY_WEBHOOK = "https://hooks.example.com/imgpipe"
PROD_ACCOUNT = "210987654321"


def test_topic_is_encrypted_with_a_rotated_customer_key(dev: Any) -> None:
    (topic,) = dev.resources("AWS::SNS::Topic").values()
    key_ref = topic["Properties"]["KmsMasterKeyId"]
    key = dev.raw["Resources"][key_ref["Fn::GetAtt"][0]]
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"]["EnableKeyRotation"] is True
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    assert any(
        s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
        and set(s["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey"}
        for s in statements
    )


def test_topic_policy_denies_plain_http(dev: Any) -> None:
    dev.template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            }
        },
    )


def test_email_and_webhook_subscriptions_come_from_context(dev: Any, prod: Any) -> None:
    subscriptions = {
        (s["Properties"]["Protocol"], s["Properties"]["Endpoint"])
        for s in dev.resources("AWS::SNS::Subscription").values()
    }
    assert subscriptions == {("email", NOTIFY_EMAIL), ("https", NOTIFY_WEBHOOK)}
    prod.template.resource_count_is("AWS::SNS::Subscription", 0)


# --- who may publish: the resource policies, evaluated for requests shaped like AWS's ---------

STAGES = {"dev": ("123456789012", "us-east-1"), "prod": (PROD_ACCOUNT, "eu-west-1")}
OTHER_ACCOUNT = "999999999999"


def _resolver(synth: Any, stage: str) -> TemplateResolver:
    account, region = STAGES[stage]
    return TemplateResolver(synth.raw, account, region)


def _policy_statements(
    resolver: TemplateResolver, policy_type: str, target_key: str, target: dict[str, Any]
) -> list[dict[str, Any]]:
    found = [
        r["Properties"]["PolicyDocument"]["Statement"]
        for r in resolver.resources.values()
        if r["Type"] == policy_type and target in r["Properties"][target_key]
    ]
    assert len(found) == 1, found
    statements: list[dict[str, Any]] = resolver.resolve(found[0])
    return statements


def _from_service(
    service: str, action: str, resource: str, *, source_arn: str, account: str, tls: bool = True
) -> Request:
    return Request(
        action=action,
        resource=resource,
        principal={"Service": service},
        context={
            "aws:SourceArn": source_arn,
            "aws:SourceAccount": account,
            "aws:SecureTransport": "true" if tls else "false",
            "s3:TlsVersion": "1.3" if tls else "1.0",
        },
    )


def _in_account(arn: str, account: str) -> str:
    parts = arn.split(":")
    parts[4] = account
    return ":".join(parts)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_alarm_action_may_publish_to_the_topic_and_nothing_broader(
    stage: str, dev: Any, prod: Any
) -> None:
    synth = {"dev": dev, "prod": prod}[stage]
    resolver = _resolver(synth, stage)
    account = resolver.account
    ((topic_id, _),) = synth.resources("AWS::SNS::Topic").items()
    topic_arn = resolver.ref(topic_id)
    statements = _policy_statements(resolver, "AWS::SNS::TopicPolicy", "Topics", {"Ref": topic_id})
    alarms = [
        logical_id
        for logical_id, alarm in synth.resources("AWS::CloudWatch::Alarm").items()
        if {"Ref": topic_id}
        in alarm["Properties"].get("AlarmActions", []) + alarm["Properties"].get("OKActions", [])
    ]
    assert len(alarms) >= 5
    for alarm_id in alarms:
        alarm_arn = resolver.get_att(alarm_id, "Arn")

        def publish(alarm_arn: str = alarm_arn, **changes: Any) -> str:
            options = {"source_arn": alarm_arn, "account": account, "tls": True} | changes
            service = options.pop("service", "cloudwatch.amazonaws.com")
            return evaluate(statements, _from_service(service, "sns:Publish", topic_arn, **options))

        assert publish() == "Allow", alarm_id
        assert publish(tls=False) == "ExplicitDeny"
        # Over-broad statements fail here: another account's alarm, an alarm of this account
        # that is not in the stack, another service.
        other = _in_account(alarm_arn, OTHER_ACCOUNT)
        assert publish(source_arn=other, account=OTHER_ACCOUNT) == "ImplicitDeny"
        stranger = alarm_arn.rsplit(":", 1)[0] + ":someone-elses-alarm"
        assert publish(source_arn=stranger) == "ImplicitDeny"
        assert publish(service="events.amazonaws.com") == "ImplicitDeny"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_cloudwatch_may_use_the_topic_key_only_for_this_account(
    stage: str, dev: Any, prod: Any
) -> None:
    synth = {"dev": dev, "prod": prod}[stage]
    resolver = _resolver(synth, stage)
    ((key_id, key),) = synth.resources("AWS::KMS::Key").items()
    statements = resolver.resolve(key["Properties"]["KeyPolicy"]["Statement"])
    key_arn = resolver.get_att(key_id, "Arn")
    alarm = f"arn:aws:cloudwatch:{resolver.region}:{resolver.account}:alarm:any"
    for action in ("kms:GenerateDataKey", "kms:Decrypt"):
        ok = _from_service(
            "cloudwatch.amazonaws.com", action, key_arn, source_arn=alarm, account=resolver.account
        )
        assert evaluate(statements, ok) == "Allow"
        elsewhere = _from_service(
            "cloudwatch.amazonaws.com",
            action,
            key_arn,
            source_arn=_in_account(alarm, OTHER_ACCOUNT),
            account=OTHER_ACCOUNT,
        )
        assert evaluate(statements, elsewhere) == "ImplicitDeny"


def test_only_the_raw_bucket_of_this_account_may_notify_the_ingest_queue(dev: Any) -> None:
    resolver = _resolver(dev, "dev")
    names = resource_names(stage="dev", account=resolver.account, region=resolver.region)
    (queue_id,) = dev.template.find_resources(
        "AWS::SQS::Queue", {"Properties": {"QueueName": names.ingest_queue}}
    )
    (bucket_id,) = dev.template.find_resources(
        "AWS::S3::Bucket", {"Properties": {"BucketName": names.raw_bucket}}
    )
    statements = _policy_statements(resolver, "AWS::SQS::QueuePolicy", "Queues", {"Ref": queue_id})
    queue_arn = resolver.get_att(queue_id, "Arn")
    bucket_arn = resolver.get_att(bucket_id, "Arn")

    def send(source_arn: str, account: str, tls: bool = True) -> str:
        request = _from_service(
            "s3.amazonaws.com",
            "sqs:SendMessage",
            queue_arn,
            source_arn=source_arn,
            account=account,
            tls=tls,
        )
        return evaluate(statements, request)

    assert send(bucket_arn, resolver.account) == "Allow"
    assert send(bucket_arn, resolver.account, tls=False) == "ExplicitDeny"
    # The same bucket name re-created in another account, and another bucket of this account.
    assert send(bucket_arn, OTHER_ACCOUNT) == "ImplicitDeny"
    assert send("arn:aws:s3:::someone-elses-bucket", resolver.account) == "ImplicitDeny"


def test_server_access_logs_are_accepted_from_the_stacks_buckets_only(dev: Any) -> None:
    resolver = _resolver(dev, "dev")
    names = resource_names(stage="dev", account=resolver.account, region=resolver.region)
    buckets = {
        resource["Properties"].get("BucketName"): logical_id
        for logical_id, resource in dev.resources("AWS::S3::Bucket").items()
    }
    logs_id = buckets[None]  # the access log bucket has a generated name
    statements = resolver.resolve(
        next(
            r["Properties"]["PolicyDocument"]["Statement"]
            for r in dev.resources("AWS::S3::BucketPolicy").values()
            if r["Properties"]["Bucket"] == {"Ref": logs_id}
        )
    )
    logs_arn = resolver.get_att(logs_id, "Arn")
    for name, prefix in ((names.raw_bucket, "raw/"), (names.results_bucket, "results/")):
        source = resolver.get_att(buckets[name], "Arn")
        request = _from_service(
            "logging.s3.amazonaws.com",
            "s3:PutObject",
            f"{logs_arn}/{prefix}x.log",
            source_arn=source,
            account=resolver.account,
        )
        assert evaluate(statements, request) == "Allow"
        other = _from_service(
            "logging.s3.amazonaws.com",
            "s3:PutObject",
            f"{logs_arn}/{prefix}x.log",
            source_arn=source,
            account=OTHER_ACCOUNT,
        )
        assert evaluate(statements, other) == "ImplicitDeny"
