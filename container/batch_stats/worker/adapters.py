"""The worker's ports (small protocols) and their AWS implementations (boto3).

The run logic in :mod:`batch_stats.worker.runner` talks only to these protocols; tests and local
mode use the same boto3 implementations against moto's server.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from psycopg.conninfo import make_conninfo

log = logging.getLogger(__name__)


class ObjectMissingError(LookupError):
    """The object does not exist (any more)."""


class ObjectStore(Protocol):
    def get(self, bucket: str, key: str) -> bytes: ...

    def put(
        self, bucket: str, key: str, data: bytes, *, content_type: str, metadata: Mapping[str, str]
    ) -> None: ...

    def copy(self, *, bucket: str, key: str, to_key: str, metadata: Mapping[str, str]) -> None: ...


@dataclass(frozen=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


class RunQueue(Protocol):
    def receive(self, *, wait_seconds: int) -> ReceivedMessage | None: ...

    def delete(self, message: ReceivedMessage) -> None: ...

    def set_visibility(self, message: ReceivedMessage, seconds: int) -> None: ...


class Notifier(Protocol):
    def publish(self, *, subject: str, message: str) -> str: ...


class S3ObjectStore:
    def __init__(self, client: Any) -> None:
        self._s3 = client

    def get(self, bucket: str, key: str) -> bytes:
        try:
            response = self._s3.get_object(Bucket=bucket, Key=key)
        except self._s3.exceptions.NoSuchKey:
            raise ObjectMissingError(f"s3://{bucket}/{key} does not exist") from None
        return bytes(response["Body"].read())

    def put(
        self, bucket: str, key: str, data: bytes, *, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        self._s3.put_object(
            Bucket=bucket, Key=key, Body=data, ContentType=content_type, Metadata=dict(metadata)
        )

    def copy(self, *, bucket: str, key: str, to_key: str, metadata: Mapping[str, str]) -> None:
        self._s3.copy_object(
            Bucket=bucket,
            Key=to_key,
            CopySource={"Bucket": bucket, "Key": key},
            Metadata=dict(metadata),
            MetadataDirective="REPLACE",
        )


class SqsRunQueue:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._sqs = client
        self._url = queue_url

    def receive(self, *, wait_seconds: int) -> ReceivedMessage | None:
        messages = self._sqs.receive_message(
            QueueUrl=self._url,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        if not messages:
            return None
        (message,) = messages
        return ReceivedMessage(
            message_id=message["MessageId"],
            receipt_handle=message["ReceiptHandle"],
            body=message["Body"],
            receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
        )

    def delete(self, message: ReceivedMessage) -> None:
        self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=message.receipt_handle)

    def set_visibility(self, message: ReceivedMessage, seconds: int) -> None:
        self._sqs.change_message_visibility(
            QueueUrl=self._url, ReceiptHandle=message.receipt_handle, VisibilityTimeout=seconds
        )


class SnsNotifier:
    def __init__(self, client: Any, topic_arn: str) -> None:
        self._sns = client
        self._topic = topic_arn

    def publish(self, *, subject: str, message: str) -> str:
        response = self._sns.publish(TopicArn=self._topic, Subject=subject, Message=message)
        return str(response["MessageId"])


def database_url_from_secret(client: Any, secret_arn: str) -> str:
    """A libpq connection string from an RDS secret (JSON: host, port, username, password, dbname).

    SSL is required unless the secret says otherwise (``sslmode``); libpq ignores it for Unix
    sockets.
    """
    raw = client.get_secret_value(SecretId=secret_arn)["SecretString"]
    try:
        secret = json.loads(raw)
        return make_conninfo(
            host=secret["host"],
            port=str(secret.get("port", 5432)),
            user=secret["username"],
            password=secret["password"],
            dbname=secret.get("dbname", "postgres"),
            sslmode=secret.get("sslmode", "require"),
            connect_timeout="10",
        )
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(
            f"secret {secret_arn} is not an RDS secret: JSON with host, username and password "
            f"(and optionally port, dbname, sslmode) is expected ({exc!r})"
        ) from None


class TaskProtection:
    """ECS task scale-in protection through the ECS agent; a no-op outside ECS."""

    def __init__(self, agent_uri: str | None, *, expires_in_minutes: int = 60) -> None:
        self._uri = agent_uri
        self._minutes = expires_in_minutes

    def set(self, enabled: bool) -> None:
        if self._uri is None:
            return
        body: dict[str, Any] = {"ProtectionEnabled": enabled}
        if enabled:
            body["ExpiresInMinutes"] = self._minutes
        request = urllib.request.Request(
            f"{self._uri}/task-protection/v1/state",
            data=json.dumps(body).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
        except OSError as exc:
            # Losing protection risks a scale-in mid-run, which redelivery repairs; not fatal.
            log.warning("could not set ECS task protection to %s: %s", enabled, exc)
