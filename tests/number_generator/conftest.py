"""Fixtures for number_generator: real MNIST sources and a decoder that reads renders back."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from number_generator import DigitSource, clear_source_cache, load_source


@pytest.fixture(scope="session")
def source() -> DigitSource:
    """The MNIST test set shipped in the package (the offline default)."""
    return load_source()


@pytest.fixture(autouse=True)
def _isolated_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """No test reads the user's real cache or MNIST directory; every test resolves the default
    source afresh (from its own environment)."""
    monkeypatch.delenv("NUMBER_GENERATOR_MNIST_DIR", raising=False)
    monkeypatch.delenv("NUMBER_GENERATOR_MNIST_MIRROR", raising=False)
    monkeypatch.setenv("NUMBER_GENERATOR_CACHE_DIR", str(tmp_path_factory.mktemp("empty-cache")))
    clear_source_cache()
    yield
    clear_source_cache()


@pytest.fixture(scope="session")
def packaged_gz() -> dict[str, bytes]:
    """The gzip bytes of the shipped MNIST test files, by file name."""
    data = resources.files("number_generator") / "data"
    return {
        name: (data / name).read_bytes()
        for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    }


@pytest.fixture
def mnist_dir(tmp_path: Path, packaged_gz: dict[str, bytes]) -> Path:
    """A directory holding the MNIST test split as raw (decompressed) IDX files."""
    directory = tmp_path / "mnist"
    directory.mkdir()
    for name, data in packaged_gz.items():
        (directory / name.removesuffix(".gz")).write_bytes(gzip.decompress(data))
    return directory


@dataclass(frozen=True)
class Decoded:
    glyphs: list[int]  # index into DigitSource.glyphs (digit-sorted order)
    starts: list[int]
    gaps: list[int]


def decode(image: npt.NDArray[np.float32], digits: list[int], source: DigitSource) -> Decoded:
    """Read back which glyph of each digit was pasted where, from the pixels alone.

    Walks the image left to right: the first ink column starts a glyph, which must equal (pixel
    for pixel) one glyph of the expected digit; the gap is the white run that follows it. Needs
    gaps of at least one column so that neighbouring glyphs are not confused.
    """
    pixels = np.rint(image * 255).astype(np.uint8)
    ink = (pixels < 255).any(axis=0)
    x = int(np.argmax(ink))
    assert ink[x], "the image holds no ink"
    found: list[int] = []
    starts: list[int] = []
    gaps: list[int] = []
    block = source.glyphs.shape[2]
    padded = np.pad(pixels, ((0, 0), (0, block + 1)), constant_values=255)
    padded_ink = np.pad(ink, (0, block + 1))
    for j, digit in enumerate(digits):
        lo = int(source.starts[digit])
        hi = lo + int(source.counts[digit])
        widths = source.widths[lo:hi]
        window = padded[:, x : x + block]
        columns_equal = (source.glyphs[lo:hi] == window).all(axis=1)  # (candidates, block)
        prefix_equal = np.logical_and.accumulate(columns_equal, axis=1)
        ok = prefix_equal[np.arange(hi - lo), widths - 1]
        if j < len(digits) - 1:
            ok &= ~padded_ink[x + widths]  # a glyph is followed by white when gaps are >= 1
        ok &= x + widths <= pixels.shape[1]
        match = lo + int(np.argmax(ok)) if ok.any() else None
        assert match is not None, f"no glyph of digit {digit} at column {x}"
        found.append(match)
        starts.append(x)
        end = x + int(source.widths[match])
        if j < len(digits) - 1:
            rest = ink[end:]
            assert rest.any(), f"digit {j + 1} is missing"
            gap = int(np.argmax(rest))
            gaps.append(gap)
            x = end + gap
        else:
            assert not ink[end:].any(), "ink after the last digit"
    return Decoded(found, starts, gaps)


@pytest.fixture(scope="session")
def decoder() -> type[_Decoder]:
    """``decoder.decode(image, digits, source)``: see :func:`decode`."""
    return _Decoder


class _Decoder:
    decode = staticmethod(decode)
