"""Edge cases: fresh randomness without an ``rng`` (per process, fork-safe), bounded sizes, runs
that fail half-way, reruns into an old dataset, tight widths, odd argument types, and output
paths under a regular file."""

from __future__ import annotations

import csv
import errno
import multiprocessing
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from number_generator import (
    DigitSource,
    generate_numbers_batch,
    generate_numbers_sequence,
    generate_phone_numbers,
    write_phone_dataset,
)
from number_generator._phone import PhoneFormat, capacity, iter_phone_numbers
from number_generator._png import PNGWriter
from number_generator._sequence import (
    MAX_BATCH_PIXELS,
    MAX_IMAGE_WIDTH,
    ArgumentTypeError,
    SpacingBiasWarning,
    generator,
    measure_bias,
)
from number_generator.cli import phone_main, sequence_main

DIGITS = [0, 9, 0, 1, 2, 3, 4, 5, 6, 7]


def _one_line(capsys: pytest.CaptureFixture[str], program: str, kind: str = "error") -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if f": {kind}: " in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{program}: {kind}: ")
    return lines[0]


# --- fresh randomness without an rng -----------------------------------------------------------


def _draw_without_rng(_: int) -> bytes:
    return b"".join(generate_numbers_sequence(DIGITS, (2, 8), 300).tobytes() for _ in range(5))


def test_without_rng_one_generator_per_process_and_images_differ() -> None:
    assert generator(None) is generator(None)
    first = generate_numbers_sequence(DIGITS, (2, 8), 300)
    second = generate_numbers_sequence(DIGITS, (2, 8), 300)
    assert not np.array_equal(first, second)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_forked_workers_do_not_repeat_each_others_draws() -> None:
    _draw_without_rng(0)  # the parent's generator exists before the fork
    context = multiprocessing.get_context("fork")
    with context.Pool(3) as pool:
        results = pool.map(_draw_without_rng, range(3), chunksize=1)
    results.append(_draw_without_rng(0))  # the parent goes on with its own stream
    assert len(set(results)) == len(results)


def test_separate_processes_draw_fresh_images() -> None:
    code = (
        "from number_generator import generate_numbers_sequence as g; import hashlib; "
        "print(hashlib.sha256(g([0, 9, 0, 1, 2], (2, 8), 150).tobytes()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert len(digests) == 2


@pytest.mark.parametrize(
    ("rng", "message"),
    [
        ("abc", "rng must be a numpy Generator"),
        (1.5, "rng must be a numpy Generator"),
        (True, "rng must be a numpy Generator"),
        ([1, 2], "rng must be a numpy Generator"),
        (-1, "non-negative"),
    ],
)
def test_bad_rng_is_the_projects_own_error(rng: Any, message: str) -> None:
    for call in (
        lambda: generate_numbers_sequence([1, 2], (1, 2), 80, rng=rng),
        lambda: generate_numbers_batch([[1, 2]], (1, 2), 80, rng=rng),
        lambda: generate_phone_numbers(3, rng=rng),
    ):
        with pytest.raises(ValueError, match=message):
            call()


# --- odd digits --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("digits", "message"),
    [
        (None, r"digits must be a sequence of integers 0-9 such as \[0, 9, 0\], got None"),
        (451, r"got 451 \(int\); for a number give its digits"),
        ({0, 4, 5}, "not a set: it has no order"),
        (frozenset({1, 2}), "not a frozenset: it has no order"),
        ({0: 1, 4: 1}, "not a dict: it has no order"),
    ],
)
def test_unordered_or_non_iterable_digits_are_refused(digits: Any, message: str) -> None:
    with pytest.raises(ArgumentTypeError, match=message):
        generate_numbers_sequence(digits, (1, 2), 100)


# --- sizes -------------------------------------------------------------------------------------


