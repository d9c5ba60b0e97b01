"""DynamoDB and SQS adapters of the batch counter (single-table design).

Items, all in one table with partition key ``pk`` and sort key ``sk``:

============================  ==============  ==============================================
pk                            sk              attributes
============================  ==============  ==============================================
``RUN#<run_id>``              ``RUN``         state, image_count, created_at, last_upload_at,
                                              check_scheduled, incomplete_at, manifest_sha,
                                              expected_images, expected_batches, bucket,
                                              plan (JSON), failure, extras (JSON),
                                              dispatching_at, dispatched_at, late_count,
                                              last_late_at, late_check_scheduled,
                                              late_reported, late_reported_at
``RUN#<run_id>``              ``BATCH#b``     image_count
``RUN#<run_id>``              ``OBJ#b/n``     key, bucket, size, etag, event_time, recorded_at
``RUN#<run_id>``              ``LATE#<key>``  key, reason, recorded_at (uploads the run no
                                              longer takes)
``RUN#<run_id>``              ``BADKEY#sha``  bad-key uploads whose key names this run
``BADKEY``                    sha256          bucket, key, reason, copied_to, first_seen,
                                              last_seen, times_seen (every bad key)
``JOB#<job_id>``              ``JOB``         state, bucket, key, etag, size, created_at,
                                              dispatched_at (the first document of the id)
``JOB#<job_id>``              ``DUP#<etag>``  key, etag, size, copied_to, recorded_at (a
                                              different document uploaded under the id)
============================  ==============  ==============================================

Every item carries ``expires_at`` (epoch seconds, 30 days on) for an optional TTL.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from batch_counter.counter import (
    JobClaim,
    JobState,
    ManifestRecorded,
    ObjectCreated,
    Recorded,
    RunSnapshot,
    RunState,
    Shard,
    check_event,
)
from batch_counter.keys import UploadKey
from batch_counter.manifest import Manifest

TTL_DAYS = 30
BAD_KEYS_PARTITION = "BADKEY"


def _run_pk(run_id: str) -> dict[str, str]:
    return {"S": f"RUN#{run_id}"}


def _iso(now: datetime) -> dict[str, str]:
    return {"S": now.isoformat(timespec="milliseconds")}


def _expires(now: datetime) -> dict[str, str]:
    return {"N": str(int((now + timedelta(days=TTL_DAYS)).timestamp()))}


def _cancellation_codes(exc: Exception) -> list[str | None]:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return []
    return [reason.get("Code") for reason in response.get("CancellationReasons") or []]


def _snapshot(run_id: str, item: Mapping[str, Any]) -> RunSnapshot:
    def text(name: str) -> str | None:
        value = item.get(name)
        return None if value is None else str(value["S"])

    def number(name: str) -> int | None:
        value = item.get(name)
        return None if value is None else int(value["N"])

    plan = tuple(Shard(*entry) for entry in json.loads(text("plan") or "[]"))
    last_upload = text("last_upload_at")
    last_late = text("last_late_at")
    return RunSnapshot(
        run_id=run_id,
        state=RunState(text("state") or RunState.OPEN.value),
        image_count=number("image_count") or 0,
        manifest_sha=text("manifest_sha"),
        expected_images=number("expected_images"),
        failure=text("failure"),
        plan=plan,
        bucket=text("bucket"),
        last_upload_at=None if last_upload is None else datetime.fromisoformat(last_upload),
        check_scheduled="check_scheduled" in item,
        late_count=number("late_count") or 0,
        late_reported=number("late_reported") or 0,
        last_late_at=None if last_late is None else datetime.fromisoformat(last_late),
        late_check_scheduled="late_check_scheduled" in item,
        late_reported_at=text("late_reported_at"),
    )


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

    def _run_key(self, run_id: str) -> dict[str, dict[str, str]]:
        return {"pk": _run_pk(run_id), "sk": {"S": "RUN"}}

    def _object_put(
        self, upload: UploadKey, obj: ObjectCreated, *, now: datetime
    ) -> dict[str, Any]:
        return {
            "TableName": self._table,
            "Item": {
                "pk": _run_pk(upload.run_id),
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

    def _batch_update(
        self, run_id: str, batch_id: str, count: int, *, now: datetime
    ) -> dict[str, Any]:
        return {
            "TableName": self._table,
            "Key": {"pk": _run_pk(run_id), "sk": {"S": f"BATCH#{batch_id}"}},
            "UpdateExpression": "ADD image_count :n SET expires_at = :exp",
            "ExpressionAttributeValues": {":n": {"N": str(count)}, ":exp": _expires(now)},
        }

    def _run_update(self, run_id: str, count: int, *, now: datetime) -> dict[str, Any]:
        """Add ``count`` uploads to the run, on condition that it is OPEN (or new)."""
        return {
            "TableName": self._table,
            "Key": self._run_key(run_id),
            "UpdateExpression": (
                "ADD image_count :n "
                "SET #state = if_not_exists(#state, :open), "
                "created_at = if_not_exists(created_at, :now), "
                "last_upload_at = :now, expires_at = :exp"
            ),
            "ConditionExpression": "attribute_not_exists(#state) OR #state = :open",
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": {
                ":n": {"N": str(count)},
                ":open": {"S": RunState.OPEN.value},
                ":now": _iso(now),
                ":exp": _expires(now),
            },
        }

    def record_object(self, upload: UploadKey, obj: ObjectCreated, *, now: datetime) -> Recorded:
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {"Put": self._object_put(upload, obj, now=now)},
                    {"Update": self._batch_update(upload.run_id, upload.batch_id, 1, now=now)},
                    {"Update": self._run_update(upload.run_id, 1, now=now)},
                ]
            )
        except self._client.exceptions.TransactionCanceledException as exc:
            if not _is_conditional_failure(exc):
                raise
            codes = _cancellation_codes(exc)
            if codes and codes[0] != "ConditionalCheckFailed":
                return Recorded.LATE  # new object, but the run no longer takes uploads
            return Recorded.DUPLICATE
        return Recorded.NEW

    def record_objects(
        self, run_id: str, uploads: Sequence[tuple[UploadKey, ObjectCreated]], *, now: datetime
    ) -> bool:
        per_batch: dict[str, int] = {}
        actions: list[dict[str, Any]] = []
        for upload, obj in uploads:
            per_batch[upload.batch_id] = per_batch.get(upload.batch_id, 0) + 1
            actions.append({"Put": self._object_put(upload, obj, now=now)})
        for batch_id, count in per_batch.items():
            actions.append({"Update": self._batch_update(run_id, batch_id, count, now=now)})
        actions.append({"Update": self._run_update(run_id, len(uploads), now=now)})
        try:
            self._client.transact_write_items(TransactItems=actions)
        except self._client.exceptions.TransactionCanceledException as exc:
            if not _is_conditional_failure(exc):
                raise
            return False
        return True

    def get_run(self, run_id: str) -> RunSnapshot | None:
        item = self._client.get_item(
            TableName=self._table, Key=self._run_key(run_id), ConsistentRead=True
        ).get("Item")
        return None if item is None else _snapshot(run_id, item)

    def batch_counts(self, run_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        pages = self._client.get_paginator("query").paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :batch)",
            ExpressionAttributeValues={":pk": _run_pk(run_id), ":batch": {"S": "BATCH#"}},
            ProjectionExpression="sk, image_count",
            ConsistentRead=True,
        )
        for page in pages:
            for item in page["Items"]:
                counts[item["sk"]["S"][len("BATCH#") :]] = int(item["image_count"]["N"])
        return counts

    def record_manifest(
        self, run_id: str, manifest: Manifest, *, bucket: str, now: datetime
    ) -> ManifestRecorded:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._run_key(run_id),
                UpdateExpression=(
                    "SET manifest_sha = :sha, expected_images = :images, "
                    "expected_batches = :batches, #bucket = :bucket, "
                    "#state = if_not_exists(#state, :open), "
                    "image_count = if_not_exists(image_count, :zero), "
                    "created_at = if_not_exists(created_at, :now), last_upload_at = :now, "
                    "expires_at = :exp"
                ),
                ConditionExpression=(
                    "(attribute_not_exists(#state) OR #state = :open) AND "
                    "(attribute_not_exists(manifest_sha) OR manifest_sha = :sha)"
                ),
                ExpressionAttributeNames={"#state": "state", "#bucket": "bucket"},
                ExpressionAttributeValues={
                    ":sha": {"S": manifest.sha256},
                    ":images": {"N": str(manifest.total_images)},
                    ":batches": {"N": str(len(manifest.batches))},
                    ":bucket": {"S": bucket},
                    ":open": {"S": RunState.OPEN.value},
                    ":zero": {"N": "0"},
                    ":now": _iso(now),
                    ":exp": _expires(now),
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            run = self.get_run(run_id)
            if run is None:
                raise
            if run.manifest_sha not in (None, manifest.sha256):
                return ManifestRecorded.DIFFERENT
            if run.manifest_sha == manifest.sha256:
                return ManifestRecorded.SAME
            return ManifestRecorded.CLOSED
        return ManifestRecorded.RECORDED

    def claim_dispatch(
        self,
        run_id: str,
        *,
        seen_images: int | None,
        plan: Sequence[Shard],
        failure: str | None,
        extras: Mapping[str, int],
        bucket: str,
        now: datetime,
    ) -> RunSnapshot | None:
        values: dict[str, dict[str, str]] = {
            ":dispatching": {"S": RunState.DISPATCHING.value},
            ":open": {"S": RunState.OPEN.value},
            ":plan": {"S": json.dumps([[s.first_batch, s.last_batch, s.images] for s in plan])},
            ":extras": {"S": json.dumps(dict(sorted(extras.items())))},
            ":bucket": {"S": bucket},
            ":now": _iso(now),
            ":zero": {"N": "0"},
            ":exp": _expires(now),
        }
        update = (
            "SET #state = :dispatching, #plan = :plan, extras = :extras, #bucket = :bucket, "
            "dispatching_at = :now, image_count = if_not_exists(image_count, :zero), "
            "created_at = if_not_exists(created_at, :now), expires_at = :exp"
        )
        if seen_images is None:
            condition = "attribute_not_exists(#state) OR #state = :open"
        else:
            condition = "#state = :open AND image_count = :seen"
            values[":seen"] = {"N": str(seen_images)}
        if failure is not None:
            update += ", failure = :failure"
            values[":failure"] = {"S": failure}
        try:
            item = self._client.update_item(
                TableName=self._table,
                Key=self._run_key(run_id),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#state": "state", "#plan": "plan", "#bucket": "bucket"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except self._client.exceptions.ConditionalCheckFailedException:
            return None
        return _snapshot(run_id, item)

    def mark_dispatched(self, run_id: str, *, now: datetime) -> None:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._run_key(run_id),
                UpdateExpression="SET #state = :dispatched, dispatched_at = :now",
                ConditionExpression="#state = :dispatching",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":dispatched": {"S": RunState.DISPATCHED.value},
                    ":dispatching": {"S": RunState.DISPATCHING.value},
                    ":now": _iso(now),
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return  # already DISPATCHED by another record

    def record_late(self, run_id: str, *, key: str, reason: str, now: datetime) -> bool:
        late = {
            "TableName": self._table,
            "Item": {
                "pk": _run_pk(run_id),
                "sk": {"S": f"LATE#{key}"},
                "key": {"S": key},
                "reason": {"S": reason},
                "recorded_at": _iso(now),
                "expires_at": _expires(now),
            },
            "ConditionExpression": "attribute_not_exists(pk)",
        }
        count = {
            "TableName": self._table,
            "Key": self._run_key(run_id),
            "UpdateExpression": "ADD late_count :one SET last_late_at = :now",
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeValues": {":one": {"N": "1"}, ":now": _iso(now)},
        }
        try:
            self._client.transact_write_items(TransactItems=[{"Put": late}, {"Update": count}])
        except self._client.exceptions.TransactionCanceledException as exc:
            if not _is_conditional_failure(exc):
                raise
            codes = _cancellation_codes(exc)
            if codes and codes[0] == "ConditionalCheckFailed":
                return False  # kept already
            # No run item to count it on: keep the upload alone.
            try:
                self._client.put_item(**late)
            except self._client.exceptions.ConditionalCheckFailedException:
                return False
        return True

    def late_uploads(self, run_id: str) -> list[dict[str, str]]:
        return [
            {
                "key": item["key"]["S"],
                "reason": item["reason"]["S"],
                "recorded_at": item["recorded_at"]["S"],
            }
            for item in self._query_prefix(run_id, "LATE#")
        ]

    def mark_late_check_scheduled(self, run_id: str) -> None:
        self._client.update_item(
            TableName=self._table,
            Key=self._run_key(run_id),
            UpdateExpression="SET late_check_scheduled = :yes",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":yes": {"BOOL": True}},
        )

    def claim_late_report(
        self, run_id: str, *, late_count: int, last_late_at: datetime, reported_at: str
    ) -> bool:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._run_key(run_id),
                UpdateExpression=(
                    "SET late_reported = :count, late_reported_at = :at REMOVE late_check_scheduled"
                ),
                ConditionExpression="late_count = :count AND last_late_at = :last",
                ExpressionAttributeValues={
                    ":count": {"N": str(late_count)},
                    ":last": _iso(last_late_at),
                    ":at": {"S": reported_at},
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def release_late_report(self, run_id: str, *, late_reported: int, reported_at: str) -> None:
        self._client.update_item(
            TableName=self._table,
            Key=self._run_key(run_id),
            UpdateExpression=(
                "SET late_reported = :count, late_reported_at = :at, late_check_scheduled = :yes"
            ),
            ExpressionAttributeValues={
                ":count": {"N": str(late_reported)},
                ":at": {"S": reported_at},
                ":yes": {"BOOL": True},
            },
        )

    def mark_check_scheduled(self, run_id: str) -> None:
        self._client.update_item(
            TableName=self._table,
            Key=self._run_key(run_id),
            UpdateExpression="SET check_scheduled = :yes",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":yes": {"BOOL": True}},
        )

    def mark_incomplete(self, run_id: str, *, last_upload_at: datetime, now: datetime) -> bool:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._run_key(run_id),
                UpdateExpression="SET #state = :incomplete, incomplete_at = :now",
                ConditionExpression="#state = :open AND last_upload_at = :last",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":incomplete": {"S": RunState.INCOMPLETE.value},
                    ":open": {"S": RunState.OPEN.value},
                    ":last": _iso(last_upload_at),
                    ":now": _iso(now),
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def reopen(self, run_id: str) -> None:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._run_key(run_id),
                UpdateExpression="SET #state = :open REMOVE incomplete_at",
                ConditionExpression="#state = :incomplete",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":incomplete": {"S": RunState.INCOMPLETE.value},
                    ":open": {"S": RunState.OPEN.value},
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return

    def _query_prefix(self, run_id: str, prefix: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        pages = self._client.get_paginator("query").paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": _run_pk(run_id), ":prefix": {"S": prefix}},
            ConsistentRead=True,
        )
        for page in pages:
            items.extend(page["Items"])
        return items

    def reported(self, run_id: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        bad = [
            {
                "key": item["key"]["S"],
                "reason": item["reason"]["S"],
                "copied_to": item.get("copied_to", {}).get("S", ""),
            }
            for item in self._query_prefix(run_id, "BADKEY#")
        ]
        late = [
            {"key": item["key"]["S"], "reason": item["reason"]["S"]}
            for item in self._query_prefix(run_id, "LATE#")
        ]
        return bad, late

    def run_objects(self, run_id: str) -> dict[str, list[str]]:
        """Keys of the run's recorded objects, by batch id (for operators and tests)."""
        batches: dict[str, list[str]] = {}
        pages = self._client.get_paginator("query").paginate(
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

    def record_bad_key(
        self,
        *,
        run_id: str | None,
        bucket: str,
        key: str,
        reason: str,
        copied_to: str | None,
        now: datetime,
    ) -> None:
        digest = hashlib.sha256(f"{bucket}/{key}".encode("utf-8", "surrogatepass")).hexdigest()
        values = {
            ":bucket": {"S": bucket},
            ":key": {"S": key},
            ":reason": {"S": reason},
            ":copied": {"S": copied_to or ""},
            ":now": _iso(now),
            ":exp": _expires(now),
            ":one": {"N": "1"},
        }
        update = (
            "SET #bucket = :bucket, #key = :key, reason = :reason, copied_to = :copied, "
            "last_seen = :now, first_seen = if_not_exists(first_seen, :now), expires_at = :exp "
            "ADD times_seen :one"
        )
        names = {"#key": "key", "#bucket": "bucket"}
        keys = [{"pk": {"S": BAD_KEYS_PARTITION}, "sk": {"S": digest}}]
        if run_id is not None:
            keys.append({"pk": _run_pk(run_id), "sk": {"S": f"BADKEY#{digest}"}})
        for item_key in keys:
            self._client.update_item(
                TableName=self._table,
                Key=item_key,
                UpdateExpression=update,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )

    def bad_keys(self) -> list[dict[str, str]]:
        """Rejected keys (bucket, key, reason, first_seen, copied_to), for operators and tests."""
        items = self._client.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": BAD_KEYS_PARTITION}},
            ConsistentRead=True,
        )["Items"]
        return [
            {
                name: item[name]["S"]
                for name in ("bucket", "key", "reason", "first_seen", "copied_to")
            }
            for item in items
        ]

    # --- jobs -------------------------------------------------------------------------------

    def _job_key(self, job_id: str) -> dict[str, dict[str, str]]:
        return {"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "JOB"}}

    def claim_job(self, job_id: str, obj: ObjectCreated, *, now: datetime) -> JobClaim:
        item = {
            **self._job_key(job_id),
            "state": {"S": JobState.DISPATCHING.value},
            "bucket": {"S": obj.bucket},
            "key": {"S": obj.key},
            "etag": {"S": obj.etag},
            "size": {"N": str(obj.size)},
            "event_time": {"S": obj.event_time},
            "created_at": _iso(now),
            "expires_at": _expires(now),
        }
        try:
            self._client.put_item(
                TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
            new = True
        except self._client.exceptions.ConditionalCheckFailedException:
            found = self._client.get_item(
                TableName=self._table, Key=self._job_key(job_id), ConsistentRead=True
            ).get("Item")
            if found is None:  # expired between the two calls: claim again
                return self.claim_job(job_id, obj, now=now)
            item, new = found, False
        return JobClaim(
            job_id=job_id,
            state=JobState(item["state"]["S"]),
            etag=item["etag"]["S"],
            size=int(item["size"]["N"]),
            key=item["key"]["S"],
            bucket=item["bucket"]["S"],
            new=new,
        )

    def mark_job_dispatched(self, job_id: str, *, now: datetime) -> None:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._job_key(job_id),
                UpdateExpression="SET #state = :dispatched, dispatched_at = :now",
                ConditionExpression="#state = :dispatching",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":dispatched": {"S": JobState.DISPATCHED.value},
                    ":dispatching": {"S": JobState.DISPATCHING.value},
                    ":now": _iso(now),
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return

    def record_job_duplicate(
        self, job_id: str, obj: ObjectCreated, *, copied_to: str | None, now: datetime
    ) -> bool:
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": f"JOB#{job_id}"},
                    "sk": {"S": f"DUP#{obj.etag}"},
                    "key": {"S": obj.key},
                    "etag": {"S": obj.etag},
                    "size": {"N": str(obj.size)},
                    "copied_to": {"S": copied_to or ""},
                    "recorded_at": _iso(now),
                    "expires_at": _expires(now),
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def job_item(self, job_id: str) -> dict[str, str] | None:
        """The job's item as text (state, key, etag, size...), for operators and tests."""
        item = self._client.get_item(
            TableName=self._table, Key=self._job_key(job_id), ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        return {name: next(iter(value.values())) for name, value in item.items()}

    def job_duplicates(self, job_id: str) -> list[dict[str, str]]:
        """Documents uploaded under the job id after its first (key, etag, copied_to)."""
        items = self._client.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :dup)",
            ExpressionAttributeValues={":pk": {"S": f"JOB#{job_id}"}, ":dup": {"S": "DUP#"}},
            ConsistentRead=True,
        )["Items"]
        return [{name: item[name]["S"] for name in ("key", "etag", "copied_to")} for item in items]


class SqsRunQueue:
    """RunQueue on an SQS FIFO queue: one message group per shard, deduplication by shard id."""

    def __init__(self, *, client: Any, queue_url: str) -> None:
        self._client = client
        self._url = queue_url

    def send_run(self, body: str, *, deduplication_id: str, group_id: str) -> str:
        response = self._client.send_message(
            QueueUrl=self._url,
            MessageBody=body,
            MessageDeduplicationId=deduplication_id,
            MessageGroupId=group_id,
        )
        return str(response["MessageId"])


class S3Objects:
    """ObjectStore on S3 (manifest reads, copies of bad-key uploads under ``rejected/``)."""

    def __init__(self, *, client: Any) -> None:
        self._client = client

    def get(self, bucket: str, key: str) -> bytes | None:
        try:
            response = self._client.get_object(Bucket=bucket, Key=key)
        except self._client.exceptions.NoSuchKey:
            return None
        return bytes(response["Body"].read())

    def copy(self, *, bucket: str, key: str, to_key: str, metadata: Mapping[str, str]) -> bool:
        try:
            self._client.copy_object(
                Bucket=bucket,
                Key=to_key,
                CopySource={"Bucket": bucket, "Key": key},
                Metadata=dict(metadata),
                MetadataDirective="REPLACE",
            )
        except self._client.exceptions.NoSuchKey:
            return False
        except self._client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return False
            raise
        return True


def schedule_name(run_id: str, at: datetime) -> str:
    """The check's schedule name: the run (hashed: names are 1-64 of ``[0-9A-Za-z_.-]``) and
    the second it is due, so that checks racing for the same run and time make one schedule."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:32]
    return f"run-{digest}-{math.ceil(at.timestamp())}"


def at_expression(at: datetime) -> str:
    """An EventBridge Scheduler one-time expression (UTC, whole seconds, rounded up)."""
    moment = datetime.fromtimestamp(math.ceil(at.timestamp()), UTC)
    return f"at({moment.strftime('%Y-%m-%dT%H:%M:%S')})"


class SchedulerRunChecks:
    """RunChecks on EventBridge Scheduler: a one-time schedule per check, deleted once it ran,
    invoking ``target_arn`` (this function) with :func:`batch_counter.counter.check_event`."""

    def __init__(self, *, client: Any, group_name: str, role_arn: str, target_arn: str) -> None:
        self._client = client
        self._group = group_name
        self._role = role_arn
        self._target = target_arn

    def schedule_check(self, run_id: str, *, at: datetime) -> None:
        try:
            self._client.create_schedule(
                Name=schedule_name(run_id, at),
                GroupName=self._group,
                ScheduleExpression=at_expression(at),
                ScheduleExpressionTimezone="UTC",
                FlexibleTimeWindow={"Mode": "OFF"},
                ActionAfterCompletion="DELETE",
                Target={
                    "Arn": self._target,
                    "RoleArn": self._role,
                    "Input": json.dumps(check_event(run_id)),
                    "RetryPolicy": {"MaximumRetryAttempts": 10},
                },
            )
        except self._client.exceptions.ConflictException:
            return  # the same check exists already


class SnsNotifier:
    """Notifier on the SNS notifications topic."""

    def __init__(self, *, client: Any, topic_arn: str) -> None:
        self._client = client
        self._topic = topic_arn

    def publish(self, *, subject: str, message: str) -> None:
        self._client.publish(TopicArn=self._topic, Subject=subject[:100], Message=message)
