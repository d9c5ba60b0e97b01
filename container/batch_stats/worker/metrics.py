"""CloudWatch metrics as Embedded Metric Format (EMF) lines on stdout.

On ECS the awslogs driver ships stdout to CloudWatch Logs, which extracts the metrics; no
CloudWatch API call or extra dependency is needed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

NAMESPACE = "ImagePipeline"
SERVICE = "worker"
UNITS = {
    "RunsFinished": "Count",
    "RunsFailed": "Count",
    "RunDurationSeconds": "Seconds",
    "ImagesProcessed": "Count",
    "ImagesRejected": "Count",
    "RunErrors": "Count",
    "TaskProtectionFailures": "Count",
    "ShardsProcessed": "Count",
    "JobsSucceeded": "Count",
    "JobsFailed": "Count",
    "JobDurationSeconds": "Seconds",
    "JobErrors": "Count",
}


class EmfMetrics:
    """Writes one EMF document per call of :meth:`emit`."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self._stream = stream
        self._enabled = enabled

    def emit(
        self,
        values: Mapping[str, float],
        *,
        dimensions: Sequence[str] = ("service",),
        **properties: str,
    ) -> None:
        """One EMF document; ``dimensions`` name the properties the metrics are split by
        (``service``, plus ``Kind`` for jobs)."""
        if not self._enabled or not values:
            return
        unknown = set(values) - set(UNITS)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; allowed: {sorted(UNITS)}")
        document = {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": NAMESPACE,
                        "Dimensions": [list(dimensions)],
                        "Metrics": [{"Name": name, "Unit": UNITS[name]} for name in values],
                    }
                ],
            },
            "service": SERVICE,
            **properties,
            **values,
        }
        stream = self._stream or sys.stdout
        stream.write(json.dumps(document) + "\n")
        stream.flush()