def test_huge_widths_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match=r"image_width 1,000,000,000 exceeds the limit of 1,000"):
        generate_numbers_sequence([1, 2], (1, 2), 10**9)
    with pytest.raises(ValueError, match="exceeds the limit"):
        generate_numbers_batch([[1, 2]], (1, 2), 10**9)
    with pytest.raises(ValueError, match="exceeds the limit"):
        write_phone_dataset("unused", 10, (1, 2), 10**9)
    assert generate_numbers_sequence([1, 2], (1, 2), MAX_IMAGE_WIDTH).shape == (28, MAX_IMAGE_WIDTH)


def test_huge_batches_are_refused_up_front() -> None:
    rows = MAX_BATCH_PIXELS // (28 * 1000) + 1
    digits = np.zeros((rows, 2), dtype=np.intp)
    with pytest.raises(ValueError, match="exceed the batch limit"):
        generate_numbers_batch(digits, (1, 2), 1000)


@pytest.mark.parametrize(
    "main", [sequence_main, phone_main], ids=["generate-numbers-sequence", "generate-phone-numbers"]
)
def test_clis_refuse_a_width_of_a_billion_in_one_line(
    main: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = (
        ["12", "1", "2", str(10**9), str(tmp_path)]
        if main is sequence_main
        else ["1", "2", str(10**9), "5", str(tmp_path / "out"), "--quiet"]
    )
    assert main(argv) == 1
    program = "generate-numbers-sequence" if main is sequence_main else "generate-phone-numbers"
    assert "exceeds the limit of 1,000,000 pixels" in _one_line(capsys, program)
    assert list(tmp_path.iterdir()) == []


def test_half_a_billion_numbers_come_lazily() -> None:
    with pytest.raises(ValueError, match="use iter_phone_numbers"):
        generate_phone_numbers(500_000_000)
    chunks = iter_phone_numbers(500_000_000, rng=1, chunk_size=50_000)
    first = next(chunks) + next(chunks)
    assert len(first) == 100_000
    assert len({n.digits for n in first}) == 100_000
    assert all(n.formatted.replace("-", "") == n.digits for n in first[:1000])


def test_lazy_numbers_exhaust_a_format_exactly_once() -> None:
    small = PhoneFormat("small", "0120", (2, 2), "123", 1.0)  # 3 * 1000 numbers
    other = PhoneFormat("other", "090", (1, 2), "12", 1.0)  # 2 * 100 numbers
    formats = (small, other)
    numbers = [
        n.digits
        for chunk in iter_phone_numbers(capacity(formats), rng=3, formats=formats, chunk_size=77)
        for n in chunk
    ]
    expected = {small.number(i) for i in range(small.size)} | {
        other.number(i) for i in range(other.size)
    }
    assert len(numbers) == len(expected) == 3200
    assert set(numbers) == expected


def test_lazy_numbers_are_spread_over_the_format() -> None:
    fmt = PhoneFormat("mobile", "090", (4, 4), "123456789", 1.0)
    numbers = next(iter_phone_numbers(20_000, rng=5, formats=(fmt,), chunk_size=20_000))
    first = np.array([int(n.digits[3]) for n in numbers])
    last = np.array([int(n.digits[-1]) for n in numbers])
    # chi-square, 8 and 9 degrees of freedom, p = 0.001
    for values, levels, limit in ((first, range(1, 10), 26.1), (last, range(10), 27.9)):
        counts = np.array([(values == v).sum() for v in levels])
        expected = len(values) / len(levels)
        assert ((counts - expected) ** 2 / expected).sum() < limit


# --- runs that fail, reruns --------------------------------------------------------------------


def test_a_run_that_fails_half_way_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[str] = []
    real_write = PNGWriter.write

    def write_until_the_disk_is_full(path: str, data: bytes) -> None:
        if len(written) == 250:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        written.append(path)
        real_write(path, data)

    monkeypatch.setattr(PNGWriter, "write", staticmethod(write_until_the_disk_is_full))
    with pytest.raises(OSError, match="No space left"):
        write_phone_dataset(tmp_path / "out", 600, (1, 3), 220, rng=1, workers=1, chunk_size=100)
    assert len(written) == 250
    assert list(tmp_path.iterdir()) == [], "no partial dataset, no staging folder"


def test_phone_cli_refuses_a_non_empty_folder_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "data"
    assert phone_main(["1", "3", "220", "30", str(out), "--seed", "1", "--quiet"]) == 0
    before = sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    assert phone_main(["1", "3", "220", "12", str(out), "--seed", "2", "--quiet"]) == 1
    assert "is not empty" in _one_line(capsys, "generate-phone-numbers")
    assert sorted(p.name for p in out.iterdir()) == before, "the old dataset is untouched"

    argv = ["1", "3", "220", "12", str(out), "--seed", "2", "--quiet", "--overwrite"]
    assert phone_main(argv) == 0
    with (out / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [r["file"] for r in rows] + ["labels.csv", "boxes.jsonl", "SHA256SUMS", "manifest.json"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "no staging folder is left"


def test_an_empty_existing_folder_is_used(tmp_path: Path) -> None:
    labels = write_phone_dataset(tmp_path, 5, (1, 3), 220, rng=1, workers=1)
    assert labels == tmp_path / "labels.csv"
    assert len(list(tmp_path.glob("*.png"))) == 5


# --- output under a regular file ---------------------------------------------------------------


def test_output_under_a_regular_file_is_not_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("")
    assert sequence_main(["12", "1", "2", "80", str(blocker / "sub" / "x.png")]) == 1
    assert f"{blocker} is not a directory" in _one_line(capsys, "generate-numbers-sequence")
    assert phone_main(["1", "2", "220", "5", str(blocker / "data"), "--quiet"]) == 1
    assert f"{blocker} is not a directory" in _one_line(capsys, "generate-phone-numbers")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        write_phone_dataset(blocker / "data", 5, (1, 2), 220)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# --- tight widths: the measured bias -----------------------------------------------------------


def test_tight_width_warns_with_the_measured_effect(source: DigitSource, decoder: Any) -> None:
    digits, spacing, width = [0, 8, 0, 8, 0], (1, 9), 110
    rejected, gap_all, gap_fit, _, _ = measure_bias(digits, *spacing, width, source)
    assert 0.05 < rejected < 0.95
    with pytest.warns(SpacingBiasWarning, match=r"of draws do not fit .*mean gap \d"):
        batch = generate_numbers_batch([digits] * 600, spacing, width, rng=4, align="left")
    # The warning's figure is what the images show.
    gaps = [g for image in batch for g in decoder.decode(image, digits, source).gaps]
    assert abs(np.mean(gaps) - gap_fit) < 0.25
    assert gap_fit < gap_all - 0.3
    with pytest.warns(SpacingBiasWarning, match="Use image_width >= "):
        generate_numbers_sequence([0, 8, 0, 8, 0, 8], spacing, 135, rng=1)


def test_no_warning_when_every_draw_fits(source: DigitSource) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate_numbers_sequence(DIGITS, (2, 8), 300, rng=1)
        generate_numbers_batch([DIGITS] * 5, (2, 8), 300, rng=1)


def test_cli_prints_the_warning_as_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sequence_main(["080808", "1", "9", "135", str(tmp_path), "--seed", "1"]) == 0
    assert "draws do not fit" in _one_line(capsys, "generate-numbers-sequence", "warning")


def test_a_dataset_larger_than_the_free_space_stops_after_the_first_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from collections import namedtuple

    import number_generator._dataset as dataset

    usage = namedtuple("usage", "total used free")
    nearly_full = usage(10**9, 10**9 - 300_000, 300_000)  # what a nearly full disk reports
    monkeypatch.setattr(dataset.shutil, "disk_usage", lambda path: nearly_full)
    written: list[str] = []
    real_write = PNGWriter.write

    def counting(path: str, data: bytes) -> None:
        written.append(path)
        real_write(path, data)

    monkeypatch.setattr(PNGWriter, "write", staticmethod(counting))
    argv = ["1", "4", "260", "3000", str(tmp_path / "big"), "--workers", "1", "--quiet"]
    assert phone_main(argv) == 1
    assert "the dataset needs about" in _one_line(capsys, "generate-phone-numbers")
    assert len(written) == 1000, "it stopped after the first chunk"
    assert list(tmp_path.iterdir()) == []
