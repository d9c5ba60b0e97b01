"""Ingest: S3 ``uploads/`` object-created notifications -> the ingest queue (+ DLQ)."""

from __future__ import annotations

import jsii
from aws_cdk import Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk.interfaces import aws_s3 as s3_refs
from constructs import Construct

from infra.config import StageConfig
from infra.constructs.batch_counter import DLQ_RETENTION_DAYS, SOURCE_RETENTION_DAYS
from infra.constructs.storage import JOBS_PREFIX, UPLOADS_PREFIX
from infra.naming import ResourceNames

#: An ingest message that failed this many Lambda attempts moves to the DLQ.
INGEST_MAX_RECEIVE_COUNT = 5


class Ingest(Construct):
    """The ingest queue the raw bucket notifies, and its dead-letter queue.

    S3 delivers events at least once; the Lambda's conditional writes make duplicates harmless.
    The notification filters are ``uploads/`` (runs) and ``jobs/`` (job documents), so copies
    written to ``rejected/`` never re-trigger.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        names: ResourceNames,
        raw_bucket: s3.Bucket,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dlq = sqs.Queue(
            self,
            "DeadLetterQueue",
            queue_name=names.ingest_dlq,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(DLQ_RETENTION_DAYS),
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            queue_name=names.ingest_queue,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            # AWS recommends six times the function timeout for an SQS event source.
            visibility_timeout=Duration.seconds(6 * config.lambda_timeout_seconds),
            retention_period=Duration.days(SOURCE_RETENTION_DAYS),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dlq, max_receive_count=INGEST_MAX_RECEIVE_COUNT
            ),
        )
        destination = QueueDestination(self.queue)
        for prefix in (UPLOADS_PREFIX, JOBS_PREFIX):
            raw_bucket.add_event_notification(
                s3.EventType.OBJECT_CREATED, destination, s3.NotificationKeyFilter(prefix=prefix)
            )


@jsii.implements(s3.IBucketNotificationDestination)
class QueueDestination:
    """An S3 notification destination like ``s3_notifications.SqsDestination``, whose queue
    policy statement also names the bucket's account (``aws:SourceAccount``): a bucket ARN
    carries no account, and AWS recommends both keys against the confused deputy."""

    def __init__(self, queue: sqs.IQueue) -> None:
        self._queue = queue

    def bind(
        self, scope: Construct, bucket: s3_refs.IBucketRef
    ) -> s3.BucketNotificationDestinationConfig:
        del scope
        self._queue.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowTheRawBucketToNotify",
                principals=[iam.ServicePrincipal("s3.amazonaws.com")],
                actions=["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
                resources=[self._queue.queue_arn],
                conditions={
                    "ArnLike": {"aws:SourceArn": bucket.bucket_ref.bucket_arn},
                    "StringEquals": {"aws:SourceAccount": Stack.of(bucket).account},
                },
            )
        )
        # The policy is a child of the queue: S3 checks it when the configuration is put.
        return s3.BucketNotificationDestinationConfig(
            arn=self._queue.queue_arn,
            type=s3.BucketNotificationDestinationType.QUEUE,
            dependencies=[self._queue],
        )
