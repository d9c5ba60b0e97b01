"""Configuration of the batch counter, read from environment variables once per cold start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: Variables the function needs; the CDK stack sets exactly these.
REQUIRED_ENV_VARS: tuple[str, ...] = (
    "TRACKING_TABLE_NAME",
    "RUNS_QUEUE_URL",
    "IMAGES_PER_BATCH",
    "BATCHES_PER_RUN",
)
#: Variables of the incomplete-run check (a one-time EventBridge Scheduler schedule per run that
#: invokes this function, and the topic its ``incomplete`` notification goes to).
CHECK_ENV_VARS: tuple[str, ...] = (
    "SCHEDULE_GROUP_NAME",
    "SCHEDULER_ROLE_ARN",
    "NOTIFICATIONS_TOPIC_ARN",
)
#: Optional: images per shard message (default DEFAULT_SHARD_IMAGES) and seconds a run may stay
#: incomplete after its last upload (default DEFAULT_RUN_TIMEOUT); the stack sets both.
OPTIONAL_ENV_VARS: tuple[str, ...] = ("SHARD_IMAGES", "RUN_TIMEOUT")
#: Variables read by Powertools itself (service name, metrics namespace, log level).
POWERTOOLS_ENV_VARS: tuple[str, ...] = (
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
)
ENV_VARS: tuple[str, ...] = (
    REQUIRED_ENV_VARS + CHECK_ENV_VARS + OPTIONAL_ENV_VARS + POWERTOOLS_ENV_VARS
)
DEFAULT_SHARD_IMAGES = 5000
DEFAULT_RUN_TIMEOUT = 3600
MAX_RUN_TIMEOUT = 7 * 24 * 3600
MAX_SHARD_IMAGES = 1_000_000

SERVICE_NAME = "batch-counter"
METRICS_NAMESPACE = "ImagePipeline"


class ConfigError(ValueError):
    """The environment does not describe a usable configuration."""


@dataclass(frozen=True, kw_only=True)
class CounterSettings:
    """Validated settings of the batch counter."""

    tracking_table_name: str
    runs_queue_url: str
    images_per_batch: int
    batches_per_run: int
    shard_images: int = DEFAULT_SHARD_IMAGES
    schedule_group_name: str
    scheduler_role_arn: str
    notifications_topic_arn: str
    run_timeout: int = DEFAULT_RUN_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("images_per_batch", "batches_per_run", "shard_images", "run_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


def load_settings(environ: Mapping[str, str]) -> CounterSettings:
    """Read and validate the settings; one error names every missing or invalid variable."""
    problems: list[str] = []
    missing = [
        name for name in REQUIRED_ENV_VARS + CHECK_ENV_VARS if not environ.get(name, "").strip()
    ]
    if missing:
        problems.append("missing environment variables: " + ", ".join(missing))
    counts: dict[str, int] = {}
    for name in ("IMAGES_PER_BATCH", "BATCHES_PER_RUN"):
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        try:
            counts[name] = int(raw)
        except ValueError:
            problems.append(f"{name}={raw!r} is not an integer (allowed: an integer >= 1)")
            continue
        if counts[name] < 1:
            problems.append(f"{name}={raw!r} is too small (allowed: an integer >= 1)")
    shard_raw = environ.get("SHARD_IMAGES", "").strip()
    shard_images = DEFAULT_SHARD_IMAGES
    if shard_raw:
        try:
            shard_images = int(shard_raw)
        except ValueError:
            shard_images = 0
        if not 1 <= shard_images <= MAX_SHARD_IMAGES:
            problems.append(
                f"SHARD_IMAGES={shard_raw!r} is not allowed (an integer from 1 to "
                f"{MAX_SHARD_IMAGES})"
            )
    timeout_raw = environ.get("RUN_TIMEOUT", "").strip()
    run_timeout = DEFAULT_RUN_TIMEOUT
    if timeout_raw:
        try:
            run_timeout = int(timeout_raw)
        except ValueError:
            run_timeout = 0
        if not 1 <= run_timeout <= MAX_RUN_TIMEOUT:
            problems.append(
                f"RUN_TIMEOUT={timeout_raw!r} is not allowed (seconds since a run's last upload: "
                f"an integer from 1 to {MAX_RUN_TIMEOUT})"
            )
    if problems:
        raise ConfigError("; ".join(problems))
    return CounterSettings(
        tracking_table_name=environ["TRACKING_TABLE_NAME"].strip(),
        runs_queue_url=environ["RUNS_QUEUE_URL"].strip(),
        images_per_batch=counts["IMAGES_PER_BATCH"],
        batches_per_run=counts["BATCHES_PER_RUN"],
        shard_images=shard_images,
        schedule_group_name=environ["SCHEDULE_GROUP_NAME"].strip(),
        scheduler_role_arn=environ["SCHEDULER_ROLE_ARN"].strip(),
        notifications_topic_arn=environ["NOTIFICATIONS_TOPIC_ARN"].strip(),
        run_timeout=run_timeout,
    )
