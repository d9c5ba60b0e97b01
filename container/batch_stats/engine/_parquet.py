"""The batch statistics Parquet file: fixed schema, sorted rows, definitions in the metadata."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from ._params import EngineParams
from ._stats import STAT_FIELDS, BatchStats

__all__ = [
    "COLUMNS",
    "DEFINITIONS",
    "SCHEMA",
    "SchemaError",
    "read_batch_stats",
    "run_metadata",
    "write_batch_stats",
]

COLUMNS = ("batch_id", *STAT_FIELDS)

SCHEMA = pa.schema(
    [pa.field("batch_id", pa.string(), nullable=False)]
    + [pa.field(name, pa.float64(), nullable=name.endswith("_std")) for name in STAT_FIELDS]
)

#: Stored under the ``definitions`` metadata key of every file.
DEFINITIONS = {
    "white_pixel": "all three channels 255 (random noise pixels that match are counted)",
    "black_pixel": "all three channels 0 (random noise pixels that match are counted)",
    "count": "pixels of that colour inside the crop, after painting the white square, then the "
    "black square",
    "squares": "two non-overlapping square_size squares, white then black, uniform over all "
    "in-bounds non-overlapping ordered placements (edges included)",
    "crop": "crop_height x crop_width window, uniform over all positions (edges included)",
    "avg": "arithmetic mean of the per-image counts of the batch",
    "min": "smallest per-image count of the batch",
    "max": "largest per-image count of the batch",
    "std": "sample standard deviation (ddof=1) of the per-image counts; null for one image",
    "seed": "every random choice comes from numpy PCG64 generators seeded from the run seed",
}

_RESERVED_KEYS = ("definitions", "columns")


class SchemaError(ValueError):
    """A batch statistics file or table does not have the expected columns and types."""


def run_metadata(
    *, params: EngineParams, seed: int, run_id: str | None = None, **extra: str
) -> dict[str, str]:
    """The metadata a run's file should carry: parameters (JSON), seed, run id and extras."""
    metadata = {"params": params.to_json(), "seed": str(seed), **extra}
    if run_id is not None:
        metadata["run_id"] = run_id
    return metadata


def _check_schema(schema: pa.Schema, where: str) -> None:
    problems = []
    names = list(schema.names)
    missing = [name for name in COLUMNS if name not in names]
    unexpected = [name for name in names if name not in COLUMNS]
    if missing:
        problems.append(f"missing columns {missing}")
    if unexpected:
        problems.append(f"unexpected columns {unexpected}")
    if not problems and names != list(COLUMNS):
        problems.append(f"columns out of order {names}")
    for field in SCHEMA:
        if field.name in names and not schema.field(field.name).type.equals(field.type):
            problems.append(
                f"column {field.name!r} has type {schema.field(field.name).type}, "
                f"expected {field.type}"
            )
    if problems:
        raise SchemaError(
            f"{where}: {'; '.join(problems)}. Expected exactly these columns in this order: "
            + ", ".join(f"{f.name} ({f.type})" for f in SCHEMA)
        )


def write_batch_stats(
    stats: Sequence[BatchStats],
    sink: str | Path | BinaryIO,
    *,
    metadata: Mapping[str, str],
) -> None:
    """Write one row per batch, sorted by ``batch_id``, with ``metadata`` and the definitions.

    Raises:
        ValueError: no batches, duplicate batch ids, non-string metadata, or reserved keys
            (``definitions``) in ``metadata``.
        SchemaError: the rows do not match the schema (for example a missing value).
    """
    if not stats:
        raise ValueError("no batch statistics to write")
    rows = sorted(stats, key=lambda s: s.batch_id)
    ids = [s.batch_id for s in rows]
    duplicates = sorted({i for i, j in itertools.pairwise(ids) if i == j})
    if duplicates:
        raise ValueError(f"duplicate batch ids {duplicates}; each batch must appear once")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"metadata keys and values must be strings, got {key!r}: {value!r}")
        if key in _RESERVED_KEYS:
            raise ValueError(f"metadata key {key!r} is reserved for the engine")
    file_metadata = {
        **metadata,
        "definitions": json.dumps(DEFINITIONS, sort_keys=True),
        "columns": ",".join(COLUMNS),
    }
    columns = {name: [getattr(s, name) for s in rows] for name in COLUMNS}
    try:
        table = pa.Table.from_pydict(columns, schema=SCHEMA.with_metadata(file_metadata))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise SchemaError(f"batch statistics do not fit the schema: {error}") from error
    _check_schema(table.schema, "batch statistics")
    pq.write_table(table, sink)


def read_batch_stats(
    source: str | Path | BinaryIO,
) -> tuple[list[BatchStats], dict[str, str]]:
    """Read a file written by :func:`write_batch_stats`: the rows and the key-value metadata.

    Raises:
        SchemaError: the file's columns or types are not the batch statistics schema, or a
            required value is null.
    """
    table = pq.read_table(source)
    _check_schema(table.schema, f"{source if isinstance(source, str | Path) else 'Parquet file'}")
    for name in COLUMNS:
        if not name.endswith("_std") and table.column(name).null_count:
            raise SchemaError(f"column {name!r} has null values; only the *_std columns may")
    raw = table.schema.metadata or {}
    metadata = {k.decode("utf-8"): v.decode("utf-8") for k, v in raw.items()}
    metadata.pop("ARROW:schema", None)
    rows = [BatchStats(**row) for row in table.to_pylist()]
    return rows, metadata
