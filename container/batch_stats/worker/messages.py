"""The run message (produced by the batch counter) and the run notification (SNS)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

SUPPORTED_VERSION = 2
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,123}\.png")
_MAX_SHARDS = 100_000


class InvalidRunMessageError(ValueError):
    """A run message that cannot be processed, whatever the retry (a poison message)."""


@dataclass(frozen=True)
class ImageRef:
    key: str
    batch_id: str
    name: str
    #: SHA-256 the run's manifest announces for the object (None: not announced).
    sha256: str | None = None


@dataclass(frozen=True)
class RunMessage:
    """One shard of a closed run, by reference: the worker reads its objects from the table.

    A shard is the whole batches ``first_batch`` .. ``last_batch`` in the order of the tracking
    table's object keys (``<batch_id>/``). ``failure`` set: the run was closed as failed (for
    example a contradictory manifest) and only needs to be reported.
    """

    run_id: str
    bucket: str
    shard: int
    shards: int
    first_batch: str
    last_batch: str
    images: int
    failure: str | None
    dispatched_at: str

    @classmethod
    def from_json(cls, body: str) -> RunMessage:
        """Parse and validate a message body; raise InvalidRunMessageError saying what is wrong."""
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            raise InvalidRunMessageError(f"the run message is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidRunMessageError("the run message is not a JSON object")
        if data.get("version") != SUPPORTED_VERSION:
            raise InvalidRunMessageError(
                f"run message version {data.get('version')!r} is not supported "
                f"(allowed: {SUPPORTED_VERSION})"
            )
        run_id = data.get("run_id")
        if not isinstance(run_id, str) or not _ID_RE.fullmatch(run_id):
            raise InvalidRunMessageError(f"run_id {run_id!r} is not a valid run id")
        bucket = data.get("bucket")
        if not isinstance(bucket, str) or not bucket:
            raise InvalidRunMessageError("the run message has no bucket")
        numbers = {}
        for name, low in (("shard", 0), ("shards", 1), ("images", 0)):
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidRunMessageError(f"{name} {value!r} is not an integer >= {low}")
            numbers[name] = value
        if not numbers["shard"] < numbers["shards"] <= _MAX_SHARDS:
            raise InvalidRunMessageError(
                f"shard {numbers['shard']} of {numbers['shards']} is not allowed "
                f"(0 <= shard < shards <= {_MAX_SHARDS})"
            )
        failure = data.get("failure")
        if failure is not None and not isinstance(failure, str):
            raise InvalidRunMessageError(f"failure {failure!r} is not a string or null")
        batches = []
        for name in ("first_batch", "last_batch"):
            value = data.get(name)
            if not isinstance(value, str) or not (
                _ID_RE.fullmatch(value) or (failure is not None and value == "")
            ):
                raise InvalidRunMessageError(f"{name} {value!r} is not a valid batch id")
            batches.append(value)
        return cls(
            run_id=run_id,
            bucket=bucket,
            shard=numbers["shard"],
            shards=numbers["shards"],
            first_batch=batches[0],
            last_batch=batches[1],
            images=numbers["images"],
            failure=failure,
            dispatched_at=str(data.get("dispatched_at", "")),
        )


@dataclass(frozen=True)
class ManifestEntry:
    images: int
    #: Image name -> announced SHA-256 or None; empty when the manifest lists no names.
    objects: dict[str, str | None]


def manifest_batches(data: bytes) -> dict[str, ManifestEntry]:
    """The batches of a manifest the batch counter accepted (see the README for the schema).

    Raises ValueError if the document is not such a manifest.
    """
    try:
        raw = json.loads(data)
        batches: dict[str, ManifestEntry] = {}
        for batch_id, entry in raw["batches"].items():
            if not _ID_RE.fullmatch(batch_id):
                raise ValueError(f"batch id {batch_id!r}")
            objects: dict[str, str | None] = {}
            for item in entry.get("objects") or []:
                name = item["name"]
                if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
                    raise ValueError(f"image name {name!r}")
                sha = item.get("sha256")
                objects[name] = None if sha is None else str(sha)
            batches[batch_id] = ManifestEntry(images=int(entry["images"]), objects=objects)
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a run manifest: {exc!r}") from None
    return batches


@dataclass(frozen=True)
class Rejection:
    """An image of a run that was not processed, and why."""

    key: str
    batch_id: str
    name: str
    reason: str
    detail: str
    copied_to: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "batch_id": self.batch_id,
            "name": self.name,
            "reason": self.reason,
            "detail": self.detail,
            "copied_to": self.copied_to,
        }
