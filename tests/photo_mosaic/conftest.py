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
