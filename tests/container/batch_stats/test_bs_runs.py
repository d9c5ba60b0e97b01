"""Whole runs: in memory, written as PNG folders and processed back, deterministic per seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from batch_stats.engine import (
    EngineParams,
    ImageRejected,
    iter_folder_stats,
    iter_synthetic_stats,
    scan_run_folder,
    synthetic_image,
    write_synthetic_run,
)
from PIL import Image


def test_folder_run_gives_the_in_memory_statistics(
    tmp_path: Path, small_params: EngineParams
) -> None:
    folders = write_synthetic_run(tmp_path / "run", 5, params=small_params)
    assert [f.name for f in folders] == ["batch_001", "batch_002"]
    assert sorted(p.name for p in folders[0].iterdir()) == [
        "img_0001.png",
        "img_0002.png",
        "img_0003.png",
    ]
    on_disk = np.asarray(Image.open(folders[1] / "img_0002.png"))
    np.testing.assert_array_equal(
        on_disk, synthetic_image(5, "batch_002", "img_0002.png", params=small_params)
    )

    from_files = list(iter_folder_stats(scan_run_folder(tmp_path / "run"), 5, params=small_params))
    in_memory = list(iter_synthetic_stats(5, params=small_params))
    materialized = list(iter_synthetic_stats(5, params=small_params, materialize=True))
    assert from_files == in_memory == materialized
    assert [s.batch_id for s in in_memory] == ["batch_001", "batch_002"]


def test_default_run_is_deterministic_and_depends_on_the_seed() -> None:
    params = EngineParams(batches=2, images_per_batch=5)
    first = list(iter_synthetic_stats(3, params=params))
    assert list(iter_synthetic_stats(3, params=params)) == first
    assert list(iter_synthetic_stats(4, params=params)) != first
    for stats in first:
        # Each count includes at most a full square plus rare noise pixels.
        assert 0 <= stats.white_min <= stats.white_avg <= stats.white_max <= 2500 + 5
        assert stats.white_std is not None


def test_progress_is_reported_per_image(tmp_path: Path, small_params: EngineParams) -> None:
    ticks: list[int] = []
    write_synthetic_run(tmp_path, 1, params=small_params, progress=ticks.append)
    list(
        iter_folder_stats(scan_run_folder(tmp_path), 1, params=small_params, progress=ticks.append)
    )
    assert ticks == [1] * 12


def test_writing_over_an_existing_run_is_refused(
    tmp_path: Path, small_params: EngineParams
) -> None:
    write_synthetic_run(tmp_path, 1, params=small_params)
    with pytest.raises(FileExistsError, match="batch_001"):
        write_synthetic_run(tmp_path, 1, params=small_params)


def test_rejected_file_names_the_batch_and_file(tmp_path: Path, small_params: EngineParams) -> None:
    write_synthetic_run(tmp_path, 1, params=small_params)
    (tmp_path / "batch_002" / "notes.txt").write_text("not an image")
    run = scan_run_folder(tmp_path)
    with pytest.raises(ImageRejected, match=r"^batch_002/notes.txt: not a PNG file") as caught:
        list(iter_folder_stats(run, 1, params=small_params))
    assert caught.value.reason == "not_png"


def test_scan_ignores_hidden_entries_and_root_files(
    tmp_path: Path, small_params: EngineParams
) -> None:
    write_synthetic_run(tmp_path, 1, params=small_params)
    (tmp_path / "batch_stats.parquet").write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / "batch_001" / ".DS_Store").write_bytes(b"x")
    run = scan_run_folder(tmp_path)
    assert list(run.batches) == ["batch_001", "batch_002"]
    assert run.image_count == 6


def test_scan_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        scan_run_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="has no batch folders"):
        scan_run_folder(tmp_path)
    (tmp_path / "batch_001").mkdir()
    with pytest.raises(ValueError, match="has no images"):
        scan_run_folder(tmp_path)
