"""Notifications: the KMS-encrypted SNS topic, with email and HTTPS webhook subscriptions."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.config import StageConfig
from infra.naming import ResourceNames

CLOUDWATCH = "cloudwatch.amazonaws.com"


class Notifications(Construct):
    """One message per finished or failed run (from the worker) and every alarm transition.

    The topic is encrypted with a customer-managed key (rotated yearly) whose policy lets
    CloudWatch, acting for this account, use it. ``enforce_ssl`` gives the topic a policy, which
    replaces SNS's default one: every service that publishes must be allowed in it
    (:meth:`allow_alarms`). Subscriptions come from ``-c notify_email=...`` and
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
        # CloudWatch alarm actions publish to the topic, so CloudWatch must use the key; only
        # on behalf of this account (no confused deputy).
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublish",
                principals=[iam.ServicePrincipal(CLOUDWATCH)],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
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

    def allow_alarms(self, alarm_arns: list[str]) -> None:
        """Let CloudWatch publish to the topic for exactly these alarms of this account.

        Without it the alarms' actions fail ("not authorized to perform: SNS:Publish"): the
        topic's policy replaced the default one that allowed the account's principals.
        """
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowThisStacksAlarmsToPublish",
                principals=[iam.ServicePrincipal(CLOUDWATCH)],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": Stack.of(self).account},
                    "ArnLike": {"aws:SourceArn": alarm_arns},
                },
            )
        )
