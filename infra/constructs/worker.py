"""Worker: the ECS cluster and the Fargate service that processes runs, scaling from zero."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import StageConfig
from infra.constructs._common import acknowledge, arn_finding, log_retention, logical_id
from infra.constructs.storage import (
    CACHE_PREFIX,
    DATASETS_PREFIX,
    INPUTS_PREFIX,
    JOB_OUTPUT_PREFIXES,
    JOBS_PREFIX,
    MOSAICS_PREFIX,
    REJECTED_PREFIX,
    RESULTS_PREFIX,
    UPLOADS_PREFIX,
)
from infra.naming import ResourceNames

#: Docker build context: the repository root, filtered by its ``.dockerignore`` down to the
#: worker package, ``number_generator``, ``photo_mosaic`` and the image's requirements.
IMAGE_CONTEXT = Path(__file__).resolve().parents[2]
#: The Dockerfile, relative to the build context.
DOCKERFILE = "container/Dockerfile"
CONTAINER_NAME = "worker"
SETUP_CONTAINER_NAME = "dbsetup"
SERVICE_NAME = "worker"
#: Fargate gives a container at most 120 s between SIGTERM and SIGKILL.
STOP_TIMEOUT = Duration.seconds(120)


class Worker(Construct):
    """The Fargate service running ``python -m batch_stats.worker``.

    Scaling: the service idles at zero tasks and asks for one task per run waiting or in
    progress (exact capacity, up to ``worker_max_tasks``); when the runs queue has held nothing
    visible or in flight for five minutes the service goes back to zero. A task processing a
    run enables ECS task scale-in protection through the agent endpoint (``ECS_AGENT_URI``),
    which calls ``ecs:UpdateTaskProtection`` with the task role: the role may do that for the
    cluster's tasks only. Scale-in never stops a protected task, so never a run midway.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        names: ResourceNames,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        raw_bucket: s3.IBucket,
        results_bucket: s3.IBucket,
        runs_queue: sqs.IQueue,
        topic: sns.ITopic,
        topic_key: kms.IKey,
        db_secret: secretsmanager.ISecret,
        db_master_secret: secretsmanager.ISecret,
        tracking_table: dynamodb.ITable,
    ) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.DESTROY if config.destroy_on_removal else RemovalPolicy.RETAIN

        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=vpc,
            cluster_name=names.cluster,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        # Container Insights writes to this group; created here first so that it has a
        # retention (ECS would create it without one).
        insights_logs = logs.LogGroup(
            self,
            "InsightsLogGroup",
            log_group_name=f"/aws/ecs/containerinsights/{names.cluster}/performance",
            retention=log_retention(config.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.cluster.node.add_dependency(insights_logs)
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            retention=log_retention(config.log_retention_days),
            removal_policy=removal,
        )
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "TaskDefinition",
            cpu=config.worker_cpu,
            memory_limit_mib=config.worker_memory_mib,
            ephemeral_storage_gib=config.worker_ephemeral_storage_gib,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        image = ecs.ContainerImage.from_asset(
            str(IMAGE_CONTEXT), file=DOCKERFILE, platform=ecr_assets.Platform.LINUX_AMD64
        )
        # Runs first, as the master user (ECS injects both secrets into this container only,
        # with the execution role): migrations, the application role and its grants.
        self.setup_container = self.task_definition.add_container(
            SETUP_CONTAINER_NAME,
            image=image,
            essential=False,
            command=["python", "-m", "batch_stats.worker.dbsetup"],
            logging=ecs.LogDrivers.aws_logs(stream_prefix="dbsetup", log_group=self.log_group),
            secrets={
                "DB_MASTER_SECRET": ecs.Secret.from_secrets_manager(db_master_secret),
                "DB_APP_SECRET": ecs.Secret.from_secrets_manager(db_secret),
            },
        )
        self.container = self.task_definition.add_container(
            CONTAINER_NAME,
            image=image,
            logging=ecs.LogDrivers.aws_logs(stream_prefix=SERVICE_NAME, log_group=self.log_group),
            stop_timeout=STOP_TIMEOUT,
            environment={
                "RUNS_QUEUE_URL": runs_queue.queue_url,
                "RAW_BUCKET": raw_bucket.bucket_name,
                "RESULTS_BUCKET": results_bucket.bucket_name,
                "NOTIFICATIONS_TOPIC_ARN": topic.topic_arn,
                "TRACKING_TABLE_NAME": tracking_table.table_name,
                "DB_SECRET_ARN": db_secret.secret_arn,
                "DOWNLOAD_CONCURRENCY": str(config.worker_download_concurrency),
                "VISIBILITY_TIMEOUT_SECONDS": str(config.run_timeout_seconds),
                "LOG_LEVEL": "INFO",
            },
        )
        self.container.add_container_dependencies(
            ecs.ContainerDependency(
                container=self.setup_container,
                condition=ecs.ContainerDependencyCondition.SUCCESS,
            )
        )
        self._grant_task_role(
            raw_bucket=raw_bucket,
            results_bucket=results_bucket,
            runs_queue=runs_queue,
            topic=topic,
            topic_key=topic_key,
            db_secret=db_secret,
        )
        # Runs by reference: the worker reads the run item and pages its objects (no Scan).
        self.task_definition.task_role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadRunTracking",
                actions=["dynamodb:GetItem", "dynamodb:Query"],
                resources=[tracking_table.table_arn],
            )
        )

        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="imgpipe worker tasks: no inbound; outbound to AWS APIs and PostgreSQL",
            allow_all_outbound=True,
        )
        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=self.task_definition,
            desired_count=0,
            min_healthy_percent=0,
            max_healthy_percent=200,
            assign_public_ip=not config.private_worker_subnets,
            vpc_subnets=subnets,
            security_groups=[self.security_group],
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            platform_version=ecs.FargatePlatformVersion.LATEST,
        )
        self._scale_on_queue(config=config, runs_queue=runs_queue)

        execution_policy = self.task_definition.obtain_execution_role().node.find_child(
            "DefaultPolicy"
        )
        acknowledge(
            execution_policy,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken has no resource-level permissions (AWS requires '*'); "
            "the other statements name the image repository and the log group.",
        )
        acknowledge(
            self.task_definition,
            "AwsSolutions-ECS2",
            "The environment holds only resource names, URLs, ARNs and tuning values; the "
            "database credentials are read from Secrets Manager at run time (DB_SECRET_ARN).",
        )

    def _grant_task_role(
        self,
        *,
        raw_bucket: s3.IBucket,
        results_bucket: s3.IBucket,
        runs_queue: sqs.IQueue,
        topic: sns.ITopic,
        topic_key: kms.IKey,
        db_secret: secretsmanager.ISecret,
    ) -> None:
        role = self.task_definition.task_role
        uploads = raw_bucket.arn_for_objects(f"{UPLOADS_PREFIX}*")
        rejected = raw_bucket.arn_for_objects(f"{REJECTED_PREFIX}*")
        results = results_bucket.arn_for_objects(f"{RESULTS_PREFIX}*")
        role.add_to_principal_policy(
            iam.PolicyStatement(sid="ReadUploads", actions=["s3:GetObject"], resources=[uploads])
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ListUploads",
                actions=["s3:ListBucket"],
                resources=[raw_bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{UPLOADS_PREFIX}*"]}},
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                # The shard that finishes a run reads the other shards' Parquet parts.
                sid="ReadResultParts",
                actions=["s3:GetObject"],
                resources=[results],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="WriteRejectedAndResults",
                actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[rejected, results],
            )
        )
        # Jobs: documents and inputs (tiles, targets) in the raw bucket; outputs and caches in
        # the results bucket, listed only under those prefixes (failed manifests list what is
        # present, mosaics list their tiles).
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadJobDocumentsAndInputs",
                actions=["s3:GetObject"],
                resources=[
                    raw_bucket.arn_for_objects(f"{JOBS_PREFIX}*"),
                    raw_bucket.arn_for_objects(f"{INPUTS_PREFIX}*"),
                ],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ListJobInputs",
                actions=["s3:ListBucket"],
                resources=[raw_bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{INPUTS_PREFIX}*"]}},
            )
        )
        job_outputs = [
            results_bucket.arn_for_objects(f"{prefix}*")
            for prefix in JOB_OUTPUT_PREFIXES
            if prefix != RESULTS_PREFIX
        ]
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadJobOutputsAndCaches", actions=["s3:GetObject"], resources=job_outputs
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="WriteJobOutputs",
                actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                resources=job_outputs,
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ListJobOutputs",
                actions=["s3:ListBucket"],
                resources=[results_bucket.bucket_arn],
                conditions={
                    "StringLike": {"s3:prefix": [f"{prefix}*" for prefix in JOB_OUTPUT_PREFIXES]}
                },
            )
        )
        runs_queue.grant_consume_messages(role)
        # A job of several shards sends one message per shard to the runs queue.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="SendJobShards", actions=["sqs:SendMessage"], resources=[runs_queue.queue_arn]
            )
        )
        # Explicit instead of topic.grant_publish, which adds kms:GenerateDataKey* (wildcard).
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="PublishRunNotifications", actions=["sns:Publish"], resources=[topic.topic_arn]
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="EncryptForTheTopic",
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=[topic_key.key_arn],
            )
        )
        db_secret.grant_read(role)
        # The ECS agent calls these with the task role's credentials for the task itself.
        tasks = Stack.of(self).format_arn(
            service="ecs",
            resource="task",
            resource_name=f"{self.cluster.cluster_name}/*",
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="OwnScaleInProtection",
                actions=["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"],
                resources=[tasks],
            )
        )

        policy = self.task_definition.node.find_child("TaskRole").node.find_child("DefaultPolicy")
        stack = Stack.of(self)
        acknowledge(
            policy,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ecs:{stack.region}:"
            f"{stack.account}:task/<{logical_id(self.cluster)}>/*]",
            "Task ids are unknown at deploy time; the ECS agent sets scale-in protection for "
            "the task itself, and the grant is limited to the tasks of this cluster.",
        )
        for bucket, prefix, what in (
            (raw_bucket, UPLOADS_PREFIX, "reads the images of the run it processes"),
            (raw_bucket, REJECTED_PREFIX, "copies rejected uploads, keyed by run and batch"),
            (results_bucket, RESULTS_PREFIX, "writes results/<run_id>/batch_stats.parquet"),
            (raw_bucket, JOBS_PREFIX, "reads job documents jobs/<job_id>.json"),
            (raw_bucket, INPUTS_PREFIX, "reads job inputs (tiles, targets)"),
            (results_bucket, DATASETS_PREFIX, "writes datasets/<job_id>/"),
            (results_bucket, MOSAICS_PREFIX, "writes mosaics/<job_id>/"),
            (results_bucket, CACHE_PREFIX, "reads and writes shared caches (tile thumbnails)"),
            (results_bucket, JOBS_PREFIX, "writes the failed manifest of a job of unknown kind"),
        ):
            acknowledge(
                policy,
                arn_finding(bucket, f"/{prefix}*"),
                f"Object keys carry run or job ids unknown at deploy time; the worker {what} "
                f"and the grant is limited to the {prefix} prefix.",
            )

    def _scale_on_queue(self, *, config: StageConfig, runs_queue: sqs.IQueue) -> None:
        """Desired tasks = runs waiting + runs in progress, at most ``worker_max_tasks``.

        The scale-out policy sets an exact capacity, so an alarm that stays in ALARM while a
        cold-starting task has not yet received its message (Application Auto Scaling
        re-evaluates it every minute) asks for the same count again instead of one more task.
        A finished run lowers the count; the task still working on another run is protected
        from that scale-in. The scale-in policy takes the service to zero once nothing has
        been waiting or in progress for five minutes.
        """
        scaling = self.service.auto_scale_task_count(
            min_capacity=0, max_capacity=config.worker_max_tasks
        )
        visible = runs_queue.metric_approximate_number_of_messages_visible(
            period=Duration.minutes(1), statistic=cloudwatch.Stats.MAXIMUM
        )
        in_flight = runs_queue.metric_approximate_number_of_messages_not_visible(
            period=Duration.minutes(1), statistic=cloudwatch.Stats.MAXIMUM
        )
        runs = cloudwatch.MathExpression(
            expression="FILL(visible, 0) + FILL(inflight, 0)",
            using_metrics={"visible": visible, "inflight": in_flight},
            label="Runs waiting or in progress",
            period=Duration.minutes(1),
        )
        # Integer counts: step n covers [n - 0.5, n + 0.5); nothing below 0.5 (no action).
        top = config.worker_max_tasks
        steps = [
            appscaling.ScalingInterval(lower=n - 0.5, upper=n + 0.5, change=n)
            for n in range(1, top)
        ] + [appscaling.ScalingInterval(lower=top - 0.5, change=top)]
        if len(steps) == 1:  # CDK wants two intervals: split the last one
            steps = [
                appscaling.ScalingInterval(lower=0.5, upper=1.5, change=1),
                appscaling.ScalingInterval(lower=1.5, change=1),
            ]
        scaling.scale_on_metric(
            "ScaleToRuns",
            metric=runs,
            scaling_steps=steps,
            adjustment_type=appscaling.AdjustmentType.EXACT_CAPACITY,
            cooldown=Duration.minutes(1),
            evaluation_periods=1,
        )
        # In: nothing waiting and nothing in progress for five minutes (a protected task
        # would not be stopped anyway).
        scaling.scale_on_metric(
            "ScaleInWhenIdle",
            metric=runs,
            scaling_steps=[
                appscaling.ScalingInterval(upper=0, change=-config.worker_max_tasks),
                appscaling.ScalingInterval(lower=1, change=0),
            ],
            adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            cooldown=Duration.minutes(1),
            evaluation_periods=5,
            datapoints_to_alarm=5,
        )
