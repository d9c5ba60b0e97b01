"""A plain-text table of batch statistics, for terminals and logs."""

from __future__ import annotations

from collections.abc import Sequence

from ._parquet import COLUMNS
from ._stats import BatchStats

__all__ = ["format_table"]


def _cell(column: str, value: str | float | None) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    # min and max are counts; means and standard deviations get two decimals.
    return f"{value:.0f}" if column.endswith(("_min", "_max")) else f"{value:.2f}"


def format_table(stats: Sequence[BatchStats]) -> str:
    """One row per batch under the Parquet column names; counts as integers, others to 2 places."""
    rows = [
        [_cell(k, v) for k, v in s.as_row().items()]
        for s in sorted(stats, key=lambda s: s.batch_id)
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(COLUMNS)]
    return "\n".join(_line(cells, widths) for cells in [list(COLUMNS), *rows])


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    """The batch id left-aligned, numbers right-aligned."""
    numbers = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
    return "  ".join([cells[0].ljust(widths[0]), *numbers])
