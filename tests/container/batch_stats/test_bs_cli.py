"""The batch-stats command line: generate, process, demo, and one-line errors on bad input."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from batch_stats.cli import main
from batch_stats.engine import (
    EngineParams,
    iter_synthetic_stats,
    read_batch_stats,
    run_seed,
)

SMALL = [
    "--batches",
    "2",
    "--images-per-batch",
    "3",
    "--image-height",
    "40",
    "--image-width",
    "48",
    "--square-size",
    "12",
    "--crop-height",
    "30",
    "--crop-width",
    "36",
]
SMALL_PARAMS = EngineParams(
    batches=2,
    images_per_batch=3,
    image_height=40,
    image_width=48,
    square_size=12,
    crop_height=30,
    crop_width=36,
)
PROCESS_SHAPE = SMALL[-6:]


def test_generate_then_process_matches_the_in_memory_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run-7"
    assert main(["generate", str(run_dir), "--seed", "7", *SMALL]) == 0
    assert sorted(p.name for p in run_dir.iterdir()) == ["batch_001", "batch_002"]
    output = tmp_path / "stats.parquet"
    assert main(["process", str(run_dir), "--seed", "7", "-o", str(output), *PROCESS_SHAPE]) == 0

    stats, metadata = read_batch_stats(output)
    assert stats == list(iter_synthetic_stats(7, params=SMALL_PARAMS))
    assert metadata["seed"] == "7"
    assert metadata["run_id"] == "run-7"
    assert EngineParams.from_json(metadata["params"]).crop_width == 36
    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if line.startswith("batch_")]
    assert table[0].split()[:2] == ["batch_id", "white_avg"]
    assert [line.split()[0] for line in table[1:]] == ["batch_001", "batch_002"]


def test_default_seeds_come_from_the_folder_name(tmp_path: Path) -> None:
    run_dir = tmp_path / "nightly-42"
    assert main(["generate", str(run_dir), *SMALL]) == 0
    assert main(["process", str(run_dir), *PROCESS_SHAPE]) == 0
    stats, metadata = read_batch_stats(run_dir / "batch_stats.parquet")
    assert int(metadata["seed"]) == run_seed("nightly-42")
    assert stats == list(iter_synthetic_stats(run_seed("nightly-42"), params=SMALL_PARAMS))


def test_demo_writes_the_parquet_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "demo.parquet"
    assert main(["demo-folder", "--seed", "3", "-o", str(output), *SMALL]) == 0
    stats, _ = read_batch_stats(output)
    assert stats == list(iter_synthetic_stats(3, params=SMALL_PARAMS))
    assert f"wrote {output}" in capsys.readouterr().out


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_missing_folder_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["process", str(tmp_path / "nope")]) == 2
    assert _error_line(capsys).startswith("batch-stats: error: run folder not found")


def test_a_file_that_is_not_a_png_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["generate", str(tmp_path / "run"), "--seed", "1", *SMALL])
    capsys.readouterr()
    (tmp_path / "run" / "batch_001" / "img_0002.png").write_bytes(b"GIF89a not really")
    assert main(["process", str(tmp_path / "run"), *PROCESS_SHAPE]) == 2
    assert _error_line(capsys) == (
        "batch-stats: error: batch_001/img_0002.png: not a PNG file (no PNG signature); "
        "only PNG images are accepted"
    )


def test_images_smaller_than_the_crop_are_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["generate", str(tmp_path / "run"), "--seed", "1", *SMALL])
    capsys.readouterr()
    assert main(["process", str(tmp_path / "run")]) == 2  # default 200x200 crop
    assert "smaller than the 200x200 crop" in _error_line(capsys)


def test_impossible_parameters_are_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", str(tmp_path), "--square-size", "300"]) == 2
    assert _error_line(capsys) == (
        "batch-stats: error: a 300x300 square does not fit in a 256x512 image (height x width)"
    )


def test_existing_run_is_not_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", str(tmp_path), "--seed", "1", *SMALL]) == 0
    capsys.readouterr()
    assert main(["generate", str(tmp_path), "--seed", "1", *SMALL]) == 2
    assert "already exist" in _error_line(capsys)


@pytest.mark.parametrize(
    "argv",
    [["generate", "x", "--seed", "-1"], ["generate", "x", "--batches", "0"], ["process"], []],
)
def test_bad_arguments_exit_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "usage: batch-stats" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    executable = shutil.which("batch-stats") or str(
        Path(__file__).parents[3] / ".venv" / "bin" / "batch-stats"
    )
    result = subprocess.run([executable, "--help"], capture_output=True, text=True, check=True)
    for command in ("generate", "process", "demo-folder"):
        assert command in result.stdout
