"""``batch-stats status RUN_ID``: a run's state from the tracking table and its results.

Reads only: the run item, its batch counts, bad keys and late uploads (GetItem and Query on the
tracking table), the manifest (S3, when the run has one) and the run's rows in PostgreSQL.
"""

from __future__ import annotations

import json
from typing import Any

from batch_stats.worker.adapters import ObjectMissingError, ObjectStore
from batch_stats.worker.database import ResultsDatabase
from batch_stats.worker.messages import manifest_batches
from batch_stats.worker.tracking import RunTracking


def run_status(
    run_id: str,
    *,
    tracking: RunTracking,
    objects: ObjectStore | None,
    raw_bucket: str | None,
    database: ResultsDatabase | None,
) -> dict[str, Any]:
    """Everything known about the run, as a JSON-ready mapping (``found`` False: unknown run)."""
    info = tracking.run_info(run_id)
    if info is None:
        return {"run_id": run_id, "found": False}
    received = tracking.batch_counts(run_id)
    expected: dict[str, int] = {}
    if info.manifest_sha is not None and objects is not None and raw_bucket is not None:
        try:
            data = objects.get(raw_bucket, f"uploads/{run_id}/_manifest.json")
            expected = {b: e.images for b, e in manifest_batches(data).items()}
        except (ObjectMissingError, ValueError):
            expected = {}
    reported = tracking.reported(run_id)
    status: dict[str, Any] = {
        "run_id": run_id,
        "found": True,
        "state": info.state,
        "manifest": info.manifest_sha is not None,
        "images_received": info.image_count,
        "images_expected": info.expected_images,
        "created_at": info.created_at,
        "last_upload_at": info.last_upload_at,
        "batches": [
            {
                "batch_id": batch_id,
                "expected": expected.get(batch_id),
                "received": received.get(batch_id, 0),
            }
            for batch_id in sorted(set(received) | set(expected))
        ],
        "extra_batches": info.extras,
        "shards": info.shards,
        "bad_keys": reported.bad_keys,
        "late_uploads": reported.late_uploads,
        "results": None,
    }
    if database is not None:
        status["results"] = _results(database, run_id)
    return status


def _results(database: ResultsDatabase, run_id: str) -> dict[str, Any] | None:
    row = database.run_row(run_id)
    if row is None:
        return None
    totals = database.run_totals(run_id)
    return {
        **row,
        "shards_done": totals.shards_done,
        "rejected": [r.as_dict() for r in database.rejections(run_id)],
    }


def format_status(status: dict[str, Any]) -> str:
    """The status as a few readable lines."""
    if not status["found"]:
        return f"run {status['run_id']}: unknown (no upload recorded)"
    expected = status["images_expected"]
    lines = [
        f"run {status['run_id']}: {status['state']}"
        + (" (manifest)" if status["manifest"] else " (stack defaults, no manifest)"),
        f"  images received {status['images_received']}"
        + (f" of {expected} announced" if expected is not None else "")
        + f"; last upload {status['last_upload_at']}",
        "  batch                          expected  received",
    ]
    for batch in status["batches"]:
        shown = "-" if batch["expected"] is None else str(batch["expected"])
        lines.append(f"  {batch['batch_id']:<30} {shown:>8}  {batch['received']:>8}")
    for batch_id, count in status["extra_batches"].items():
        lines.append(f"  extra batch {batch_id}: {count} objects (not in the manifest)")
    for entry in status["bad_keys"]:
        lines.append(f"  bad key {entry['key']!r}: {entry['reason']} -> {entry['copied_to']}")
    for entry in status["late_uploads"]:
        lines.append(f"  late upload {entry['key']!r}: {entry['reason']}")
    results = status["results"]
    if results is None:
        lines.append("  results: none yet")
    else:
        lines.append(
            f"  results: {results['status']}, shards {results['shards_done']} of "
            f"{results['shards']} done, {results['images_processed']} images processed, "
            f"{results['images_rejected']} rejected, notified: {results['notified_status']}"
        )
        lines.append(f"  parquet: {results['parquet_uri']}")
        if results["error"]:
            lines.append(f"  error: {results['error']}")
        for rejection in results["rejected"]:
            lines.append(f"  rejected {rejection['key']}: {rejection['reason']}")
    return "\n".join(lines)


def job_status(
    job_id: str,
    *,
    database: ResultsDatabase | None,
    tracking: Any | None,
) -> dict[str, Any]:
    """A job's state: the counter's item (dispatch, duplicates) and the worker's ``jobs`` row.

    ``found`` is False when neither knows the job.
    """
    item = tracking.job_item(job_id) if tracking is not None else None
    duplicates = tracking.job_duplicates(job_id) if tracking is not None else []
    row = database.job_row(job_id) if database is not None else None
    status: dict[str, Any] = {
        "job_id": job_id,
        "found": item is not None or row is not None,
        "dispatch": item,
        "duplicates": duplicates,
        "job": row,
    }
    return status


def format_job_status(status: dict[str, Any]) -> str:
    """The job's status as a few readable lines."""
    job_id = status["job_id"]
    if not status["found"]:
        return f"job {job_id}: unknown (no document dispatched, no row in the jobs table)"
    lines = []
    item = status["dispatch"]
    if item is not None:
        lines.append(
            f"job {job_id}: document {item.get('key')} ({item.get('size')} bytes, ETag "
            f"{item.get('etag')}) {item.get('state', '').lower()} at "
            f"{item.get('dispatched_at') or item.get('created_at')}"
        )
    row = status["job"]
    if row is None:
        lines.append("  worker: not started yet (the job message waits on the runs queue)")
    else:
        lines.append(
            f"  {row['kind'] or 'unknown kind'}: {row['status']}, shards {row['shards_done']} "
            f"of {row['shards']} done; created {row['created_at']}, started "
            f"{row['started_at']}, finished {row['finished_at']}"
        )
        if row["reason"]:
            lines.append(f"  reason: {row['reason']}")
        for name, value in sorted((row["outputs"] or {}).items()):
            if name != "statistics":
                lines.append(f"  {name}: {value}")
        lines.append(f"  notified: {row['notified_status']} (SNS message {row['notification_id']})")
    for duplicate in status["duplicates"]:
        lines.append(
            f"  second document {duplicate['key']} (ETag {duplicate['etag']}) not run; kept at "
            f"{duplicate['copied_to']}"
        )
    return "\n".join(lines)


def to_json(status: dict[str, Any]) -> str:
    return json.dumps(status, indent=2, default=str)
