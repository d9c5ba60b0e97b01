"""The manifest every job writes last under its output prefix (``<prefix>manifest.json``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from batch_stats.jobs.base import JobStore

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def manifest_key(prefix: str) -> str:
    return f"{prefix}{MANIFEST_NAME}"


def present_objects(store: JobStore, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every object under ``prefix`` but the manifest: key and size, in key order."""
    return [
        {"key": key, "size": size}
        for key, size in store.list_keys(bucket, prefix)
        if key != manifest_key(prefix)
    ]


def write_manifest(
    store: JobStore,
    bucket: str,
    prefix: str,
    *,
    job_id: str,
    kind: str,
    status: str,
    params: Mapping[str, Any],
    counts: Mapping[str, int] | None = None,
    objects: Sequence[Mapping[str, Any]] | None = None,
    reason: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write the manifest (deterministic bytes for the same arguments); return its URI.

    ``objects`` (key, size and, where known, sha256) default to what is present under the
    prefix, as listed now.
    """
    listed = present_objects(store, bucket, prefix) if objects is None else list(objects)
    document = {
        "manifest_version": MANIFEST_VERSION,
        "job_id": job_id,
        "kind": kind,
        "status": status,
        "reason": reason,
        "params": dict(params),
        "counts": dict(counts or {}),
        "objects": listed,
        **dict(extra or {}),
    }
    data = json.dumps(document, indent=2, sort_keys=True).encode("utf-8")
    key = manifest_key(prefix)
    store.put(
        bucket,
        key,
        data,
        content_type="application/json",
        metadata={"job-id": job_id, "status": status},
    )
    return f"s3://{bucket}/{key}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
