"""Reading a run from the batch counter's tracking table (DynamoDB): its item, objects, reports.

The worker only reads (GetItem and Query, never Scan): a run message names the run and its shard,
and the shard's objects are paged from the table with one Query over the sort keys
``OBJ#<first_batch>/`` .. ``OBJ#<last_batch>/~`` (``~`` sorts after every allowed name character).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from batch_stats.worker.messages import ImageRef

_AFTER_NAMES = "~"


@dataclass(frozen=True)
class RunInfo:
    """What the worker needs from the run item."""

    run_id: str
    state: str
    image_count: int
    manifest_sha: str | None
    extras: dict[str, int] = field(default_factory=dict)
    expected_images: int | None = None
    expected_batches: int | None = None
    created_at: str | None = None
    last_upload_at: str | None = None
    shards: int = 0


@dataclass(frozen=True)
class Reported:
    """Uploads of the run that it does not process: bad keys and late uploads."""

    bad_keys: list[dict[str, str]]
    late_uploads: list[dict[str, str]]


class RunTracking(Protocol):
    def run_info(self, run_id: str) -> RunInfo | None: ...

    def objects(self, run_id: str, *, first_batch: str, last_batch: str) -> Iterator[ImageRef]: ...

    def batch_counts(self, run_id: str) -> dict[str, int]: ...

    def reported(self, run_id: str) -> Reported: ...


class DynamoRunTracking:
    """RunTracking on the tracking table, through a boto3 DynamoDB client."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def run_info(self, run_id: str) -> RunInfo | None:
        item = self._client.get_item(
            TableName=self._table,
            Key={"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": "RUN"}},
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            return None

        def text(name: str) -> str | None:
            value = item.get(name)
            return None if value is None else str(value["S"])

        def number(name: str) -> int | None:
            value = item.get(name)
            return None if value is None else int(value["N"])

        return RunInfo(
            run_id=run_id,
            state=text("state") or "OPEN",
            image_count=number("image_count") or 0,
            manifest_sha=text("manifest_sha"),
            extras={str(k): int(v) for k, v in json.loads(text("extras") or "{}").items()},
            expected_images=number("expected_images"),
            expected_batches=number("expected_batches"),
            created_at=text("created_at"),
            last_upload_at=text("last_upload_at"),
            shards=len(json.loads(text("plan") or "[]")),
        )

    def _query(
        self, run_id: str, condition: str, values: dict[str, Any], **options: Any
    ) -> Iterator[Any]:
        pages = self._client.get_paginator("query").paginate(
            TableName=self._table,
            KeyConditionExpression=f"pk = :pk AND {condition}",
            ExpressionAttributeValues={":pk": {"S": f"RUN#{run_id}"}, **values},
            ConsistentRead=True,
            **options,
        )
        for page in pages:
            yield from page["Items"]

    def objects(self, run_id: str, *, first_batch: str, last_batch: str) -> Iterator[ImageRef]:
        """The shard's objects, paged in sort-key order."""
        items = self._query(
            run_id,
            "sk BETWEEN :low AND :high",
            {
                ":low": {"S": f"OBJ#{first_batch}/"},
                ":high": {"S": f"OBJ#{last_batch}/{_AFTER_NAMES}"},
            },
            # Only what the worker reads: a third of each item's bytes on the wire.
            ProjectionExpression="sk, #key",
            ExpressionAttributeNames={"#key": "key"},
        )
        for item in items:
            batch_id, _, name = item["sk"]["S"][len("OBJ#") :].partition("/")
            yield ImageRef(key=item["key"]["S"], batch_id=batch_id, name=name)

    def batch_counts(self, run_id: str) -> dict[str, int]:
        return {
            item["sk"]["S"][len("BATCH#") :]: int(item["image_count"]["N"])
            for item in self._query(run_id, "begins_with(sk, :p)", {":p": {"S": "BATCH#"}})
        }

    def reported(self, run_id: str) -> Reported:
        bad = [
            {
                "key": item["key"]["S"],
                "reason": item["reason"]["S"],
                "copied_to": item.get("copied_to", {}).get("S", ""),
            }
            for item in self._query(run_id, "begins_with(sk, :p)", {":p": {"S": "BADKEY#"}})
        ]
        late = [
            {"key": item["key"]["S"], "reason": item["reason"]["S"]}
            for item in self._query(run_id, "begins_with(sk, :p)", {":p": {"S": "LATE#"}})
        ]
        return Reported(bad_keys=bad, late_uploads=late)

    def job_item(self, job_id: str) -> dict[str, str] | None:
        """The batch counter's item of a job (state, key, etag, size, created_at...)."""
        item = self._client.get_item(
            TableName=self._table,
            Key={"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "JOB"}},
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            return None
        return {str(name): str(next(iter(value.values()))) for name, value in item.items()}

    def job_duplicates(self, job_id: str) -> list[dict[str, str]]:
        """Documents uploaded under the job id after its first: key, etag and where kept."""
        items = self._client.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :dup)",
            ExpressionAttributeValues={":pk": {"S": f"JOB#{job_id}"}, ":dup": {"S": "DUP#"}},
            ConsistentRead=True,
        )["Items"]
        return [
            {name: str(item[name]["S"]) for name in ("key", "etag", "copied_to")} for item in items
        ]
