"""Per-batch statistics and the Parquet file."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batch_stats.engine import (
    COLUMNS,
    DEFINITIONS,
    BatchStats,
    EngineParams,
    SchemaError,
    format_table,
    read_batch_stats,
    run_metadata,
    summarize_batch,
    write_batch_stats,
)


def test_statistics_equal_pandas_with_ddof_1() -> None:
    counts = [(int(w), int(b)) for w, b in np.random.default_rng(2).integers(0, 2600, size=(20, 2))]
    stats = summarize_batch("batch_001", counts)
    frame = pd.DataFrame(counts, columns=["white", "black"])
    for colour in ("white", "black"):
        column = frame[colour]
        assert getattr(stats, f"{colour}_avg") == pytest.approx(column.mean(), rel=1e-15)
        assert getattr(stats, f"{colour}_std") == pytest.approx(column.std(ddof=1), rel=1e-12)
        assert getattr(stats, f"{colour}_min") == column.min()
        assert getattr(stats, f"{colour}_max") == column.max()


def test_one_image_has_null_std() -> None:
    stats = summarize_batch("batch_001", [(5, 7)])
    assert (stats.white_avg, stats.white_min, stats.white_max, stats.white_std) == (5, 5, 5, None)
    assert (stats.black_avg, stats.black_std) == (7, None)


@pytest.mark.parametrize(
    ("batch_id", "counts", "message"),
    [
        ("batch_001", [], "no image counts"),
        ("", [(1, 2)], "non-empty string"),
        ("batch_001", [(1, -2)], "non-negative integer"),
        ("batch_001", [(1, 2, 3)], "pairs"),
        ("batch_001", [(1.5, 2.0)], "integer"),
    ],
)
def test_bad_counts_raise(batch_id: str, counts: list[tuple[float, ...]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        summarize_batch(batch_id, counts)  # type: ignore[arg-type]


def _stats() -> list[BatchStats]:
    return [
        summarize_batch("batch_010", [(1, 2), (3, 4)]),
        summarize_batch("batch_002", [(2500, 0)]),
        summarize_batch("batch_001", [(7, 9), (8, 10), (12, 0)]),
    ]


def test_round_trip_keeps_rows_schema_order_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "batch_stats.parquet"
    metadata = run_metadata(params=EngineParams(), seed=42, run_id="run-1")
    write_batch_stats(_stats(), path, metadata=metadata)

    rows, read_metadata = read_batch_stats(path)
    assert rows == sorted(_stats(), key=lambda s: s.batch_id)
    assert [r.batch_id for r in rows] == ["batch_001", "batch_002", "batch_010"]
    assert rows[1].white_std is None
    for key, value in metadata.items():
        assert read_metadata[key] == value
    assert json.loads(read_metadata["definitions"]) == DEFINITIONS
    assert EngineParams.from_json(read_metadata["params"]) == EngineParams()

    schema = pq.read_schema(path)
    assert tuple(schema.names) == COLUMNS
    assert schema.field("batch_id").type == pa.string()
    assert all(schema.field(name).type == pa.float64() for name in COLUMNS[1:])


def test_writes_to_a_binary_stream() -> None:
    buffer = io.BytesIO()
    write_batch_stats(_stats(), buffer, metadata={"seed": "1"})
    buffer.seek(0)
    rows, metadata = read_batch_stats(buffer)
    assert len(rows) == 3
    assert metadata["seed"] == "1"


def test_pandas_reads_the_file_with_nulls_for_single_image_batches(tmp_path: Path) -> None:
    path = tmp_path / "stats.parquet"
    write_batch_stats(_stats(), path, metadata={})
    frame = pd.read_parquet(path)
    assert list(frame.columns) == list(COLUMNS)
    assert frame["white_std"].isna().tolist() == [False, True, False]


@pytest.mark.parametrize(
    ("stats", "metadata", "message"),
    [
        ([], {}, "no batch statistics"),
        ([*_stats(), summarize_batch("batch_001", [(1, 1)])], {}, "duplicate batch ids"),
        (_stats(), {"definitions": "mine"}, "reserved"),
        (_stats(), {"seed": 3}, "must be strings"),
    ],
)
def test_bad_writes_raise(stats: list[BatchStats], metadata: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_batch_stats(stats, io.BytesIO(), metadata=metadata)


def _write_table(path: Path, columns: dict[str, list[object]]) -> None:
    pq.write_table(pa.table(columns), path)


def test_read_names_missing_and_unexpected_columns(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    columns: dict[str, list[object]] = {name: [1.0] for name in COLUMNS}
    columns["batch_id"] = ["batch_001"]
    del columns["black_std"]
    columns["grey_avg"] = [2.0]
    _write_table(path, columns)
    with pytest.raises(
        SchemaError, match=r"missing columns \['black_std'\].*unexpected columns \['grey_avg'\]"
    ):
        read_batch_stats(path)


def test_read_names_wrong_types_and_order(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    columns: dict[str, list[object]] = {name: [1.0] for name in COLUMNS}
    columns["batch_id"] = [1]
    _write_table(path, columns)
    with pytest.raises(SchemaError, match=r"column 'batch_id' has type int64, expected string"):
        read_batch_stats(path)
    reordered = {name: columns[name] for name in reversed(COLUMNS)}
    reordered["batch_id"] = ["batch_001"]
    _write_table(path, reordered)
    with pytest.raises(SchemaError, match="out of order"):
        read_batch_stats(path)


def test_read_rejects_nulls_outside_std(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    columns: dict[str, list[object]] = {name: [1.0] for name in COLUMNS}
    columns["batch_id"] = ["batch_001"]
    columns["white_avg"] = [None]
    pq.write_table(
        pa.table(
            columns,
            schema=pa.schema(
                [(n, pa.string() if n == "batch_id" else pa.float64()) for n in COLUMNS]
            ),
        ),
        path,
    )
    with pytest.raises(SchemaError, match="'white_avg' has null values"):
        read_batch_stats(path)


def test_table_lists_batches_in_order_with_nulls() -> None:
    lines = format_table(_stats()).splitlines()
    assert lines[0].split() == list(COLUMNS)
    assert [line.split()[0] for line in lines[1:]] == ["batch_001", "batch_002", "batch_010"]
    assert lines[2].split()[1:] == ["2500.00", "2500", "2500", "null", "0.00", "0", "0", "null"]
    assert len({len(line) for line in lines}) == 1  # aligned columns
