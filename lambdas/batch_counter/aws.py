"""DynamoDB and SQS adapters of the batch counter (single-table design).

Items, all in one table with partition key ``pk`` and sort key ``sk``:

========================  ==========  ==================================================
pk                        sk          attributes
========================  ==========  ==================================================
``RUN#<run_id>``          ``RUN``     state, image_count, complete_batches, created_at,
                                      dispatch_owner, dispatch_claimed_at, run_message_id
``RUN#<run_id>``          ``BATCH#b`` image_count, complete
``RUN#<run_id>``          ``OBJ#b/n`` key, bucket, size, etag, event_time, recorded_at
``BADKEY``                sha256      bucket, key, reason, first_seen, last_seen, times_seen
========================  ==========  ==================================================

Every item carries ``expires_at`` (epoch seconds, 30 days on) for an optional TTL.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from batch_counter.counter import ObjectCreated, RunState, RunStatus
from batch_counter.keys import UploadKey

TTL_DAYS = 30
BAD_KEYS_PARTITION = "BADKEY"


def _run_pk(run_id: str) -> dict[str, str]:
    return {"S": f"RUN#{run_id}"}


def _iso(now: datetime) -> dict[str, str]:
    return {"S": now.isoformat(timespec="milliseconds")}


def _expires(now: datetime) -> dict[str, str]:
    return {"N": str(int((now + timedelta(days=TTL_DAYS)).timestamp()))}


def _is_conditional_failure(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = response.get("Error", {}).get("Code")
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        reasons = response.get("CancellationReasons") or []
        codes = {reason.get("Code") for reason in reasons}
        # Cancelled only because a condition failed (not throttling or a conflict).
        if codes:
            return codes <= {"ConditionalCheckFailed", "None", None}
        return "ConditionalCheckFailed" in str(response.get("Error", {}).get("Message", ""))
    return False


class DynamoTrackingStore:
    """TrackingStore on a DynamoDB table, through a boto3 DynamoDB client."""

    def __init__(self, *, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def record_object(self, upload: UploadKey, obj: ObjectCreated, *, now: datetime) -> bool:
        pk = _run_pk(upload.run_id)
        one = {"N": "1"}
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": {
                                "pk": pk,
                                "sk": {"S": f"OBJ#{upload.batch_id}/{upload.name}"},
                                "key": {"S": upload.key},
                                "bucket": {"S": obj.bucket},
                                "size": {"N": str(obj.size)},
                                "etag": {"S": obj.etag},
                                "event_time": {"S": obj.event_time},
                                "recorded_at": _iso(now),
                                "expires_at": _expires(now),
                            },
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": {"pk": pk, "sk": {"S": f"BATCH#{upload.batch_id}"}},
                            "UpdateExpression": "ADD image_count :one SET expires_at = :exp",
                            "ExpressionAttributeValues": {":one": one, ":exp": _expires(now)},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": {"pk": pk, "sk": {"S": "RUN"}},
                            "UpdateExpression": (
                                "ADD image_count :one "
                                "SET #state = if_not_exists(#state, :open), "
                                "complete_batches = if_not_exists(complete_batches, :zero), "
                                "created_at = if_not_exists(created_at, :now), expires_at = :exp"
                            ),
                            "ExpressionAttributeNames": {"#state": "state"},
                            "ExpressionAttributeValues": {
                                ":one": one,
                                ":zero": {"N": "0"},
                                ":open": {"S": RunState.OPEN.value},
                                ":now": _iso(now),
                                ":exp": _expires(now),
                            },
                        }
                    },
                ]
            )
        except self._client.exceptions.TransactionCanceledException as exc:
            if _is_conditional_failure(exc):
                return False
            raise
        return True

    def complete_batch(self, run_id: str, batch_id: str, *, images_per_batch: int) -> bool:
        pk = _run_pk(run_id)
        batch_key = {"pk": pk, "sk": {"S": f"BATCH#{batch_id}"}}
        item = self._client.get_item(TableName=self._table, Key=batch_key, ConsistentRead=True).get(
            "Item"
        )
        if item is None or "complete" in item:
            return False
        if int(item.get("image_count", {"N": "0"})["N"]) < images_per_batch:
            return False
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": batch_key,
                            "UpdateExpression": "SET complete = :true",
                            "ConditionExpression": (
                                "attribute_not_exists(complete) AND image_count >= :n"
                            ),
                            "ExpressionAttributeValues": {
                                ":true": {"BOOL": True},
                                ":n": {"N": str(images_per_batch)},
                            },
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": {"pk": pk, "sk": {"S": "RUN"}},
                            "UpdateExpression": "ADD complete_batches :one",
                            "ExpressionAttributeValues": {":one": {"N": "1"}},
                        }
                    },
                ]
            )
        except self._client.exceptions.TransactionCanceledException as exc:
            if _is_conditional_failure(exc):
                return False
            raise
        return True

    def run_status(self, run_id: str) -> RunStatus | None:
        item = self._client.get_item(
            TableName=self._table,
            Key={"pk": _run_pk(run_id), "sk": {"S": "RUN"}},
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            return None
        return RunStatus(
            run_id=run_id,
            state=RunState(item["state"]["S"]),
            complete_batches=int(item.get("complete_batches", {"N": "0"})["N"]),
        )

    def claim_dispatch(
        self, run_id: str, *, owner: str, batches_per_run: int, now: datetime, lease_seconds: int
    ) -> bool:
        stale_before = now - timedelta(seconds=lease_seconds)
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"pk": _run_pk(run_id), "sk": {"S": "RUN"}},
                UpdateExpression=(
                    "SET #state = :dispatching, dispatch_owner = :owner, dispatch_claimed_at = :now"
                ),
                ConditionExpression=(
                    "complete_batches >= :b AND (#state = :open OR (#state = :dispatching AND "
                    "(dispatch_owner = :owner OR dispatch_claimed_at < :stale)))"
                ),
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":dispatching": {"S": RunState.DISPATCHING.value},
                    ":open": {"S": RunState.OPEN.value},
                    ":owner": {"S": owner},
                    ":now": _iso(now),
                    ":stale": _iso(stale_before),
                    ":b": {"N": str(batches_per_run)},
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def mark_dispatched(self, run_id: str, *, owner: str, message_id: str, now: datetime) -> None:
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"pk": _run_pk(run_id), "sk": {"S": "RUN"}},
                UpdateExpression=(
                    "SET #state = :dispatched, run_message_id = :mid, dispatched_at = :now"
                ),
                ConditionExpression="#state = :dispatching AND dispatch_owner = :owner",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":dispatched": {"S": RunState.DISPATCHED.value},
                    ":dispatching": {"S": RunState.DISPATCHING.value},
                    ":owner": {"S": owner},
                    ":mid": {"S": message_id},
                    ":now": _iso(now),
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            # Another record took the claim over after the lease; it sends (and marks) itself.
            return

    def run_objects(self, run_id: str) -> dict[str, list[str]]:
        batches: dict[str, list[str]] = {}
        paginator = self._client.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :obj)",
            ExpressionAttributeValues={":pk": _run_pk(run_id), ":obj": {"S": "OBJ#"}},
            ProjectionExpression="sk, #key",
            ExpressionAttributeNames={"#key": "key"},
            ConsistentRead=True,
        )
        for page in pages:
            for item in page["Items"]:
                batch_id = item["sk"]["S"][len("OBJ#") :].split("/", 1)[0]
                batches.setdefault(batch_id, []).append(item["key"]["S"])
        return batches

    def record_bad_key(self, *, bucket: str, key: str, reason: str, now: datetime) -> None:
        digest = hashlib.sha256(f"{bucket}/{key}".encode()).hexdigest()
        self._client.update_item(
            TableName=self._table,
            Key={"pk": {"S": BAD_KEYS_PARTITION}, "sk": {"S": digest}},
            UpdateExpression=(
                "SET #bucket = :bucket, #key = :key, reason = :reason, last_seen = :now, "
                "first_seen = if_not_exists(first_seen, :now), expires_at = :exp "
                "ADD times_seen :one"
            ),
            ExpressionAttributeNames={"#key": "key", "#bucket": "bucket"},
            ExpressionAttributeValues={
                ":bucket": {"S": bucket},
                ":key": {"S": key},
                ":reason": {"S": reason},
                ":now": _iso(now),
                ":exp": _expires(now),
                ":one": {"N": "1"},
            },
        )

    def bad_keys(self) -> list[dict[str, str]]:
        """Rejected keys (bucket, key, reason, first_seen), for operators and tests."""
        items = self._client.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": BAD_KEYS_PARTITION}},
            ConsistentRead=True,
        )["Items"]
        return [
            {name: item[name]["S"] for name in ("bucket", "key", "reason", "first_seen")}
            for item in items
        ]


class SqsRunQueue:
    """RunQueue on an SQS standard queue."""

    def __init__(self, *, client: Any, queue_url: str) -> None:
        self._client = client
        self._url = queue_url

    def send_run(self, body: str) -> str:
        response = self._client.send_message(QueueUrl=self._url, MessageBody=body)
        return str(response["MessageId"])
