"""Dataset formats (png, npz, hdf5, shards), train/validation/test splits from disjoint MNIST
writers, and the manifest with counts, parameters and checksums."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from number_generator import DigitSource, write_phone_dataset
from number_generator._dataset import write_phone_splits
from number_generator._source import split_sources
from number_generator.cli import phone_main

#: The full MNIST files (train and test), in the ``shared/`` folder beside the checkout where the
#: project's machines and CI have them; NUMBER_GENERATOR_TEST_MNIST_DIR overrides it.
FULL_MNIST = Path(
    os.environ.get(
        "NUMBER_GENERATOR_TEST_MNIST_DIR",
        Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist",
    )
)

needs_full_mnist = pytest.mark.skipif(
    not (FULL_MNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"the full MNIST files are not in {FULL_MNIST} (set NUMBER_GENERATOR_TEST_MNIST_DIR)",
)
OPTIONS: dict[str, Any] = {"rng": 11, "workers": 2, "chunk_size": 40}


def _png(data: bytes | Path) -> npt.NDArray[np.uint8]:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
        return np.asarray(image)


def _labels(folder: Path) -> list[dict[str, str]]:
    with (folder / "labels.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A png dataset: what every other format must hold, image for image."""
    folder = tmp_path_factory.mktemp("png") / "data"
    write_phone_dataset(folder, 150, (1, 4), 260, **OPTIONS)
    return folder


