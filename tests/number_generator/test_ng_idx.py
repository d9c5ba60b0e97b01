"""The IDX parser and the directory loader reject anything that is not a clean MNIST file."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from number_generator import DigitSource, IDXFormatError, load_source, read_idx
from number_generator._idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC


def _idx(shape: tuple[int, ...], payload: bytes | None = None) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
    size = int(np.prod(shape))
    return header + (
        payload if payload is not None else bytes(range(256)) * (size // 256) + bytes(size % 256)
    )


def test_reads_raw_and_gzip_alike(tmp_path: Path) -> None:
    data = _idx((3, 28, 28))
    (tmp_path / "raw").write_bytes(data)
    (tmp_path / "packed").write_bytes(gzip.compress(data))
    raw = read_idx(tmp_path / "raw", expected_magic=IDX_IMAGES_MAGIC)
    packed = read_idx(tmp_path / "packed", expected_magic=IDX_IMAGES_MAGIC)
    assert raw.shape == (3, 28, 28)
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw, packed)
    assert raw.reshape(-1)[:256].tolist() == list(range(256))
    assert not raw.flags.writeable


def test_real_mnist_test_set(mnist_dir: Path) -> None:
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte", expected_magic=IDX_IMAGES_MAGIC)
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte", expected_magic=IDX_LABELS_MAGIC)
    assert images.shape == (10_000, 28, 28)
    assert labels.shape == (10_000,)
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_idx((2, 28, 28))[:-1], "truncated"),
        (_idx((2, 28, 28)) + b"\0", "trailing bytes"),
        (_idx((2, 28, 28))[:10], "truncated header"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "not an IDX file"),
        (b"\0\0", "too short"),
        (struct.pack(">HBBI", 0, 0x0D, 1, 4) + bytes(16), "element type 0x0d"),
        (_idx((5,)), "magic number 2049 does not match the expected 2051"),
    ],
)
def test_rejects_corrupt_or_foreign_files(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "file"
    path.write_bytes(data)
    with pytest.raises(IDXFormatError, match=message) as info:
        read_idx(path, expected_magic=IDX_IMAGES_MAGIC)
    assert str(path) in str(info.value)


def test_truncated_gzip_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx((2, 28, 28)))[:-20])
    with pytest.raises(IDXFormatError, match="corrupt or truncated gzip"):
        read_idx(path)


def test_directory_needs_matching_images_and_labels(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no MNIST files"):
        DigitSource.from_directory(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx((3, 28, 28)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx((4,), bytes([0, 1, 2, 3])))
    with pytest.raises(IDXFormatError, match="4 labels for 3 images"):
        DigitSource.from_directory(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx((3,), bytes([0, 1, 12])))
    with pytest.raises(IDXFormatError, match="labels must be 0-9"):
        DigitSource.from_directory(tmp_path)


def test_directory_of_raw_files_loads_like_the_package(
    mnist_dir: Path, source: DigitSource
) -> None:
    loaded = DigitSource.from_directory(mnist_dir, verify=True)
    assert len(loaded) == len(source) == 10_000
    np.testing.assert_array_equal(loaded.glyphs, source.glyphs)
    assert load_source(mnist_dir).glyphs.shape == source.glyphs.shape


def test_verify_rejects_a_modified_file(mnist_dir: Path) -> None:
    path = mnist_dir / "t10k-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[-1] = (data[-1] + 1) % 10
    path.write_bytes(bytes(data))
    with pytest.raises(IDXFormatError, match="SHA-256"):
        DigitSource.from_directory(mnist_dir, verify=True)
    # Without verification (a user's own files) the same directory loads.
    assert len(DigitSource.from_directory(mnist_dir)) == 10_000


def test_environment_variable_selects_the_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    images = np.zeros((10, 28, 28), dtype=np.uint8)
    images[:, 5:20, 10:14] = 200
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx((10, 28, 28), images.tobytes()))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx((10,), bytes(range(10))))
    monkeypatch.setenv("NUMBER_GENERATOR_MNIST_DIR", str(tmp_path))
    chosen = load_source()
    assert len(chosen) == 10
    assert chosen.max_widths == (4,) * 10


def test_source_from_arrays_validates() -> None:
    with pytest.raises(ValueError, match=r"shape \(n, 28, 28\)"):
        DigitSource.from_arrays(np.zeros((2, 20, 20), np.uint8), [0, 1])
    with pytest.raises(ValueError, match="no image of digit"):
        DigitSource.from_arrays(np.full((2, 28, 28), 9, np.uint8), [0, 1])
    images = np.full((10, 28, 28), 9, np.uint8)
    images[3] = 0
    with pytest.raises(ValueError, match="blank images"):
        DigitSource.from_arrays(images, list(range(10)))


def test_glyphs_are_the_ink_cropped_inverted_images(source: DigitSource) -> None:
    k = 17
    index = int(source.order[int(source.starts[3]) + k])  # the image behind glyph 17 of digit 3
    image = source.images[index]
    assert source.labels[index] == 3
    columns = np.flatnonzero(image.max(axis=0) > 0)
    expected = 1 - image[:, columns[0] : columns[-1] + 1].astype(np.float32) / 255
    np.testing.assert_allclose(source.glyph(3, k), expected, atol=1e-7)
    with pytest.raises(IndexError, match="digit 3 has 1010 glyphs"):
        source.glyph(3, 1010)
