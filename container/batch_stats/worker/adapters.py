"""The worker's ports (small protocols) and their AWS implementations (boto3).

The run logic in :mod:`batch_stats.worker.runner` talks only to these protocols; tests and local
mode use the same boto3 implementations against moto's server.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from psycopg.conninfo import make_conninfo

from batch_stats.worker.metrics import EmfMetrics

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

    def list_keys(self, bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size) of every object under ``prefix``, in key order (paged ListObjectsV2)."""
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield str(item["Key"]), int(item["Size"])


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

    def max_receives(self) -> int | None:
        """The queue's ``maxReceiveCount`` (receives before its DLQ takes a message); None
        without a redrive policy."""
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self._url, AttributeNames=["RedrivePolicy"]
        ).get("Attributes", {})
        if "RedrivePolicy" not in attributes:
            return None
        return int(json.loads(attributes["RedrivePolicy"])["maxReceiveCount"])

    def send(self, body: str, *, deduplication_id: str, group_id: str) -> str:
        """Send a message to the (FIFO) queue (a job's shard); return its message id."""
        response = self._sqs.send_message(
            QueueUrl=self._url,
            MessageBody=body,
            MessageDeduplicationId=deduplication_id,
            MessageGroupId=group_id,
        )
        return str(response["MessageId"])


class SnsNotifier:
    def __init__(self, client: Any, topic_arn: str) -> None:
        self._sns = client
        self._topic = topic_arn

    def publish(self, *, subject: str, message: str) -> str:
        response = self._sns.publish(TopicArn=self._topic, Subject=subject, Message=message)
        return str(response["MessageId"])


#: Encrypt and check that the server is the one the secret names (not only encrypt).
DEFAULT_SSLMODE = "verify-full"


def database_url_from_secret(client: Any, secret_arn: str) -> str:
    """A libpq connection string from an RDS secret (JSON: host, port, username, password, dbname).

    The server's certificate is verified (``sslmode=verify-full``: signed by a CA in
    ``PGSSLROOTCERT``, the RDS bundle in the image, and issued for the host) unless the secret
    says otherwise (``sslmode``); libpq ignores SSL for Unix sockets (the local mode).
    """
    # AWSCURRENT is what a finished rotation promotes (named explicitly: moto's default
    # version does not follow a stage moved by UpdateSecretVersionStage).
    raw = client.get_secret_value(SecretId=secret_arn, VersionStage="AWSCURRENT")["SecretString"]
    return conninfo_from_secret(raw, source=f"secret {secret_arn}")


def conninfo_from_secret(raw: str, *, source: str) -> str:
    """A libpq connection string from the text of an RDS secret (see above)."""
    try:
        secret = json.loads(raw)
        return make_conninfo(
            host=secret["host"],
            port=str(secret.get("port", 5432)),
            user=secret["username"],
            password=secret["password"],
            dbname=secret.get("dbname", "postgres"),
            sslmode=secret.get("sslmode", DEFAULT_SSLMODE),
            connect_timeout="10",
        )
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{source} is not an RDS secret: JSON with host, username and password "
            f"(and optionally port, dbname, sslmode) is expected ({type(exc).__name__})"
        ) from None


class TaskProtection:
    """ECS task scale-in protection through the ECS agent; a no-op outside ECS.

    The agent calls ``ecs:UpdateTaskProtection`` with the task role's credentials and answers
    200 with ``{"protection": {...}}`` when ECS applied it, 200 with ``{"failure": {...}}`` when
    ECS refused it for the task, and an error status with ``{"error": {"Code", "Message"}}``
    (``AccessDeniedException`` when the task role lacks the permission). Every refusal is
    logged and counted (``TaskProtectionFailures``); it is not fatal: a run stopped by a
    scale-in is delivered again.
    """

    def __init__(
        self,
        agent_uri: str | None,
        *,
        expires_in_minutes: int = 60,
        metrics: EmfMetrics | None = None,
        timeout_seconds: float = 5.0,
    ) -> None:
        if not 1 <= expires_in_minutes <= 2880:
            raise ValueError(
                f"expires_in_minutes must be 1-2880 (the ECS limit), got {expires_in_minutes!r}"
            )
        self._uri = agent_uri
        self._minutes = expires_in_minutes
        self._metrics = metrics
        self._timeout = timeout_seconds

    def set(self, enabled: bool) -> bool:
        """Ask for protection on or off; True when ECS confirmed it (always True outside ECS)."""
        if self._uri is None:
            return True
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
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                status, raw = int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except OSError as exc:
            return self._refused(enabled, f"the ECS agent could not be reached: {exc}")
        problem = protection_problem(status, raw, enabled=enabled)
        if problem is not None:
            return self._refused(enabled, problem)
        return True

    def _refused(self, enabled: bool, problem: str) -> bool:
        log.warning("ECS task protection %s was refused: %s", "on" if enabled else "off", problem)
        if self._metrics is not None:
            self._metrics.emit({"TaskProtectionFailures": 1}, protection="on" if enabled else "off")
        return False


def protection_problem(status: int, raw: bytes, *, enabled: bool) -> str | None:
    """What is wrong with the agent's answer to a protection request (None: applied)."""
    try:
        answer = json.loads(raw or b"{}")
    except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        return f"HTTP {status} with a body that is not a JSON object: {raw[:200]!r}"
    if isinstance(answer.get("error"), dict):
        error = answer["error"]
        return f"HTTP {status} {error.get('Code', '?')}: {error.get('Message', '')}"
    if isinstance(answer.get("failure"), dict):
        failure = answer["failure"]
        return f"{failure.get('Reason', '?')}: {failure.get('Detail') or ''}".rstrip(": ")
    if status >= 300:
        return f"HTTP {status}: {raw[:200]!r}"
    protection = answer.get("protection")
    if not isinstance(protection, dict):
        return f"HTTP {status} without a 'protection' object: {raw[:200]!r}"
    if protection.get("ProtectionEnabled") is not enabled:
        return f"the task's protection is {protection.get('ProtectionEnabled')!r}, not {enabled!r}"
    return None
