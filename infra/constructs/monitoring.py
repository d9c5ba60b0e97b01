"""Monitoring: the pipeline dashboard and the alarms that notify the SNS topic."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import StageConfig
from infra.constructs.batch_counter import METRICS_NAMESPACE
from infra.constructs.batch_counter import SERVICE_NAME as LAMBDA_SERVICE
from infra.constructs.worker import SERVICE_NAME as WORKER_SERVICE
from infra.naming import ResourceNames

FIVE_MINUTES = Duration.minutes(5)
#: The job kinds the worker runs (``batch_stats.jobs.registry.KINDS``; a test keeps them equal).
JOB_KINDS = ("synthetic-stats", "digits", "mosaic")


def job_metric(name: str, kind: str, *, statistic: str = "Sum") -> cloudwatch.Metric:
    """A job metric of one kind (the worker's EMF, dimensions ``service`` and ``Kind``)."""
    return cloudwatch.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": WORKER_SERVICE, "Kind": kind},
        statistic=statistic,
        period=FIVE_MINUTES,
        label=f"{name} {kind}",
    )


def pipeline_metric(name: str, service: str, *, statistic: str = "Sum") -> cloudwatch.Metric:
    """A custom metric the Lambda or the worker emits (EMF, namespace ``ImagePipeline``)."""
    return cloudwatch.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": service},
        statistic=statistic,
        period=FIVE_MINUTES,
    )


