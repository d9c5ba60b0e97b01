"""The batch statistics worker: consumes run messages, writes Parquet, PostgreSQL rows and SNS.

Run it with ``python -m batch_stats.worker`` (the container's command) or ``batch-stats worker``.
"""

from batch_stats.worker.config import ENV_VARS, ConfigError, WorkerSettings, load_settings
from batch_stats.worker.runner import RunOutcome, RunProcessor, Worker

__all__ = [
    "ENV_VARS",
    "ConfigError",
    "RunOutcome",
    "RunProcessor",
    "Worker",
    "WorkerSettings",
    "load_settings",
]
