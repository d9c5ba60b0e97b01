"""The one stack: every component of the pipeline, wired together."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, CfnResource, Environment, RemovalPolicy, Stack, Tags
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import StageConfig
from infra.constructs._common import acknowledge, log_retention
from infra.constructs.batch_counter import BatchCounter
from infra.constructs.database import Database
from infra.constructs.ingest import Ingest
from infra.constructs.monitoring import Monitoring
from infra.constructs.network import Network
from infra.constructs.notifications import Notifications
from infra.constructs.storage import Storage
from infra.constructs.worker import Worker
from infra.naming import PROJECT, resource_names


class PipelineStack(Stack):
    """S3 uploads -> ingest queue -> batch_counter Lambda -> runs queue -> Fargate worker ->
    Parquet on S3, PostgreSQL rows and an SNS notification; with a dashboard and alarms."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        env: Environment,
        powertools_layer_arn: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, env=env, **kwargs)
        if env.account is None or env.region is None:
            raise ValueError("PipelineStack needs an explicit account and region (bucket names)")
        names = resource_names(stage=config.stage, account=env.account, region=env.region)
        Tags.of(self).add("project", PROJECT)
        Tags.of(self).add("stage", config.stage)

        self.storage = Storage(self, "Storage", config=config, names=names)
        self.notifications = Notifications(self, "Notifications", config=config, names=names)
        self.ingest = Ingest(
            self, "Ingest", config=config, names=names, raw_bucket=self.storage.raw
        )
        self.batch_counter = BatchCounter(
            self,
            "BatchCounter",
            config=config,
            names=names,
            ingest_queue=self.ingest.queue,
            topic=self.notifications.topic,
            topic_key=self.notifications.key,
            raw_bucket=self.storage.raw,
            powertools_layer_arn=powertools_layer_arn,
        )
        self.network = Network(self, "Network", config=config)
        self.database = Database(
            self,
            "Database",
            config=config,
            names=names,
            vpc=self.network.vpc,
            rotation_subnets=(
                self.network.worker_subnets if config.private_worker_subnets else None
            ),
        )
        self.worker = Worker(
            self,
            "Worker",
            config=config,
            names=names,
            vpc=self.network.vpc,
            subnets=self.network.worker_subnets,
            raw_bucket=self.storage.raw,
            results_bucket=self.storage.results,
            runs_queue=self.batch_counter.runs_queue,
            tracking_table=self.batch_counter.table,
            topic=self.notifications.topic,
            topic_key=self.notifications.key,
            db_secret=self.database.app_secret,
            db_master_secret=self.database.secret,
        )
        self.database.allow_from(self.worker.service)
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            config=config,
            names=names,
            topic=self.notifications.topic,
            ingest_queue=self.ingest.queue,
            ingest_dlq=self.ingest.dlq,
            runs_queue=self.batch_counter.runs_queue,
            runs_dlq=self.batch_counter.runs_dlq,
            function=self.batch_counter.function,
            service=self.worker.service,
        )
        self.notifications.allow_alarms([alarm.alarm_arn for alarm in self.monitoring.alarms])

        self._acknowledge_cdk_internals()
        self._give_helper_functions_log_groups(config)

        for output_id, value, description in (
            (
                "RawBucketName",
                self.storage.raw.bucket_name,
                "Upload images to uploads/<run_id>/<batch_id>/",
            ),
            (
                "ResultsBucketName",
                self.storage.results.bucket_name,
                "Parquet results under results/",
            ),
            (
                "RunsQueueUrl",
                self.batch_counter.runs_queue.queue_url,
                "One message per complete run",
            ),
            ("TopicArn", self.notifications.topic.topic_arn, "Run and alarm notifications"),
            (
                "DatabaseSecretArn",
                self.database.secret.secret_arn,
                "PostgreSQL master credentials (administrators only)",
            ),
            (
                "DatabaseAppSecretArn",
                self.database.app_secret.secret_arn,
                "PostgreSQL credentials of the worker's application role",
            ),
            ("DashboardName", self.monitoring.dashboard.dashboard_name, "CloudWatch dashboard"),
            # Read by `make smoke` to upload a run of the right shape.
            ("ImagesPerBatch", str(config.images_per_batch), "Images that complete a batch"),
            ("BatchesPerRun", str(config.batches_per_run), "Batches that complete a run"),
        ):
            CfnOutput(self, output_id, value=value, description=description)

    def _acknowledge_cdk_internals(self) -> None:
        """Acknowledge findings on the helpers CDK adds to configure S3 bucket notifications and
        the retention of the database's log groups."""
        for child in self.node.children:
            if child.node.id.startswith("BucketNotificationsHandler"):
                acknowledge(
                    child.node.find_child("Role"),
                    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AWSLambdaBasicExecutionRole]",
                    "CDK's own BucketNotificationsHandler, run by CloudFormation only while "
                    "deploying, writes its logs with the AWS basic execution policy.",
                )
            if child.node.id.startswith("LogRetention"):
                role = child.node.find_child("ServiceRole")
                acknowledge(
                    role,
                    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AWSLambdaBasicExecutionRole]",
                    "CDK's own LogRetention function, run by CloudFormation only while deploying "
                    "(it sets the retention of the database's log groups), writes its logs with "
                    "the AWS basic execution policy.",
                )
                acknowledge(
                    role.node.find_child("DefaultPolicy"),
                    "AwsSolutions-IAM5[Resource::*]",
                    "CDK's LogRetention function sets the retention of log groups that RDS "
                    "creates itself, whose names are known only once the instance exists.",
                )

    def _give_helper_functions_log_groups(self, config: StageConfig) -> None:
        """Point every Lambda function CDK adds for itself (bucket notifications, emptying
        buckets on destroy, log retention) at a log group with the stage's retention.

        Without it each one writes to ``/aws/lambda/<name>``, which Lambda creates on first use
        with no retention (kept forever, paid forever).
        """
        own = {self.batch_counter.function.node.default_child}
        helpers = [
            c
            for c in self.node.find_all()
            if isinstance(c, CfnResource)
            and c.cfn_resource_type == "AWS::Lambda::Function"
            and c not in own
        ]
        scope = Construct(self, "HelperLogs")
        for index, function in enumerate(sorted(helpers, key=lambda c: c.node.path)):
            group = logs.LogGroup(
                scope,
                f"Group{index}",
                retention=log_retention(config.log_retention_days),
                removal_policy=RemovalPolicy.DESTROY,
            )
            function.add_property_override("LoggingConfig.LogGroup", group.log_group_name)
