"""`batch-stats process` on hostile folders: one-line errors naming the entry, never a traceback."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from batch_stats.cli import main

from .test_bs_cli import PROCESS_SHAPE, SMALL

NOBODY = 65534


@pytest.fixture
def run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    run = tmp_path / "run"
    assert main(["generate", str(run), "--seed", "1", *SMALL]) == 0
    capsys.readouterr()
    return run


def _process(run: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    status = main(["process", str(run), *PROCESS_SHAPE, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == (1 if status else 0), err
    return status, err[0] if err else ""


def test_a_png_missing_rows_is_rejected_with_the_rows_found(
    run_dir: Path, capsys: pytest.CaptureFixture[str], png_without_last_rows: Callable[..., bytes]
) -> None:
    image = run_dir / "batch_002" / "img_0003.png"
    image.write_bytes(png_without_last_rows(image.read_bytes(), rows=10, row_bytes=1 + 48 * 3))
    status, line = _process(run_dir, capsys)
    assert status == 2
    assert line == (
        "batch-stats: error: batch_002/img_0003.png: the image data holds 30 of the 40 rows "
        "that the header declares"
    )


def test_an_unreadable_file_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    # As root every file is readable: the command then runs with the effective user id of an
    # unprivileged user, in a folder that user may enter (pytest's own is private to root).
    with tempfile.TemporaryDirectory(prefix="bs-unreadable-") as tmp:
        run = Path(tmp) / "run"
        assert main(["generate", str(run), "--seed", "1", *SMALL]) == 0
        capsys.readouterr()
        Path(tmp).chmod(0o755)
        (run / "batch_001" / "img_0001.png").chmod(0)
        as_root = os.geteuid() == 0
        if as_root:
            os.seteuid(NOBODY)
        try:
            status, line = _process(run, capsys)
        finally:
            if as_root:
                os.seteuid(0)
    assert status == 2
    assert line == (
        "batch-stats: error: batch_001/img_0001.png: the file cannot be read (Permission denied)"
    )


@pytest.mark.parametrize("where", ["batch", "file", "run"])
def test_names_that_are_not_utf8_are_named_by_their_bytes(
    where: str, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = os.fsdecode(b"bad\xff")
    if where == "batch":
        (run_dir / "batch_002").rename(run_dir / bad)
    elif where == "file":
        (run_dir / "batch_002" / "img_0001.png").rename(run_dir / "batch_002" / bad)
    else:
        run_dir = run_dir.rename(run_dir.parent / bad)
    status, line = _process(run_dir, capsys)
    assert status == 2
    assert "b'bad\\xff'" in line
    assert "is not valid UTF-8" in line
    if where == "run":
        assert line.endswith("or give --run-id")
        assert _process(run_dir, capsys, "--run-id", "renamed")[0] == 0


def test_an_output_that_is_a_folder_is_a_one_line_error(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").mkdir()
    status, line = _process(run_dir, capsys, "-o", str(tmp_path / "out"))
    assert status == 2
    assert line == (
        f"batch-stats: error: the output {tmp_path / 'out'} is a folder; name the Parquet file "
        f"to write, for example {tmp_path / 'out' / 'batch_stats.parquet'}"
    )


def test_entries_that_are_not_files_are_listed_not_skipped(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = run_dir / "batch_001"
    (batch / "broken.png").symlink_to(batch / "nowhere.png")
    (batch / "loop.png").symlink_to(batch / "loop.png")
    os.mkfifo(batch / "pipe.png")
    (batch / "nested").mkdir()
    (batch / ".hidden").write_bytes(b"ignored, as documented")
    (batch / "good-link.png").symlink_to(batch / "img_0001.png")  # a link to a file is a file
    status, line = _process(run_dir, capsys)
    assert status == 2
    assert line.startswith(f"batch-stats: error: 4 entries of {run_dir} are not image files: ")
    for entry in (
        "batch_001/broken.png: a broken symbolic link",
        "batch_001/loop.png: not readable (Too many levels of symbolic links)",
        "batch_001/pipe.png: a named pipe (FIFO)",
        "batch_001/nested: a folder",
    ):
        assert entry in line
    for entry in ("broken.png", "loop.png", "pipe.png", "nested"):
        os.remove(batch / entry) if entry != "nested" else (batch / entry).rmdir()
    assert _process(run_dir, capsys)[0] == 0  # the link to a real image is processed
