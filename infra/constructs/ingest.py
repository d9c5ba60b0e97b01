"""Ingest: S3 ``uploads/`` object-created notifications -> the ingest queue (+ DLQ)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import StageConfig
from infra.constructs.storage import UPLOADS_PREFIX
from infra.naming import ResourceNames

#: An ingest message that failed this many Lambda attempts moves to the DLQ.
INGEST_MAX_RECEIVE_COUNT = 5


class Ingest(Construct):
    """The ingest queue the raw bucket notifies, and its dead-letter queue.

    S3 delivers events at least once; the Lambda's conditional writes make duplicates harmless.
    The notification filter is ``uploads/`` so copies written to ``rejected/`` never re-trigger.
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
            retention_period=Duration.days(14),
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            queue_name=names.ingest_queue,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            # AWS recommends six times the function timeout for an SQS event source.
            visibility_timeout=Duration.seconds(6 * config.lambda_timeout_seconds),
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dlq, max_receive_count=INGEST_MAX_RECEIVE_COUNT
            ),
        )
        raw_bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.SqsDestination(self.queue),
            s3.NotificationKeyFilter(prefix=UPLOADS_PREFIX),
        )