def test_png_manifest_and_checksums(reference: Path) -> None:
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["format"] == "png"
    assert manifest["parameters"]["spacing_range"] == [1, 4]
    assert manifest["parameters"]["image_width"] == 260
    assert manifest["parameters"]["seed"] == 11
    entry = manifest["splits"]["dataset"]
    assert entry["count"] == 150
    for listed in entry["files"]:
        data = (reference / listed["name"]).read_bytes()
        assert listed["bytes"] == len(data)
        assert listed["sha256"] == hashlib.sha256(data).hexdigest()
    sums = (reference / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == 150
    for line in sums:
        digest, name = line.split("  ")
        assert hashlib.sha256((reference / name).read_bytes()).hexdigest() == digest


def test_npz_holds_the_same_images_digits_and_boxes(reference: Path, tmp_path: Path) -> None:
    write_phone_dataset(tmp_path / "npz", 150, (1, 4), 260, format="npz", **OPTIONS)
    rows = _labels(reference)
    records = [json.loads(line) for line in (reference / "boxes.jsonl").read_text().splitlines()]
    with np.load(tmp_path / "npz" / "images.npz") as arrays:
        images, digits = arrays["images"], arrays["digits"]
        lengths, boxes = arrays["lengths"], arrays["boxes"]
    assert images.shape == (150, 28, 260)
    assert images.dtype == np.uint8
    assert digits.tolist() == [r["digits"] for r in rows]
    for i, (row, record) in enumerate(zip(rows, records, strict=True)):
        np.testing.assert_array_equal(images[i], _png(reference / row["file"]))
        assert lengths[i] == len(row["digits"])
        assert boxes[i, : lengths[i]].tolist() == record["boxes"]
        assert (boxes[i, lengths[i] :] == -1).all()
    assert {e["name"] for e in json.loads((tmp_path / "npz" / "manifest.json").read_text())[
        "splits"]["dataset"]["files"]} == {"labels.csv", "boxes.jsonl", "images.npz"}  # fmt: skip


def test_hdf5_holds_the_same_images(reference: Path, tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    write_phone_dataset(tmp_path / "h5", 150, (1, 4), 260, format="hdf5", **OPTIONS)
    rows = _labels(reference)
    with h5py.File(tmp_path / "h5" / "images.h5", "r") as h5:
        assert h5["images"].shape == (150, 28, 260)
        assert [d.decode() for d in h5["digits"][:]] == [r["digits"] for r in rows]
        for i in (0, 77, 149):
            np.testing.assert_array_equal(h5["images"][i], _png(reference / rows[i]["file"]))


def test_shards_are_tar_files_of_png_and_json_pairs(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    write_phone_dataset(out, 150, (1, 4), 260, format="shards", shard_size=64, **OPTIONS)
    shards = sorted(p.name for p in out.glob("shard-*.tar"))
    assert shards == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    rows = _labels(reference)
    seen = []
    for name in shards:
        with tarfile.open(out / name) as tar:
            members = tar.getmembers()
            assert len(members) % 2 == 0
            for png, meta in zip(members[::2], members[1::2], strict=True):
                key = png.name.removesuffix(".png")
                assert meta.name == f"{key}.json", "a sample's files are adjacent, PNG first"
                record = json.loads(tar.extractfile(meta).read())  # type: ignore[union-attr]
                pixels = _png(tar.extractfile(png).read())  # type: ignore[union-attr]
                row = rows[len(seen)]
                assert record["file"] == row["file"] == f"{key}.png"
                np.testing.assert_array_equal(pixels, _png(reference / row["file"]))
                seen.append(key)
    assert len(seen) == 150
    assert [len(seen[i : i + 64]) for i in range(0, 150, 64)] == [64, 64, 22]


def test_hdf5_without_h5py_says_which_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "h5py", None)  # what a core-only install sees
    argv = ["1", "4", "260", "10", str(tmp_path / "x"), "--format", "hdf5", "--quiet"]
    assert phone_main(argv) == 1
    assert "pip install 'imgpipe[hdf5]'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_splits_need_the_training_digits(tmp_path: Path, mnist_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="need MNIST's train files"):
        split_sources(mnist_dir)  # only the test split is there


@needs_full_mnist
def test_splits_come_from_disjoint_writers(tmp_path: Path, decoder: Any) -> None:
    sources = split_sources(FULL_MNIST)
    assert [len(sources[s]) for s in ("train", "validation", "test")] == [60_000, 5_000, 5_000]
    out = tmp_path / "splits"
    counts = {"train": 60, "validation": 20, "test": 20}
    write_phone_splits(out, counts, (1, 4), 280, source_arg=FULL_MNIST, align="left", **OPTIONS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: v["count"] for k, v in manifest["splits"].items()} == counts
    assert manifest["splits"]["train"]["digits"].startswith("MNIST train")
    numbers: set[str] = set()
    for split, n in counts.items():
        rows = _labels(out / split)
        assert len(rows) == n
        numbers |= {r["digits"] for r in rows}
        for row in rows[:10]:
            image = _png(out / split / row["file"]).astype(np.float32) / np.float32(255)
            digits = [int(c) for c in row["digits"]]
            # Every glyph is found, pixel for pixel, among the split's own digits only.
            decoder.decode(image, digits, sources[split])
            other = "test" if split != "test" else "train"
            with pytest.raises(AssertionError, match="no glyph"):
                _decode_all(decoder, image, digits, sources[other])
    assert len(numbers) == 100, "numbers are unique across the splits"


def _decode_all(decoder: Any, image: Any, digits: list[int], source: DigitSource) -> None:
    decoder.decode(image, digits, source)


@needs_full_mnist
def test_cli_splits_by_proportion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["1", "4", "280", "50", str(tmp_path / "s"), "--splits", "8,1,1", "--seed", "1",
            "--mnist-dir", str(FULL_MNIST), "--quiet", "--format", "npz"]  # fmt: skip
    assert phone_main(argv) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "s" / "manifest.json")
    sizes = {s: len(_labels(tmp_path / "s" / s)) for s in ("train", "validation", "test")}
    assert sizes == {"train": 40, "validation": 5, "test": 5}


@pytest.mark.parametrize("text", ["8,1", "a,b,c", "-1,1,1", "0,0,0"])
def test_cli_rejects_bad_split_proportions(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        phone_main(["1", "4", "280", "50", str(tmp_path), f"--splits={text}"])
    assert exit_info.value.code == 2
    assert "three non-negative proportions" in capsys.readouterr().err
