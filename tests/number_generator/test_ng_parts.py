"""Datasets written in parts (``part=(start, stop)``) and random digit-sequence datasets."""

from __future__ import annotations

import csv
import tarfile
from pathlib import Path

import pytest

from number_generator import iter_phone_numbers, write_phone_dataset, write_sequence_dataset

OPTIONS = {"rng": 5, "format": "shards", "shard_size": 100, "chunk_size": 40}


def _labels(folder: Path) -> list[list[str]]:
    with (folder / "labels.csv").open(encoding="utf-8") as fh:
        return list(csv.reader(fh))[1:]


def test_parts_hold_the_whole_datasets_bytes(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    write_phone_dataset(whole, 250, (2, 4), 260, workers=1, **OPTIONS)
    rows: list[list[str]] = []
    for start, stop in ((0, 100), (100, 200), (200, 250)):
        folder = tmp_path / f"part-{start}"
        write_phone_dataset(folder, 250, (2, 4), 260, workers=2, part=(start, stop), **OPTIONS)
        (tar,) = sorted(folder.glob("*.tar"))
        assert tar.name == f"shard-{start // 100:06d}.tar"
        assert tar.read_bytes() == (whole / tar.name).read_bytes()
        rows += _labels(folder)
    assert rows == _labels(whole)
    assert len({digits for _, digits, _ in rows}) == 250


def test_a_part_that_splits_a_chunk_keeps_only_its_images(tmp_path: Path) -> None:
    write_phone_dataset(tmp_path / "p", 90, (2, 4), 260, workers=1, part=(30, 90), **{
        **OPTIONS, "shard_size": 30, "chunk_size": 50})  # fmt: skip
    names = sorted(p.name for p in (tmp_path / "p").glob("*.tar"))
    assert names == ["shard-000001.tar", "shard-000002.tar"]
    with tarfile.open(tmp_path / "p" / names[0]) as tar:
        members = tar.getnames()
    assert members[0].startswith("000030_")
    assert len(members) == 60


@pytest.mark.parametrize(
    ("part", "message"),
    [((0, 300), "0 <= start < stop <= 250"), ((50, 100), "multiple of shard_size (100)")],
)
def test_bad_parts_are_refused(tmp_path: Path, part: tuple[int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        write_phone_dataset(tmp_path / "x", 250, (2, 4), 260, part=part, **OPTIONS)
    assert not (tmp_path / "x").exists()


def test_png_parts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="part needs format shards, npz or hdf5"):
        write_phone_dataset(tmp_path / "x", 10, (2, 4), 260, part=(0, 5))


def test_sequence_dataset(tmp_path: Path) -> None:
    write_sequence_dataset(tmp_path / "s", 30, 5, (0, 3), 150, rng=1, format="shards",
                           shard_size=10, workers=1)  # fmt: skip
    rows = _labels(tmp_path / "s")
    assert len(rows) == 30
    assert all(len(d) == 5 and d.isdigit() and f == d for _, d, f in rows)
    assert len(list((tmp_path / "s").glob("*.tar"))) == 3
    with pytest.raises(ValueError, match="length must be an integer from 1 to 16"):
        write_sequence_dataset(tmp_path / "t", 3, 17, (0, 3), 600)


def test_skipping_chunks_leaves_the_later_chunks_unchanged() -> None:
    drawn = list(iter_phone_numbers(1_000, rng=9, chunk_size=300))
    chunks = iter_phone_numbers(1_000, rng=9, chunk_size=300)
    assert [chunks.skip(), chunks.skip()] == [300, 300]
    assert list(chunks) == drawn[2:]
    with pytest.raises(StopIteration):
        chunks.skip()


@pytest.mark.parametrize("workers", [1, 2])
def test_on_shard_hears_of_each_tar_once_complete(tmp_path: Path, workers: int) -> None:
    heard: list[tuple[str, bytes, bool]] = []

    def on_shard(path: Path) -> None:
        # The tar is whole when heard of (tarfile reads it to the end), while later ones are not
        # written yet and the dataset is not published.
        with tarfile.open(path) as tar:
            assert len(tar.getnames()) == 2 * 100 or path.name == "shard-000002.tar"
        later = path.with_name(f"shard-{int(path.stem[-6:]) + 1:06d}.tar")
        heard.append((path.name, path.read_bytes(), later.exists()))
        assert path.parent.name.startswith(".")  # the hidden staging folder, not published

    write_phone_dataset(tmp_path / "out", 250, (2, 4), 260, workers=workers, on_shard=on_shard,
                        **OPTIONS)  # fmt: skip
    assert [name for name, _, _ in heard] == [f"shard-{k:06d}.tar" for k in range(3)]
    for name, data, later_existed in heard:
        assert data == (tmp_path / "out" / name).read_bytes()
        assert not later_existed
    heard.clear()
    write_phone_dataset(tmp_path / "part", 250, (2, 4), 260, workers=workers, part=(100, 250),
                        on_shard=on_shard, **OPTIONS)  # fmt: skip
    assert [name for name, _, _ in heard] == ["shard-000001.tar", "shard-000002.tar"]


def test_an_error_in_on_shard_stops_the_run_and_leaves_nothing(tmp_path: Path) -> None:
    def on_shard(path: Path) -> None:
        raise OSError(f"the upload of {path.name} failed")

    with pytest.raises(OSError, match=r"the upload of shard-000000\.tar failed"):
        write_phone_dataset(tmp_path / "out", 250, (2, 4), 260, workers=2, on_shard=on_shard,
                            **OPTIONS)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_on_shard_needs_the_shards_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_shard applies to format 'shards' only"):
        write_phone_dataset(tmp_path / "x", 10, (2, 4), 260, format="npz", on_shard=print)
    assert not (tmp_path / "x").exists()