class Monitoring(Construct):
    """A dashboard of the whole flow and eight alarms, each notifying the topic on ALARM and OK.

    Alarms: a message in either DLQ, any Lambda error, any upload event the Lambda failed to
    record (it is retried, and reaches the DLQ only after five attempts), any failed run, any
    exception while the worker handled a run (retried, and in the DLQ only after three attempts),
    any refused scale-in protection, and a run message that has waited longer than
    ``run_age_alarm_seconds`` (no worker is picking runs up).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        names: ResourceNames,
        topic: sns.ITopic,
        ingest_queue: sqs.IQueue,
        ingest_dlq: sqs.IQueue,
        runs_queue: sqs.IQueue,
        runs_dlq: sqs.IQueue,
        function: lambda_.IFunction,
        service: ecs.FargateService,
    ) -> None:
        super().__init__(scope, construct_id)
        action = actions.SnsAction(topic)
        self.alarms: list[cloudwatch.Alarm] = []

        def alarm(
            alarm_id: str, metric: cloudwatch.IMetric, threshold: float, description: str
        ) -> cloudwatch.Alarm:
            created = cloudwatch.Alarm(
                self,
                alarm_id,
                metric=metric,
                alarm_description=description,
                threshold=threshold,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            created.add_alarm_action(action)
            created.add_ok_action(action)
            self.alarms.append(created)
            return created

        dlq_depth = {
            "ingest": ingest_dlq.metric_approximate_number_of_messages_visible(
                period=FIVE_MINUTES, statistic="Maximum"
            ),
            "runs": runs_dlq.metric_approximate_number_of_messages_visible(
                period=FIVE_MINUTES, statistic="Maximum"
            ),
        }
        alarm(
            "IngestDlqNotEmpty",
            dlq_depth["ingest"],
            1,
            "Upload events failed 5 Lambda attempts and wait in the ingest DLQ: inspect them, "
            "fix the cause, then redrive.",
        )
        alarm(
            "RunsDlqNotEmpty",
            dlq_depth["runs"],
            1,
            "A run failed 3 worker attempts and waits in the runs DLQ: read the worker logs, fix "
            "the cause, then redrive.",
        )
        lambda_errors = function.metric_errors(period=FIVE_MINUTES, statistic="Sum")
        alarm("LambdaErrors", lambda_errors, 1, "The batch_counter Lambda raised errors.")
        records_failed = pipeline_metric("RecordsFailed", LAMBDA_SERVICE)
        alarm(
            "LambdaRecordsFailed",
            records_failed,
            1,
            "The batch_counter Lambda failed to record upload events; SQS delivers them again "
            "(read the function's logs: 'record failed').",
        )
        alarm(
            "BadKeyUploads",
            pipeline_metric("RejectedKeys", LAMBDA_SERVICE),
            1,
            "Uploads with a key outside uploads/<run_id>/<batch_id>/<name>.png arrived: they "
            "are copied under rejected/ and listed in their run's notification.",
        )
        alarm(
            "LateUploads",
            pipeline_metric("LateUploads", LAMBDA_SERVICE),
            1,
            "Uploads arrived for runs already closed: they are kept, not processed, listed "
            "in the run's record (batch-stats status) and, once no other has come for the "
            "incomplete-run timeout, named in one 'late' notification per group.",
        )
        alarm(
            "RunsIncomplete",
            pipeline_metric("RunsIncomplete", LAMBDA_SERVICE),
            1,
            "A run stayed incomplete after its last upload for the incomplete-run timeout: its "
            "'incomplete' notification names the missing batches (upload them to a new run).",
        )
        runs_failed = pipeline_metric("RunsFailed", WORKER_SERVICE)
        alarm("WorkerRunsFailed", runs_failed, 1, "The worker reported failed runs.")
        run_errors = pipeline_metric("RunErrors", WORKER_SERVICE)
        alarm(
            "WorkerRunErrors",
            run_errors,
            1,
            "The worker raised an exception while handling a run; the message is retried "
            "(read the worker logs: 'failed (receive').",
        )
        protection_refused = pipeline_metric("TaskProtectionFailures", WORKER_SERVICE)
        alarm(
            "WorkerProtectionRefused",
            protection_refused,
            1,
            "ECS refused the worker's scale-in protection: a scale-in may stop a run midway "
            "(check the task role's ecs:UpdateTaskProtection permission).",
        )
        jobs_failed = cloudwatch.MathExpression(
            expression=" + ".join(f"FILL(f{i}, 0)" for i in range(len(JOB_KINDS))),
            using_metrics={
                f"f{i}": job_metric("JobsFailed", kind) for i, kind in enumerate(JOB_KINDS)
            },
            label="Jobs failed (every kind)",
            period=FIVE_MINUTES,
        )
        alarm(
            "WorkerJobsFailed",
            jobs_failed,
            1,
            "Jobs failed (bad document, bad parameters or unusable inputs): the 'failed' "
            "notification and batch-stats job-status give the reason.",
        )
        job_errors = pipeline_metric("JobErrors", WORKER_SERVICE)
        oldest_run = runs_queue.metric_approximate_age_of_oldest_message(
            period=Duration.minutes(1), statistic="Maximum"
        )
        alarm(
            "RunsWaitingTooLong",
            oldest_run,
            config.run_age_alarm_seconds,
            f"A run message has waited {config.run_age_alarm_seconds} s or more: workers are "
            "not starting or not finishing runs.",
        )

        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=names.dashboard,
            default_interval=Duration.hours(6),
        )

        def graph(title: str, metrics: list[cloudwatch.IMetric]) -> cloudwatch.GraphWidget:
            return cloudwatch.GraphWidget(title=title, left=metrics, width=8, height=6)

        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(
                title="Alarms", alarms=list(self.alarms), width=24, height=3
            )
        )
        self.dashboard.add_widgets(
            graph(
                "Uploads",
                [
                    ingest_queue.metric_number_of_messages_sent(
                        period=FIVE_MINUTES, label="S3 events queued"
                    ),
                    pipeline_metric("ImagesRecorded", LAMBDA_SERVICE),
                    pipeline_metric("DuplicateEvents", LAMBDA_SERVICE),
                    pipeline_metric("RejectedKeys", LAMBDA_SERVICE),
                ],
            ),
            graph(
                "Runs",
                [
                    pipeline_metric("RunsDispatched", LAMBDA_SERVICE),
                    pipeline_metric("RunsFinished", WORKER_SERVICE),
                    runs_failed,
                    run_errors,
                    records_failed,
                ],
            ),
            graph(
                "Images processed by the worker",
                [
                    pipeline_metric("ImagesProcessed", WORKER_SERVICE),
                    pipeline_metric("ImagesRejected", WORKER_SERVICE),
                    protection_refused,
                ],
            ),
        )
        self.dashboard.add_widgets(
            graph(
                "Queue age (oldest message, s)",
                [
                    ingest_queue.metric_approximate_age_of_oldest_message(
                        period=FIVE_MINUTES, statistic="Maximum", label="ingest"
                    ),
                    runs_queue.metric_approximate_age_of_oldest_message(
                        period=FIVE_MINUTES, statistic="Maximum", label="runs"
                    ),
                ],
            ),
            graph(
                "DLQ depth",
                [
                    dlq_depth["ingest"].with_(label="ingest DLQ"),
                    dlq_depth["runs"].with_(label="runs DLQ"),
                ],
            ),
            graph(
                "Runs queue",
                [
                    runs_queue.metric_approximate_number_of_messages_visible(
                        period=Duration.minutes(1), statistic="Maximum", label="waiting"
                    ),
                    runs_queue.metric_approximate_number_of_messages_not_visible(
                        period=Duration.minutes(1), statistic="Maximum", label="in progress"
                    ),
                ],
            ),
        )
        self.dashboard.add_widgets(
            graph(
                "Lambda invocations and errors",
                [
                    function.metric_invocations(period=FIVE_MINUTES),
                    lambda_errors,
                    function.metric_throttles(period=FIVE_MINUTES),
                ],
            ),
            graph(
                "Lambda duration (ms)",
                [
                    function.metric_duration(period=FIVE_MINUTES, statistic="p50", label="p50"),
                    function.metric_duration(period=FIVE_MINUTES, statistic="p99", label="p99"),
                    function.metric_duration(period=FIVE_MINUTES, statistic="Maximum", label="max"),
                ],
            ),
            graph(
                "Worker CPU and memory (%)",
                [
                    service.metric_cpu_utilization(period=Duration.minutes(1)),
                    service.metric_memory_utilization(period=Duration.minutes(1)),
                ],
            ),
        )
        tasks = {
            name: cloudwatch.Metric(
                namespace="ECS/ContainerInsights",
                metric_name=name,
                dimensions_map={
                    "ClusterName": service.cluster.cluster_name,
                    "ServiceName": service.service_name,
                },
                statistic="Maximum",
                period=Duration.minutes(1),
            )
            for name in ("DesiredTaskCount", "RunningTaskCount")
        }
        self.dashboard.add_widgets(
            graph(
                "Jobs by kind",
                [
                    *(job_metric("JobsSucceeded", kind) for kind in JOB_KINDS),
                    *(job_metric("JobsFailed", kind) for kind in JOB_KINDS),
                    pipeline_metric("JobsDispatched", LAMBDA_SERVICE),
                    job_errors,
                ],
            ),
            graph(
                "Job duration by kind (s)",
                [
                    job_metric("JobDurationSeconds", kind, statistic=statistic)
                    for statistic in ("Average", "Maximum")
                    for kind in JOB_KINDS
                ],
            ),
        )
        self.dashboard.add_widgets(
            graph("Worker tasks (scaling from zero)", list(tasks.values())),
            graph(
                "Run duration (s)",
                [
                    pipeline_metric("RunDurationSeconds", WORKER_SERVICE, statistic="Average"),
                    pipeline_metric("RunDurationSeconds", WORKER_SERVICE, statistic="Maximum"),
                ],
            ),
        )
