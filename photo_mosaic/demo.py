"""Offline demo data: tile photos and a target made from scikit-image's bundled sample pictures.

scikit-image ships a few photographs inside its wheel (no download): ``chelsea`` (a cat, the
target), ``astronaut``, ``coffee``, ``rocket`` and ``immunohistochemistry``. The
tiles are random crops of them with random brightness, saturation and colour shifts, saved as
JPEG and PNG, plus exact duplicate copies, a truncated JPEG and a text file posing as an image to
show the duplicate removal and the error report.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

__all__ = ["DemoData", "make_demo_data"]

_SOURCES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
)


@dataclass(frozen=True)
class DemoData:
    tiles: Path
    target: Path
    n_written: int
    n_duplicates: int
    n_broken: int


def _samples() -> list[Image.Image]:
    try:
        from skimage import data
    except ImportError as exc:
        raise RuntimeError(
            "the demo uses scikit-image's bundled sample photos: pip install 'scikit-image==0.26.0'"
        ) from exc
    images = []
    for name in _SOURCES:
        arr = getattr(data, name)()
        if arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[:, :, :3]
        images.append(Image.fromarray(np.ascontiguousarray(arr)).convert("RGB"))
    return images


def make_demo_data(
    out_dir: str | Path, *, n_tiles: int = 2000, n_duplicates: int = 150, seed: int = 0
) -> DemoData:
    """Write ``n_tiles`` tile photos (+ duplicates and broken files) and the target picture."""
    if n_tiles < 1 or n_duplicates < 0:
        raise ValueError(f"need n_tiles >= 1 and n_duplicates >= 0, got {n_tiles}, {n_duplicates}")
    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    tiles = root / "tiles"
    if tiles.exists():
        shutil.rmtree(tiles)
    tiles.mkdir(parents=True)
    sources = _samples()
    written: list[Path] = []
    for k in range(n_tiles):
        src = sources[int(rng.integers(len(sources)))]
        w, h = src.size
        side = int(rng.integers(min(w, h) // 8, min(w, h) // 2 + 1))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        aspect = float(rng.uniform(0.75, 1.33))
        crop = src.crop((x, y, x + side, y + min(h - y, int(side * aspect))))
        crop = ImageEnhance.Brightness(crop).enhance(float(rng.uniform(0.4, 1.5)))
        crop = ImageEnhance.Color(crop).enhance(float(rng.uniform(0.3, 1.8)))
        tint = np.asarray(crop, dtype=np.float32) * rng.uniform(0.6, 1.3, size=3)
        crop = Image.fromarray(np.clip(tint, 0, 255).astype(np.uint8))
        crop = crop.resize((128, max(1, round(128 * crop.height / crop.width))))
        sub = tiles / f"set{k % 4}"
        sub.mkdir(exist_ok=True)
        path = sub / (f"photo_{k:05d}.png" if k % 10 == 0 else f"photo_{k:05d}.jpg")
        crop.save(path, quality=88) if path.suffix == ".jpg" else crop.save(path)
        written.append(path)
    dup_dir = tiles / "copies"
    dup_dir.mkdir()
    for k in rng.choice(len(written), size=min(n_duplicates, len(written)), replace=False):
        original = written[int(k)]
        shutil.copyfile(original, dup_dir / f"copy_of_{original.name}")
    broken = tiles / "broken"
    broken.mkdir()
    (broken / "truncated.jpg").write_bytes(written[1].read_bytes()[:200])
    (broken / "notes.png").write_text("not an image\n")
    (broken / "README.txt").write_text("other files are ignored\n")
    target = root / "target.png"
    sources[1].save(target)
    return DemoData(
        tiles=tiles,
        target=target,
        n_written=n_tiles,
        n_duplicates=min(n_duplicates, len(written)),
        n_broken=2,
    )
