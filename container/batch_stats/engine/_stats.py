"""Per-batch statistics of the per-image white and black counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["STAT_FIELDS", "BatchStats", "summarize_batch"]

#: The statistics columns, in the order of the Parquet schema (after ``batch_id``).
STAT_FIELDS = (
    "white_avg",
    "white_min",
    "white_max",
    "white_std",
    "black_avg",
    "black_min",
    "black_max",
    "black_std",
)


@dataclass(frozen=True, slots=True)
class BatchStats:
    """Statistics of one batch's per-image counts (float64, not rounded).

    ``*_std`` is the sample standard deviation (ddof=1); ``None`` when the batch has one image.
    """

    batch_id: str
    white_avg: float
    white_min: float
    white_max: float
    white_std: float | None
    black_avg: float
    black_min: float
    black_max: float
    black_std: float | None

    def as_row(self) -> dict[str, str | float | None]:
        """The statistics as a mapping in column order."""
        return {"batch_id": self.batch_id, **{name: getattr(self, name) for name in STAT_FIELDS}}


def _describe(values: npt.NDArray[np.float64]) -> tuple[float, float, float, float | None]:
    std = float(np.std(values, ddof=1)) if values.size >= 2 else None
    return float(values.mean()), float(values.min()), float(values.max()), std


def summarize_batch(batch_id: str, counts: Sequence[tuple[int, int]]) -> BatchStats:
    """Mean, min, max and sample standard deviation of the (white, black) counts of one batch.

    Raises:
        ValueError: empty batch id, no counts, or counts that are not non-negative integer pairs.
    """
    if not isinstance(batch_id, str) or not batch_id:
        raise ValueError(f"batch_id must be a non-empty string, got {batch_id!r}")
    if len(counts) == 0:
        raise ValueError(f"batch {batch_id!r} has no image counts to summarise")
    array = np.asarray(counts)
    if array.ndim != 2 or array.shape[1] != 2 or array.dtype.kind not in "iu" or (array < 0).any():
        raise ValueError(
            f"counts of batch {batch_id!r} must be (white, black) pairs of non-negative integers"
        )
    values = array.astype(np.float64)
    white = _describe(values[:, 0])
    black = _describe(values[:, 1])
    return BatchStats(batch_id, *white, *black)
