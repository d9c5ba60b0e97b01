"""Create the pipeline's AWS resources in moto, with the names and settings the CDK stack uses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from batch_stats.local.services import LOCAL_ACCOUNT, LOCAL_REGION
from infra.naming import ResourceNames, resource_names

INGEST_MAX_RECEIVES = 5
RUNS_MAX_RECEIVES = 8  # as the CDK stack's RUNS_MAX_RECEIVE_COUNT


@dataclass(frozen=True)
class LocalResources:
    """Identifiers of the created resources."""

    names: ResourceNames
    ingest_queue_url: str
    ingest_dlq_url: str
    runs_queue_url: str
    runs_dlq_url: str
    topic_arn: str
    scheduler_role_arn: str

    def lambda_environ(
        self,
        *,
        images_per_batch: int,
        batches_per_run: int,
        shard_images: int = 5000,
        run_timeout: int = 3600,
    ) -> dict[str, str]:
        """The batch counter's environment, as the CDK stack sets it."""
        return {
            "TRACKING_TABLE_NAME": self.names.tracking_table,
            "RUNS_QUEUE_URL": self.runs_queue_url,
            "IMAGES_PER_BATCH": str(images_per_batch),
            "BATCHES_PER_RUN": str(batches_per_run),
            "SHARD_IMAGES": str(shard_images),
            "RUN_TIMEOUT": str(run_timeout),
            "SCHEDULE_GROUP_NAME": self.names.schedule_group,
            "SCHEDULER_ROLE_ARN": self.scheduler_role_arn,
            "NOTIFICATIONS_TOPIC_ARN": self.topic_arn,
            "POWERTOOLS_SERVICE_NAME": "batch-counter",
            "POWERTOOLS_METRICS_NAMESPACE": "ImagePipeline",
        }

    def worker_environ(self, *, database_url: str) -> dict[str, str]:
        """The worker's environment (local mode: a database URL instead of a secret ARN)."""
        return {
            "RUNS_QUEUE_URL": self.runs_queue_url,
            "RAW_BUCKET": self.names.raw_bucket,
            "RESULTS_BUCKET": self.names.results_bucket,
            "NOTIFICATIONS_TOPIC_ARN": self.topic_arn,
            "TRACKING_TABLE_NAME": self.names.tracking_table,
            "DATABASE_URL": database_url,
        }


def _queue_with_dlq(
    sqs: Any,
    *,
    name: str,
    dlq_name: str,
    max_receives: int,
    visibility_timeout: int,
    fifo: bool = False,
) -> tuple[str, str]:
    fifo_attributes = {"FifoQueue": "true"} if fifo else {}
    dlq_url = sqs.create_queue(QueueName=dlq_name, Attributes=fifo_attributes)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            **fifo_attributes,
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receives)}
            ),
        },
    )["QueueUrl"]
    return url, dlq_url


def create_resources(
    session: Any,
    *,
    stage: str = "local",
    ingest_visibility_timeout: int = 30,
    runs_visibility_timeout: int = 900,
) -> LocalResources:
    """Create buckets, queues (with DLQs), the tracking table, the topic, the S3 notification and
    the runs' check schedule group.

    ``session`` is a ``boto3.Session`` whose clients reach moto (``AWS_ENDPOINT_URL``).
    """
    names = resource_names(stage=stage, account=LOCAL_ACCOUNT, region=LOCAL_REGION)
    s3 = session.client("s3")
    sqs = session.client("sqs")
    for bucket in (names.raw_bucket, names.results_bucket):
        s3.create_bucket(Bucket=bucket)
    ingest_url, ingest_dlq_url = _queue_with_dlq(
        sqs,
        name=names.ingest_queue,
        dlq_name=names.ingest_dlq,
        max_receives=INGEST_MAX_RECEIVES,
        visibility_timeout=ingest_visibility_timeout,
    )
    runs_url, runs_dlq_url = _queue_with_dlq(
        sqs,
        name=names.runs_queue,
        dlq_name=names.runs_dlq,
        max_receives=RUNS_MAX_RECEIVES,
        visibility_timeout=runs_visibility_timeout,
        fifo=True,
    )
    session.client("dynamodb").create_table(
        TableName=names.tracking_table,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    topic_arn = session.client("sns").create_topic(Name=names.topic)["TopicArn"]
    ingest_arn = sqs.get_queue_attributes(QueueUrl=ingest_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=names.raw_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": ingest_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                }
                # Uploads of runs, and job documents (jobs/<job_id>.json).
                for prefix in ("uploads/", "jobs/")
            ]
        },
    )
    session.client("scheduler").create_schedule_group(Name=names.schedule_group)
    return LocalResources(
        names=names,
        scheduler_role_arn=f"arn:aws:iam::{LOCAL_ACCOUNT}:role/{names.scheduler_role}",
        ingest_queue_url=ingest_url,
        ingest_dlq_url=ingest_dlq_url,
        runs_queue_url=runs_url,
        runs_dlq_url=runs_dlq_url,
        topic_arn=topic_arn,
    )
