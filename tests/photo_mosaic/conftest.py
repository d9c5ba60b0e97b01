"""Fixtures: real JPEG/PNG tile folders written with Pillow, and a target picture."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_photo(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> Path:
    """A photo-like image: a solid colour with a little deterministic texture."""
    rng = np.random.default_rng(abs(hash((rgb, size))) % 2**32)
    base = np.empty((size[1], size[0], 3), dtype=np.int16)
    base[:] = rgb
    noise = rng.integers(-3, 4, size=base.shape)
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in {".jpg", ".jpeg"}:
        Image.fromarray(arr).save(path, quality=95)
    else:
        Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def photo_writer() -> Callable[..., Path]:
    """The function that writes the fixture photos, for tests that change a folder."""
    return write_photo


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def palette(rng: np.random.Generator) -> list[tuple[int, int, int]]:
    colours = rng.integers(0, 256, size=(24, 3))
    return [(int(r), int(g), int(b)) for r, g, b in colours]


@pytest.fixture
def tile_folder(tmp_path: Path, palette: list[tuple[int, int, int]]) -> Path:
    """24 distinct photos (JPEG and PNG, in sub-folders) and 3 exact duplicate copies."""
    folder = tmp_path / "photos"
    for k, rgb in enumerate(palette):
        suffix = ".png" if k % 3 == 0 else ".jpg"
        write_photo(folder / f"album{k % 2}" / f"img_{k:02d}{suffix}", rgb)
    for k in (1, 5, 9):
        src = next(folder.rglob(f"img_{k:02d}.*"))
        (folder / "copies").mkdir(exist_ok=True)
        (folder / "copies" / f"dup_{src.name}").write_bytes(src.read_bytes())
    return folder


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "tiles.h5"


@pytest.fixture
def target_path(tmp_path: Path) -> Path:
    """A 120 x 80 gradient picture."""
    y, x = np.mgrid[0:80, 0:120]
    arr = np.stack([x * 2, y * 3, 255 - x * 2], axis=-1).clip(0, 255).astype(np.uint8)
    path = tmp_path / "target.png"
    Image.fromarray(arr).save(path)
    return path


def write_bomb_png(path: Path, width: int = 30_000, height: int = 30_000) -> Path:
    """A valid little PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb:
    Pillow refuses more than twice ``Image.MAX_IMAGE_PIXELS`` when the file is opened)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    # A few rows of data: the declared size alone makes it a bomb.
    idat = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def write_grey16(path: Path, value: int, size: tuple[int, int] = (40, 30)) -> Path:
    """A 16-bit greyscale PNG (Pillow mode I;16) of one value."""
    arr = np.full((size[1], size[0]), value, dtype=np.uint16)
    image = Image.fromarray(arr)
    assert image.mode == "I;16"
    image.save(path)
    return path


def write_rotated_jpeg(path: Path) -> Path:
    """A portrait photo (40 x 80: red top half, blue bottom half) stored lying on its side, with
    the EXIF orientation 6 ("rotate 90 degrees clockwise to display") that stands it up."""
    upright = np.zeros((80, 40, 3), dtype=np.uint8)
    upright[:40] = (220, 20, 20)
    upright[40:] = (20, 20, 220)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 80 x 40, sideways
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, quality=95, exif=exif)
    return path


@pytest.fixture
def bomb_png(tmp_path: Path) -> Path:
    return write_bomb_png(tmp_path / "bomb.png")


@pytest.fixture
def rotated_jpeg(tmp_path: Path) -> Path:
    return write_rotated_jpeg(tmp_path / "portrait.jpg")


@pytest.fixture
def grey16_writer() -> Callable[..., Path]:
    return write_grey16
