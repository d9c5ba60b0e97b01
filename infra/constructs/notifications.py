"""Notifications: the KMS-encrypted SNS topic, with email and HTTPS webhook subscriptions."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.config import StageConfig
from infra.naming import ResourceNames


class Notifications(Construct):
    """One message per finished or failed run (from the worker) and every alarm transition.

    The topic is encrypted with a customer-managed key (rotated yearly) whose policy lets
    CloudWatch alarms publish. Subscriptions come from ``-c notify_email=...`` and
    ``-c notify_webhook=https://...``; an email subscription must be confirmed from the inbox.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, names: ResourceNames
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description=f"Encrypts the {names.topic} SNS topic",
            enable_key_rotation=True,
            removal_policy=(
                RemovalPolicy.DESTROY if config.destroy_on_removal else RemovalPolicy.RETAIN
            ),
        )
        # CloudWatch alarm actions publish to the topic, so CloudWatch must use the key.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],
            )
        )
        self.topic = sns.Topic(
            self,
            "Topic",
            topic_name=names.topic,
            display_name="imgpipe run notifications",
            master_key=self.key,
            enforce_ssl=True,
        )
        if config.notify_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.notify_email))
        if config.notify_webhook:
            self.topic.add_subscription(
                subscriptions.UrlSubscription(
                    config.notify_webhook, protocol=sns.SubscriptionProtocol.HTTPS
                )
            )
