"""Stage configuration: one typed, frozen dataclass per stage, selected with ``-c stage=<name>``.

Everything a stage may change lives here; the constructs read these values and nothing else, so a
reviewer can see every difference between ``dev`` and ``prod`` in one place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["STAGES", "StageConfig", "stage_config"]

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, kw_only=True)
class StageConfig:
    """The knobs of one deployment stage.

    Sizes are in the units AWS takes (MiB, vCPU units of 1/1024); durations are in seconds or
    days as the field name says.
    """

    stage: str
    #: Images that complete one batch, and batches that complete one run (the Lambda's trigger).
    images_per_batch: int = 20
    batches_per_run: int = 5
    #: Most images in one run message (shard) of whole batches; larger runs fan out over tasks.
    shard_images: int = 5000
    #: Lambda ``batch_counter``.
    lambda_memory_mib: int = 256
    lambda_timeout_seconds: int = 30
    #: Powertools for AWS Lambda (Python) layer: the release pinned in pyproject's ``lambda``
    #: extra, resolved at deploy time from the public SSM parameter AWS publishes for it.
    powertools_version: str = "3.37.0"
    #: ECS Fargate worker task size and the most tasks running at once.
    worker_cpu: int = 1024
    worker_memory_mib: int = 4096
    #: The task's scratch disk (Fargate ephemeral storage, 21-200 GiB; 20 GiB when not set). A
    #: mosaic job keeps its downloaded tiles there: about 15 GB for 100,000 tiles of 150 KB.
    worker_ephemeral_storage_gib: int = 50
    worker_max_tasks: int = 2
    worker_download_concurrency: int = 16
    #: Longest a run may take; the runs queue's visibility timeout (and the worker's extension
    #: step) is this long, so a message never reappears while its run is still being processed.
    run_timeout_seconds: int = 900
    #: A run still incomplete this long after its last upload gets one ``incomplete``
    #: notification (the batch counter's ``RUN_TIMEOUT``).
    incomplete_run_timeout_seconds: int = 3600
    #: Alarm when the oldest run message has waited this long (no worker picked it up).
    run_age_alarm_seconds: int = 1800
    #: Worker subnets: ``False`` puts tasks in public subnets with a public IP and no inbound
    #: rule (no NAT gateway to pay for while idle); ``True`` uses private subnets behind one NAT.
    private_worker_subnets: bool = False
    #: RDS PostgreSQL.
    db_instance_type: str = "t4g.micro"
    db_allocated_storage_gib: int = 20
    db_max_allocated_storage_gib: int = 50
    db_multi_az: bool = False
    db_backup_retention_days: int = 1
    db_deletion_protection: bool = False
    #: Rotate the database secrets (master and application role) every so many days with
    #: Secrets Manager hosted rotation; ``None``: no rotation. The rotation function runs in
    #: the worker subnets and needs their path to Secrets Manager (private worker subnets).
    db_secret_rotation_days: int | None = None
    #: Lifecycle and retention.
    rejected_expiration_days: int = 30
    raw_noncurrent_expiration_days: int = 30
    access_log_expiration_days: int = 90
    log_retention_days: int = 30
    tracking_ttl_days: int = 30
    #: ``True``: ``cdk destroy`` deletes buckets (emptying them first), the table and the
    #: database. ``False``: they are retained (and the database snapshotted).
    destroy_on_removal: bool = True
    #: Notification subscriptions (from ``-c notify_email=...`` / ``-c notify_webhook=...``).
    notify_email: str | None = None
    notify_webhook: str | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        positive = (
            "images_per_batch",
            "batches_per_run",
            "shard_images",
            "lambda_memory_mib",
            "lambda_timeout_seconds",
            "worker_max_tasks",
            "worker_download_concurrency",
            "run_timeout_seconds",
            "incomplete_run_timeout_seconds",
            "run_age_alarm_seconds",
            "db_backup_retention_days",
            "rejected_expiration_days",
            "raw_noncurrent_expiration_days",
            "access_log_expiration_days",
            "log_retention_days",
            "tracking_ttl_days",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        if (
            isinstance(self.worker_ephemeral_storage_gib, bool)
            or not isinstance(self.worker_ephemeral_storage_gib, int)
            or not 21 <= self.worker_ephemeral_storage_gib <= 200
        ):
            problems.append(
                "worker_ephemeral_storage_gib must be an integer from 21 to 200 (Fargate's "
                f"ephemeral storage range), got {self.worker_ephemeral_storage_gib!r}"
            )
        if self.db_allocated_storage_gib < 20:
            problems.append(
                f"db_allocated_storage_gib must be >= 20 (RDS gp3 minimum), "
                f"got {self.db_allocated_storage_gib!r}"
            )
        if self.db_max_allocated_storage_gib < self.db_allocated_storage_gib:
            problems.append("db_max_allocated_storage_gib must be >= db_allocated_storage_gib")
        if self.run_timeout_seconds > 12 * 3600:
            problems.append(
                f"run_timeout_seconds must be <= 43200 (the SQS visibility timeout limit), "
                f"got {self.run_timeout_seconds!r}"
            )
        if self.incomplete_run_timeout_seconds > 7 * 24 * 3600:
            problems.append(
                "incomplete_run_timeout_seconds must be <= 604800 (7 days, the batch counter's "
                f"RUN_TIMEOUT limit), got {self.incomplete_run_timeout_seconds!r}"
            )
        if self.lambda_timeout_seconds > 900:
            problems.append("lambda_timeout_seconds must be <= 900 (the Lambda limit)")
        if self.db_secret_rotation_days is not None:
            if not 1 <= self.db_secret_rotation_days <= 365:
                problems.append(
                    f"db_secret_rotation_days must be 1-365, got {self.db_secret_rotation_days!r}"
                )
            if not self.private_worker_subnets:
                problems.append(
                    "db_secret_rotation_days needs private_worker_subnets=True (the rotation "
                    "function reaches Secrets Manager through the NAT gateway)"
                )
        if self.notify_email is not None and not _EMAIL_RE.fullmatch(self.notify_email):
            problems.append(f"notify_email {self.notify_email!r} is not an email address")
        if self.notify_webhook is not None and not self.notify_webhook.startswith("https://"):
            problems.append(
                f"notify_webhook {self.notify_webhook!r} must be an https:// URL "
                "(SNS delivers to HTTPS endpoints only in this stack)"
            )
        if problems:
            raise ValueError(
                f"invalid configuration for stage {self.stage!r}: " + "; ".join(problems)
            )


STAGES: Mapping[str, StageConfig] = {
    "dev": StageConfig(stage="dev"),
    "prod": StageConfig(
        stage="prod",
        worker_max_tasks=4,
        private_worker_subnets=True,
        db_instance_type="t4g.small",
        db_max_allocated_storage_gib=200,
        db_multi_az=True,
        db_backup_retention_days=7,
        db_deletion_protection=True,
        db_secret_rotation_days=30,
        rejected_expiration_days=90,
        log_retention_days=90,
        tracking_ttl_days=90,
        destroy_on_removal=False,
    ),
}

# Context keys that override single fields of the selected stage (``-c images_per_batch=10``).
_INT_OVERRIDES = ("images_per_batch", "batches_per_run", "worker_max_tasks")
_STR_OVERRIDES = ("notify_email", "notify_webhook")


def stage_config(context: Mapping[str, Any]) -> StageConfig:
    """Select the stage named by ``context["stage"]`` (default ``dev``) and apply overrides.

    ``context`` is the CDK context (``-c key=value`` on the command line, or cdk.json). Values
    given on the command line arrive as strings; integers are parsed and rejected clearly.
    """
    name = str(context.get("stage") or "dev")
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}: use one of {', '.join(sorted(STAGES))}")
    overrides: dict[str, Any] = {}
    for key in _INT_OVERRIDES:
        raw = context.get(key)
        if raw is None or raw == "":
            continue
        try:
            overrides[key] = int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"context {key}={raw!r} must be an integer >= 1") from None
    for key in _STR_OVERRIDES:
        raw = context.get(key)
        if raw:
            overrides[key] = str(raw)
    return replace(STAGES[name], **overrides)
