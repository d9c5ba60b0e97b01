"""The run message (produced by the batch counter) and the run notification (SNS)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

SUPPORTED_VERSION = 1
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class InvalidRunMessageError(ValueError):
    """A run message that cannot be processed, whatever the retry (a poison message)."""


@dataclass(frozen=True)
class ImageRef:
    key: str
    batch_id: str
    name: str


@dataclass(frozen=True)
class RunMessage:
    """A complete run: which objects of which bucket belong to which batch."""

    run_id: str
    bucket: str
    batches: dict[str, list[ImageRef]]
    images_per_batch: int
    batches_per_run: int
    dispatched_at: str

    @property
    def images(self) -> list[ImageRef]:
        return [ref for batch_id in sorted(self.batches) for ref in self.batches[batch_id]]

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
        raw_batches = data.get("batches")
        if not isinstance(raw_batches, dict) or not raw_batches:
            raise InvalidRunMessageError("the run message has no batches")
        prefix = f"uploads/{run_id}/"
        batches: dict[str, list[ImageRef]] = {}
        for batch_id, keys in raw_batches.items():
            if not _ID_RE.fullmatch(str(batch_id)) or not isinstance(keys, list):
                raise InvalidRunMessageError(f"batch {batch_id!r} is not a valid batch entry")
            refs = []
            for key in keys:
                if not isinstance(key, str) or not key.startswith(f"{prefix}{batch_id}/"):
                    raise InvalidRunMessageError(
                        f"key {key!r} of batch {batch_id!r} is not under {prefix}{batch_id}/"
                    )
                name = key[len(prefix) + len(batch_id) + 1 :]
                if not name or "/" in name:
                    raise InvalidRunMessageError(f"key {key!r} does not name an image")
                refs.append(ImageRef(key=key, batch_id=batch_id, name=name))
            batches[batch_id] = sorted(refs, key=lambda ref: ref.name)
        counts = {}
        for field in ("images_per_batch", "batches_per_run"):
            value = data.get(field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRunMessageError(f"{field} {value!r} is not a positive integer")
            counts[field] = value
        return cls(
            run_id=run_id,
            bucket=bucket,
            batches=batches,
            images_per_batch=counts["images_per_batch"],
            batches_per_run=counts["batches_per_run"],
            dispatched_at=str(data.get("dispatched_at", "")),
        )


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
