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
#: Optional: images per shard message (default DEFAULT_SHARD_IMAGES); the stack sets it.
OPTIONAL_ENV_VARS: tuple[str, ...] = ("SHARD_IMAGES",)
#: Variables read by Powertools itself (service name, metrics namespace, log level).
POWERTOOLS_ENV_VARS: tuple[str, ...] = (
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
)
ENV_VARS: tuple[str, ...] = REQUIRED_ENV_VARS + OPTIONAL_ENV_VARS + POWERTOOLS_ENV_VARS
DEFAULT_SHARD_IMAGES = 5000
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

    def __post_init__(self) -> None:
        for name in ("images_per_batch", "batches_per_run", "shard_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


def load_settings(environ: Mapping[str, str]) -> CounterSettings:
    """Read and validate the settings; one error names every missing or invalid variable."""
    problems: list[str] = []
    missing = [name for name in REQUIRED_ENV_VARS if not environ.get(name, "").strip()]
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
    if problems:
        raise ConfigError("; ".join(problems))
    return CounterSettings(
        tracking_table_name=environ["TRACKING_TABLE_NAME"].strip(),
        runs_queue_url=environ["RUNS_QUEUE_URL"].strip(),
        images_per_batch=counts["IMAGES_PER_BATCH"],
        batches_per_run=counts["BATCHES_PER_RUN"],
        shard_images=shard_images,
    )
