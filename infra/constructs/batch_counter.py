"""Batch counter: the tracking table, the runs queue (+ DLQ), the ``batch_counter`` Lambda and
the schedule group of its incomplete-run checks (with the role EventBridge Scheduler invokes it
with)."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra.config import StageConfig
from infra.constructs._common import acknowledge, arn_finding, log_retention
from infra.naming import ResourceNames

#: The Lambda asset folder (the repository's ``lambdas/``) and what stays out of it.
LAMBDAS_DIR = Path(__file__).resolve().parents[2] / "lambdas"
ASSET_EXCLUDE = ["**/__pycache__", "**/*.pyc", "**/.mypy_cache", "**/.pytest_cache", "*.egg-info"]
HANDLER = "batch_counter.handler.lambda_handler"
RUNTIME = lambda_.Runtime.PYTHON_3_13
#: The Powertools layer is published per Python version and architecture.
POWERTOOLS_LAYER_PARAMETER = "/aws/service/powertools/python/x86_64/python3.13/{version}"

#: DynamoDB actions the function's role may perform on the tracking table.
TABLE_ACTIONS = ("GetItem", "PutItem", "UpdateItem", "Query")

SERVICE_NAME = "batch-counter"
METRICS_NAMESPACE = "ImagePipeline"
#: A run message that failed this many worker attempts moves to the runs DLQ; with the worker's
#: growing retry delays (batch_stats.worker.retry) 8 receives ride out a 22-minute outage.
RUNS_MAX_RECEIVE_COUNT = 8
#: Every DLQ outlives its source queue (SQS counts a moved message's age from its first enqueue).
DLQ_RETENTION_DAYS = 14
SOURCE_RETENTION_DAYS = 4


class BatchCounter(Construct):
    """Counts uploads per batch and run, and dispatches one message per complete run.

    The Lambda consumes the ingest queue (partial batch failures reported), records each object
    once in the tracking table and sends the run message to the runs queue.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        names: ResourceNames,
        ingest_queue: sqs.IQueue,
        topic: sns.ITopic,
        topic_key: kms.IKey,
        raw_bucket: s3.IBucket | None = None,
        powertools_layer_arn: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.DESTROY if config.destroy_on_removal else RemovalPolicy.RETAIN

        self.table = dynamodb.Table(
            self,
            "TrackingTable",
            table_name=names.tracking_table,
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            time_to_live_attribute="expires_at",
            removal_policy=removal,
        )

        # FIFO: the counter sends each shard with deduplication id <run_id>.<shard>, so a retried
        # send (lost response, failed state update) is dropped by SQS within 5 minutes. One
        # message group per shard: shards of a run are processed in parallel.
        self.runs_dlq = sqs.Queue(
            self,
            "RunsDeadLetterQueue",
            queue_name=names.runs_dlq,
            fifo=True,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(DLQ_RETENTION_DAYS),
        )
        self.runs_queue = sqs.Queue(
            self,
            "RunsQueue",
            queue_name=names.runs_queue,
            fifo=True,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            # Longer than a run: a message in progress never becomes visible to a second worker.
            visibility_timeout=Duration.seconds(config.run_timeout_seconds),
            # Shorter than the DLQ's: a standard queue's DLQ keeps a message only for what is
            # left of its retention, counted from the original enqueue.
            retention_period=Duration.days(SOURCE_RETENTION_DAYS),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.runs_dlq, max_receive_count=RUNS_MAX_RECEIVE_COUNT
            ),
        )

        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            retention=log_retention(config.log_retention_days),
            removal_policy=removal,
        )
        # An explicit role instead of the AWSLambdaBasicExecutionRole managed policy: it may
        # write only to this function's log group.
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="batch_counter Lambda: tracking table, runs queue, own log group",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        # Incomplete-run checks: one one-time schedule per run in this group, invoking the
        # function through this role (Scheduler assumes it; the function may pass only it).
        self.schedule_group = scheduler.CfnScheduleGroup(
            self, "RunChecks", name=names.schedule_group
        )
        self.scheduler_role = iam.Role(
            self,
            "SchedulerRole",
            role_name=names.scheduler_role,
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": Stack.of(self).account},
                    "ArnLike": {"aws:SourceArn": self._schedules_arn(names.schedule_group)},
                },
            ),
            description="EventBridge Scheduler: invoke batch_counter for a run's check",
        )
        layer_arn = powertools_layer_arn or ssm.StringParameter.value_for_string_parameter(
            self, POWERTOOLS_LAYER_PARAMETER.format(version=config.powertools_version)
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description="Counts uploaded images per batch/run and dispatches complete runs",
            runtime=RUNTIME,
            architecture=lambda_.Architecture.X86_64,
            handler=HANDLER,
            code=lambda_.Code.from_asset(str(LAMBDAS_DIR), exclude=ASSET_EXCLUDE),
            layers=[
                lambda_.LayerVersion.from_layer_version_arn(self, "PowertoolsLayer", layer_arn)
            ],
            memory_size=config.lambda_memory_mib,
            timeout=Duration.seconds(config.lambda_timeout_seconds),
            role=self.role,
            log_group=self.log_group,
            environment={
                "TRACKING_TABLE_NAME": self.table.table_name,
                "RUNS_QUEUE_URL": self.runs_queue.queue_url,
                "IMAGES_PER_BATCH": str(config.images_per_batch),
                "BATCHES_PER_RUN": str(config.batches_per_run),
                "SHARD_IMAGES": str(config.shard_images),
                "RUN_TIMEOUT": str(config.incomplete_run_timeout_seconds),
                "SCHEDULE_GROUP_NAME": names.schedule_group,
                "SCHEDULER_ROLE_ARN": self.scheduler_role.role_arn,
                "NOTIFICATIONS_TOPIC_ARN": topic.topic_arn,
                "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                "POWERTOOLS_LOG_LEVEL": "INFO",
            },
        )
        acknowledge(
            self.function,
            "AwsSolutions-L1",
            "Pinned to Python 3.13 on purpose: the Powertools layer and the handler are tested "
            "on it, and AWS supports it into 2029; a runtime upgrade is a reviewed change.",
        )
        self.function.add_event_source(
            event_sources.SqsEventSource(
                ingest_queue,
                batch_size=10,
                max_batching_window=Duration.seconds(1),
                report_batch_item_failures=True,
            )
        )
        # Exactly the item operations the counter performs (a transaction needs the action of
        # each of its items); tests/infra derives the same list from the code's calls.
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="TrackUploads",
                actions=[f"dynamodb:{action}" for action in TABLE_ACTIONS],
                resources=[self.table.table_arn],
            )
        )
        self.runs_queue.grant_send_messages(self.role)
        self.scheduler_role.add_to_policy(
            iam.PolicyStatement(
                sid="InvokeForRunChecks",
                actions=["lambda:InvokeFunction"],
                resources=[self.function.function_arn],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ScheduleRunChecks",
                actions=["scheduler:CreateSchedule"],
                resources=[self._schedules_arn(names.schedule_group)],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="PassTheSchedulerRole",
                actions=["iam:PassRole"],
                resources=[self.scheduler_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}},
            )
        )
        stack = Stack.of(self)
        acknowledge(
            self.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:scheduler:"
            f"{stack.region}:{stack.account}:schedule/{names.schedule_group}/*]",
            "Schedule names carry run ids unknown at deploy time; the counter may only create "
            "schedules in its own group (not update or delete them: they delete themselves).",
        )
        # The 'incomplete' and 'late' notifications of the runs' checks. Explicit instead of
        # topic.grant_publish, which adds kms:GenerateDataKey* (wildcard).
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="PublishIncompleteRuns", actions=["sns:Publish"], resources=[topic.topic_arn]
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="EncryptForTheTopic",
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=[topic_key.key_arn],
            )
        )
        if raw_bucket is not None:
            # Manifests are read from uploads/, job documents from jobs/ (and a second document
            # under a dispatched job id is copied from there); bad keys are copied to rejected/.
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid="ReadUploads",
                    actions=["s3:GetObject"],
                    resources=[
                        raw_bucket.arn_for_objects("uploads/*"),
                        raw_bucket.arn_for_objects("jobs/*"),
                    ],
                )
            )
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid="CopyBadKeysToRejected",
                    actions=["s3:PutObject"],
                    resources=[raw_bucket.arn_for_objects("rejected/*")],
                )
            )
            policy = self.role.node.find_child("DefaultPolicy")
            for prefix, what in (
                ("uploads/", "reads run manifests (uploads/<run_id>/_manifest.json)"),
                ("jobs/", "reads job documents (jobs/<job_id>.json) and copies duplicates"),
                ("rejected/", "copies uploads with a bad key under rejected/<run_id>/_bad_keys/"),
            ):
                acknowledge(
                    policy,
                    arn_finding(raw_bucket, f"/{prefix}*"),
                    f"Object keys carry run ids unknown at deploy time; the counter {what}, and "
                    f"the grant is limited to the {prefix} prefix.",
                )

    def _schedules_arn(self, group: str) -> str:
        """The ARN pattern of the schedules of ``group`` (names are run hashes and times)."""
        return Stack.of(self).format_arn(
            service="scheduler", resource="schedule", resource_name=f"{group}/*"
        )
