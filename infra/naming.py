"""Physical resource names shared by the CDK stack and the local mode.

This module imports nothing from CDK, so the local mode (moto) can create resources with exactly
the names the deployed stack gives them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PROJECT = "imgpipe"
_STAGE_RE = re.compile(r"^[a-z][a-z0-9-]{0,15}$")


@dataclass(frozen=True)
class ResourceNames:
    """Names of every named resource of one stage of the pipeline."""

    raw_bucket: str
    results_bucket: str
    tracking_table: str
    ingest_queue: str
    ingest_dlq: str
    runs_queue: str
    runs_dlq: str
    topic: str
    db_secret: str
    db_app_secret: str
    db_name: str
    cluster: str
    dashboard: str
    schedule_group: str
    scheduler_role: str


def resource_names(*, stage: str, account: str, region: str) -> ResourceNames:
    """Return the resource names for ``stage`` in ``account``/``region``.

    Bucket names carry the account and region because they are global; everything else is
    regional and carries only the project and stage.
    """
    if not _STAGE_RE.fullmatch(stage):
        raise ValueError(
            f"stage {stage!r} is not allowed: use 1-16 characters, lowercase letters, digits "
            "and '-', starting with a letter"
        )
    prefix = f"{PROJECT}-{stage}"
    return ResourceNames(
        raw_bucket=f"{prefix}-raw-{account}-{region}",
        results_bucket=f"{prefix}-results-{account}-{region}",
        tracking_table=f"{prefix}-tracking",
        ingest_queue=f"{prefix}-ingest",
        ingest_dlq=f"{prefix}-ingest-dlq",
        runs_queue=f"{prefix}-runs.fifo",
        runs_dlq=f"{prefix}-runs-dlq.fifo",
        topic=f"{prefix}-notifications",
        db_secret=f"{prefix}/database",
        db_app_secret=f"{prefix}/database-app",
        db_name="imgpipe",
        cluster=f"{prefix}-workers",
        dashboard=f"{prefix}-pipeline",
        schedule_group=f"{prefix}-run-checks",
        scheduler_role=f"{prefix}-run-checks-scheduler",
    )
