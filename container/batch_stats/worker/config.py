"""Worker configuration, read from environment variables once at start-up."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

#: Always required.
REQUIRED_ENV_VARS: tuple[str, ...] = (
    "RUNS_QUEUE_URL",
    "RAW_BUCKET",
    "RESULTS_BUCKET",
    "NOTIFICATIONS_TOPIC_ARN",
    "TRACKING_TABLE_NAME",
)
#: Exactly one of these: the RDS secret's ARN (AWS) or a database URL (local mode).
DATABASE_ENV_VARS: tuple[str, ...] = ("DB_SECRET_ARN", "DATABASE_URL")
#: Variables only local mode sets (the CDK stack sets DB_SECRET_ARN instead).
LOCAL_ONLY_ENV_VARS: tuple[str, ...] = ("DATABASE_URL",)
OPTIONAL_ENV_VARS: tuple[str, ...] = (
    "DOWNLOAD_CONCURRENCY",
    "VISIBILITY_TIMEOUT_SECONDS",
    "LOG_LEVEL",
)
#: Every variable the worker reads itself (boto3 reads AWS_REGION / AWS_ENDPOINT_URL, and ECS
#: sets ECS_AGENT_URI inside a task; see PLATFORM_ENV_VARS).
ENV_VARS: tuple[str, ...] = REQUIRED_ENV_VARS + DATABASE_ENV_VARS + OPTIONAL_ENV_VARS
PLATFORM_ENV_VARS: tuple[str, ...] = (
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "ECS_AGENT_URI",
)

DEFAULT_DOWNLOAD_CONCURRENCY = 16
DEFAULT_VISIBILITY_TIMEOUT_SECONDS = 900
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """The environment does not describe a usable worker configuration."""


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """Validated worker settings."""

    runs_queue_url: str
    raw_bucket: str
    results_bucket: str
    notifications_topic_arn: str
    tracking_table_name: str
    db_secret_arn: str | None = None
    database_url: str | None = None
    download_concurrency: int = DEFAULT_DOWNLOAD_CONCURRENCY
    visibility_timeout_seconds: int = DEFAULT_VISIBILITY_TIMEOUT_SECONDS
    log_level: str = "INFO"
    ecs_agent_uri: str | None = None

    def __post_init__(self) -> None:
        if (self.db_secret_arn is None) == (self.database_url is None):
            raise ConfigError("set exactly one of db_secret_arn and database_url")
        if not 1 <= self.download_concurrency <= 256:
            raise ConfigError(
                f"download_concurrency must be 1-256, got {self.download_concurrency!r}"
            )
        if not 1 <= self.visibility_timeout_seconds <= 43200:
            raise ConfigError(
                "visibility_timeout_seconds must be 1-43200 (the SQS limit), got "
                f"{self.visibility_timeout_seconds!r}"
            )

    @property
    def log_level_number(self) -> int:
        return int(logging.getLevelName(self.log_level))


def _int(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int | str:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        return f"{name}={raw!r} is not an integer (allowed: {low}-{high})"
    if not low <= value <= high:
        return f"{name}={raw!r} is out of range (allowed: {low}-{high})"
    return value


def load_settings(environ: Mapping[str, str]) -> WorkerSettings:
    """Read and validate the settings; one error lists every problem."""
    problems: list[str] = []
    missing = [name for name in REQUIRED_ENV_VARS if not environ.get(name, "").strip()]
    if missing:
        problems.append("missing environment variables: " + ", ".join(missing))
    secret_arn = environ.get("DB_SECRET_ARN", "").strip() or None
    database_url = environ.get("DATABASE_URL", "").strip() or None
    if secret_arn is None and database_url is None:
        problems.append("set DB_SECRET_ARN (AWS) or DATABASE_URL (local mode)")
    elif secret_arn is not None and database_url is not None:
        problems.append("set only one of DB_SECRET_ARN and DATABASE_URL, not both")
    concurrency = _int(environ, "DOWNLOAD_CONCURRENCY", DEFAULT_DOWNLOAD_CONCURRENCY, 1, 256)
    visibility = _int(
        environ, "VISIBILITY_TIMEOUT_SECONDS", DEFAULT_VISIBILITY_TIMEOUT_SECONDS, 1, 43200
    )
    for value in (concurrency, visibility):
        if isinstance(value, str):
            problems.append(value)
    log_level = environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if log_level not in _LOG_LEVELS:
        problems.append(f"LOG_LEVEL={log_level!r} is not one of {', '.join(_LOG_LEVELS)}")
    if problems:
        raise ConfigError("invalid worker configuration: " + "; ".join(problems))
    assert isinstance(concurrency, int)
    assert isinstance(visibility, int)
    return WorkerSettings(
        runs_queue_url=environ["RUNS_QUEUE_URL"].strip(),
        raw_bucket=environ["RAW_BUCKET"].strip(),
        results_bucket=environ["RESULTS_BUCKET"].strip(),
        notifications_topic_arn=environ["NOTIFICATIONS_TOPIC_ARN"].strip(),
        tracking_table_name=environ["TRACKING_TABLE_NAME"].strip(),
        db_secret_arn=secret_arn,
        database_url=database_url,
        download_concurrency=concurrency,
        visibility_timeout_seconds=visibility,
        log_level=log_level,
        ecs_agent_uri=environ.get("ECS_AGENT_URI", "").strip() or None,
    )
