"""Both CLIs in-process, and the phone-number dataset they write."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import phonenumbers
import pytest
from PIL import Image

from number_generator import DigitSource, write_phone_dataset
from number_generator.cli import phone_main, sequence_main


def _one_line_error(capsys: pytest.CaptureFixture[str], program: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"{program}: error: ")
    return lines[0]


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.mode == "L"
        return np.asarray(image)


# --- generate-numbers-sequence -------------------------------------------------------------


def test_sequence_cli_writes_a_named_png_in_the_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sequence_main(["0451", "2", "6", "120", str(tmp_path), "--seed", "7"]) == 0
    expected = tmp_path / "0451_w120_s2-6_seed7.png"
    assert capsys.readouterr().out.strip() == str(expected)
    pixels = _png(expected)
    assert pixels.shape == (28, 120)
    assert pixels.min() == 0
    assert pixels.max() == 255
    assert (pixels[:, 0] == 255).all(), "centred: white margins"


def test_sequence_cli_defaults_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert sequence_main(["007", "0", "3", "80"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["007_w80_s0-3.png"]


def test_sequence_cli_is_reproducible_and_accepts_a_file_path(tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "sub" / "b.png"
    assert sequence_main(["123", "1", "4", "90", str(a), "--seed", "3", "--align", "left"]) == 0
    assert sequence_main(["123", "1", "4", "90", str(b), "--seed", "3", "--align", "left"]) == 0
    np.testing.assert_array_equal(_png(a), _png(b))
    assert (_png(a)[:, 0] < 255).any(), "left-aligned: ink in the first column"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["12a", "1", "2", "100"], "must contain only the digits 0-9"),
        (["", "1", "2", "100"], "the sequence is empty"),
        (["12", "3", "2", "100"], r"min_spacing \(3\) must not exceed max_spacing \(2\)"),
        (["12", "-1", "2", "100"], "must be >= 0"),
        (["12", "1", "2.5", "100"], "must be an integer"),
        (["12", "1", "2", "0"], "must be a positive integer"),
        (["12", "1", "2", "-4"], "must be a positive integer"),
        (["12", "1", "2"], "the following arguments are required"),
        (["12", "1", "2", "100", "--align", "middle"], "invalid choice"),
    ],
)
def test_sequence_cli_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sequence_main(argv)
    assert exit_info.value.code == 2
    line = _one_line_error(capsys, "generate-numbers-sequence")
    assert re.search(message, line), line


def test_sequence_cli_width_too_small(capsys: pytest.CaptureFixture[str]) -> None:
    assert sequence_main(["0123456789", "2", "8", "50"]) == 1
    assert "image_width 50 is too small" in _one_line_error(capsys, "generate-numbers-sequence")


def test_sequence_cli_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert sequence_main(["12", "1", "2", "60", str(blocker / "out.png")]) == 1
    assert "cannot write" in _one_line_error(capsys, "generate-numbers-sequence")


def test_sequence_cli_corrupt_mnist(
    tmp_path: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = mnist_dir / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    assert sequence_main(["12", "1", "2", "60", str(tmp_path), "--mnist-dir", str(mnist_dir)]) == 1
    line = _one_line_error(capsys, "generate-numbers-sequence")
    assert "truncated" in line
    assert "t10k-images-idx3-ubyte" in line


# --- generate-phone-numbers ----------------------------------------------------------------


def _labels(directory: Path) -> list[dict[str, str]]:
    with (directory / "labels.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_phone_cli_writes_images_and_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dataset"
    argv = ["2", "5", "260", "300", str(out), "--seed", "1", "--workers", "2", "--quiet"]
    assert phone_main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out / "labels.csv")
    rows = _labels(out)
    assert len(rows) == 300
    assert len({r["digits"] for r in rows}) == 300
    assert sorted(p.name for p in out.glob("*.png")) == sorted(r["file"] for r in rows)
    for row in rows[:40]:
        assert row["file"].endswith(f"_{row['digits']}.png")
        parsed = phonenumbers.parse(row["digits"], "JP")
        assert phonenumbers.is_valid_number(parsed)
        assert row["formatted"].replace("-", "") == row["digits"]
        pixels = _png(out / row["file"])
        assert pixels.shape == (28, 260)
        assert pixels.min() == 0
        assert (pixels[:, :2] == 255).all(), "no hyphen or other mark: the digits are centred"


def test_images_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    one = write_phone_dataset(tmp_path / "one", 250, (1, 4), 240, rng=9, workers=1, chunk_size=60)
    two = write_phone_dataset(tmp_path / "two", 250, (1, 4), 240, rng=9, workers=2, chunk_size=60)
    assert one.read_text() == two.read_text()
    for row in _labels(tmp_path / "one")[::25]:
        assert (tmp_path / "one" / row["file"]).read_bytes() == (
            tmp_path / "two" / row["file"]
        ).read_bytes()


def test_phone_images_show_the_right_digits(
    tmp_path: Path, source: DigitSource, decoder: Any
) -> None:
    write_phone_dataset(tmp_path, 20, (1, 3), 240, rng=2, workers=1, align="left")
    for row in _labels(tmp_path):
        digits = [int(c) for c in row["digits"]]
        image = _png(tmp_path / row["file"]).astype(np.float32) / np.float32(255)
        decoded = decoder.decode(image, digits, source)
        assert all(1 <= g <= 3 for g in decoded.gaps)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["2", "5", "200", "0"], "must be a positive integer"),
        (["2", "5", "200", "-3"], "must be a positive integer"),
        (["5", "2", "200", "10"], r"min_spacing \(5\) must not exceed max_spacing \(2\)"),
        (["2", "5", "0", "10"], "must be a positive integer"),
        (["2", "5", "200", "10", "--workers", "0"], "must be a positive integer"),
        (["2", "5", "200", "10", "--compress-level", "12"], "invalid choice"),
    ],
)
def test_phone_cli_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        phone_main(argv)
    assert exit_info.value.code == 2
    line = _one_line_error(capsys, "generate-phone-numbers")
    assert re.search(message, line), line


def test_phone_cli_more_numbers_than_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert phone_main(["1", "2", "300", "600000000", str(tmp_path / "x"), "--quiet"]) == 1
    assert "cannot generate 600,000,000 unique phone numbers" in _one_line_error(
        capsys, "generate-phone-numbers"
    )
    assert not (tmp_path / "x").exists(), "nothing is written when the request is impossible"


def test_phone_cli_width_too_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert phone_main(["1", "2", "60", "10", str(tmp_path / "x"), "--quiet"]) == 1
    assert "image_width 60 is too small" in _one_line_error(capsys, "generate-phone-numbers")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_phone_cli_read_only_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tmp_path.chmod(0o500)
    try:
        assert phone_main(["1", "2", "200", "5", str(tmp_path / "x"), "--quiet"]) == 1
    finally:
        tmp_path.chmod(0o700)
    assert "cannot write to output directory" in _one_line_error(capsys, "generate-phone-numbers")


def test_phone_cli_output_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert phone_main(["1", "2", "200", "5", str(blocker), "--quiet"]) == 1
    assert "cannot write to output directory" in _one_line_error(capsys, "generate-phone-numbers")


def test_progress_bar_and_uncompressed_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    packed = write_phone_dataset(tmp_path / "packed", 30, (1, 3), 200, rng=4, workers=1)
    raw = write_phone_dataset(
        tmp_path / "raw", 30, (1, 3), 200, rng=4, workers=1, compress_level=0, progress=True
    )
    assert "phone numbers: 100%" in capsys.readouterr().err
    assert packed.read_text() == raw.read_text()
    for row in _labels(tmp_path / "raw")[:5]:
        stored, compressed = tmp_path / "raw" / row["file"], tmp_path / "packed" / row["file"]
        np.testing.assert_array_equal(_png(stored), _png(compressed))
        assert stored.stat().st_size > 2 * compressed.stat().st_size
