"""Notifications: a KMS-encrypted topic with the subscriptions given as context."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match

NOTIFY_EMAIL = "ops@example.com"
NOTIFY_WEBHOOK = "https://hooks.example.com/imgpipe"


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
