"""MNIST digit sources: where the digits come from, and the per-digit glyphs prepared from them.

Sources, in order of precedence (see :func:`load_source`):

1. an explicit directory (or :class:`DigitSource`) passed by the caller, else the directory named
   by ``NUMBER_GENERATOR_MNIST_DIR``;
2. the user cache filled by ``python -m number_generator download`` (all 70,000 digits);
3. the MNIST test set shipped inside the package (10,000 digits), so the library works offline.

A directory may hold the training files, the test files or both (raw or gzip); every split found
is used. Files in the cache and in the package are checked against the SHA-256 of their
decompressed contents; files in a directory chosen by the caller are only format-checked, so that
users can point the library at their own IDX files.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import sys
import threading
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from number_generator._idx import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    IDXFormatError,
    parse_idx,
    read_idx,
)

__all__ = [
    "CACHE_DIR_ENV",
    "MNIST_DIR_ENV",
    "MNIST_FILES",
    "DigitSource",
    "SourceLike",
    "cache_dir",
    "clear_source_cache",
    "load_source",
    "to_float",
]

MNIST_DIR_ENV: Final = "NUMBER_GENERATOR_MNIST_DIR"
CACHE_DIR_ENV: Final = "NUMBER_GENERATOR_CACHE_DIR"

#: SHA-256 of the *decompressed* official MNIST files (gzip bytes differ between compressors).
MNIST_FILES: Final[dict[str, str]] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_SPLITS: Final = ("train", "t10k")
HEIGHT: Final = 28


@dataclass(frozen=True, eq=False, repr=False)
class DigitSource:
    """Labelled 28x28 digit images and the ink-cropped glyphs the generators paste.

    Build one with :meth:`from_arrays` or :meth:`from_directory`, or let :func:`load_source` pick
    the default. Glyphs are prepared once per source: each image's empty side columns (every pixel
    0) are removed and the pixels inverted to black ink on white (``1 - pixel / 255``).
    """

    name: str
    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.uint8]
    # Derived in __post_init__. Glyphs are sorted by digit: digit d owns glyphs
    # starts[d] : starts[d] + counts[d]; glyph k is glyphs[k, :, :widths[k]].
    starts: npt.NDArray[np.int64] = field(init=False)
    counts: npt.NDArray[np.int64] = field(init=False)
    order: npt.NDArray[np.int64] = field(init=False)
    widths: npt.NDArray[np.int64] = field(init=False)
    #: First and one-past-last row with ink, per glyph (the vertical extent of its box).
    tops: npt.NDArray[np.int64] = field(init=False)
    bottoms: npt.NDArray[np.int64] = field(init=False)
    glyphs: npt.NDArray[np.uint8] = field(init=False)
    min_widths: tuple[int, ...] = field(init=False)
    max_widths: tuple[int, ...] = field(init=False)
    # Plain-Python copies for the single-sequence path, where list indexing beats numpy.
    starts_list: list[int] = field(init=False)
    counts_list: list[int] = field(init=False)
    widths_list: list[int] = field(init=False)
    #: (digits, min gap, max gap) -> (narrowest, widest) total width, for repeated single calls.
    fit_cache: dict[tuple[tuple[int, ...], int, int], tuple[int, int]] = field(init=False)

    @classmethod
    def from_arrays(
        cls, images: npt.ArrayLike, labels: npt.ArrayLike, *, name: str = "arrays"
    ) -> DigitSource:
        """A source from ``images`` (n, 28, 28) uint8 (0 = background, 255 = ink) and labels."""
        imgs = np.asarray(images)
        labs = np.asarray(labels)
        if imgs.dtype != np.uint8 or imgs.ndim != 3 or imgs.shape[1:] != (HEIGHT, HEIGHT):
            raise ValueError(
                f"images must be a uint8 array of shape (n, 28, 28), got {imgs.dtype} {imgs.shape}"
            )
        if labs.ndim != 1 or labs.shape[0] != imgs.shape[0]:
            raise ValueError(
                f"labels must be a 1-D array with one label per image ({imgs.shape[0]}), "
                f"got shape {labs.shape}"
            )
        if not np.issubdtype(labs.dtype, np.integer) or (
            labs.size and (labs.min() < 0 or labs.max() > 9)
        ):
            raise ValueError("labels must be integers in 0-9")
        return cls(name=name, images=imgs, labels=labs.astype(np.uint8))

    @classmethod
    def from_directory(
        cls, directory: str | os.PathLike[str], *, verify: bool = False
    ) -> DigitSource:
        """Load every MNIST split (``train-*``, ``t10k-*``; raw or ``.gz``) found in ``directory``.

        With ``verify=True`` each file's decompressed contents must match the official SHA-256.
        """
        return _load_directory(Path(directory), verify=verify)

    def __post_init__(self) -> None:
        if self.images.shape[0] == 0:
            raise ValueError(f"digit source {self.name!r} holds no images")
        counts = np.bincount(self.labels, minlength=10).astype(np.int64)
        missing = [d for d in range(10) if counts[d] == 0]
        if missing:
            raise ValueError(f"digit source {self.name!r} has no image of digit(s) {missing}")
        order = np.argsort(self.labels, kind="stable").astype(np.int64)
        imgs: npt.NDArray[np.uint8] = self.images[order]
        ink: npt.NDArray[np.bool_] = np.any(imgs > 0, axis=1)  # (n, 28 columns): column has ink
        has_ink: npt.NDArray[np.bool_] = np.any(ink, axis=1)
        if not has_ink.all():
            blank = order[~has_ink][:5].tolist()
            raise ValueError(
                f"digit source {self.name!r} has blank images (no ink), e.g. indices {blank}"
            )
        ink_rows: npt.NDArray[np.bool_] = np.any(imgs > 0, axis=2)  # (n, 28 rows): row has ink
        tops = ink_rows.argmax(axis=1).astype(np.int64)
        bottoms = (HEIGHT - ink_rows[:, ::-1].argmax(axis=1)).astype(np.int64)
        left = ink.argmax(axis=1)
        right = HEIGHT - ink[:, ::-1].argmax(axis=1)
        widths = (right - left).astype(np.int64)
        block = int(widths.max())
        # Shift each image left by its first ink column, then keep `block` columns: glyph k sits
        # at columns 0 : widths[k], white (255) after it.
        cols = left[:, None] + np.arange(block)  # (n, block), may run past column 27
        inside = cols < HEIGHT
        shifted = np.take_along_axis(imgs, np.minimum(cols, HEIGHT - 1)[:, None, :], axis=2)
        glyphs = np.subtract(255, shifted, dtype=np.uint8)
        keep = np.arange(block) < widths[:, None]
        glyphs[~np.broadcast_to((keep & inside)[:, None, :], glyphs.shape)] = 255
        starts = np.zeros(10, dtype=np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        per_digit = np.split(widths, starts[1:])
        for name, value in (
            ("starts", starts),
            ("counts", counts),
            ("order", order),
            ("widths", widths),
            ("tops", tops),
            ("bottoms", bottoms),
            ("glyphs", glyphs),
        ):
            value.flags.writeable = False
            object.__setattr__(self, name, value)
        object.__setattr__(self, "min_widths", tuple(int(w.min()) for w in per_digit))
        object.__setattr__(self, "max_widths", tuple(int(w.max()) for w in per_digit))
        object.__setattr__(self, "starts_list", starts.tolist())
        object.__setattr__(self, "counts_list", counts.tolist())
        object.__setattr__(self, "widths_list", widths.tolist())
        object.__setattr__(self, "fit_cache", {})

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return f"DigitSource({self.name!r}, {len(self)} images)"

    def glyph(self, digit: int, k: int) -> npt.NDArray[np.float32]:
        """The ``k``-th ink-cropped glyph of ``digit``: (28, width) float32, ink 0.0 on 1.0."""
        if not 0 <= digit <= 9:
            raise ValueError(f"digit must be 0-9, got {digit}")
        if not 0 <= k < self.counts_list[digit]:
            raise IndexError(f"digit {digit} has {self.counts_list[digit]} glyphs, got index {k}")
        g = self.starts_list[digit] + k
        return to_float(self.glyphs[g, :, : self.widths_list[g]])


def to_float(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """uint8 ink-on-white (0 ink, 255 white) to float32 in [0, 1], exactly ``pixels / 255``."""
    return np.divide(pixels, np.float32(255.0), dtype=np.float32)


SourceLike = DigitSource | str | os.PathLike[str] | None


def cache_dir() -> Path:
    """The user cache for downloaded MNIST files (``NUMBER_GENERATOR_CACHE_DIR`` overrides it)."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "number_generator" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "number_generator"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "number_generator"


def load_source(source: SourceLike = None) -> DigitSource:
    """Resolve ``source`` to a prepared :class:`DigitSource` (cached per directory).

    ``None`` means the default: ``NUMBER_GENERATOR_MNIST_DIR`` if set, else the download cache if
    it holds a split, else the MNIST test set shipped with the package. The default is resolved
    once, on first use (environment variables are read then), and kept for the process; call
    :func:`clear_source_cache` to resolve it again.
    """
    if source is None:
        default = _default
        if default:
            return default[0]
        with _default_lock:
            if not _default:
                _default.append(_resolve_default())
            return _default[0]
    if isinstance(source, DigitSource):
        return source
    return _cached_directory(str(Path(source).expanduser().resolve()), False)


def clear_source_cache() -> None:
    """Forget the prepared sources (the default included), e.g. after changing the environment."""
    with _default_lock:
        _default.clear()
        _cached_directory.cache_clear()


_default: list[DigitSource] = []
_default_lock = threading.Lock()


def _resolve_default() -> DigitSource:
    mnist_dir = os.environ.get(MNIST_DIR_ENV)
    if mnist_dir:
        return _cached_directory(str(Path(mnist_dir).expanduser().resolve()), False)
    cache = cache_dir()
    if any(_split_files(cache, split) for split in _SPLITS):
        return _cached_directory(str(cache.resolve()), True)
    return _packaged()


def _split_files(directory: Path, split: str) -> tuple[Path, Path] | None:
    found: list[Path] = []
    for kind in ("images-idx3", "labels-idx1"):
        base = f"{split}-{kind}-ubyte"
        candidates = [directory / base, directory / f"{base}.gz"]
        existing = [p for p in candidates if p.is_file()]
        if not existing:
            return None
        found.append(existing[0])
    return found[0], found[1]


def _read_verified(path: Path, expected_magic: int, verify: bool) -> npt.NDArray[np.uint8]:
    if not verify:
        return read_idx(path, expected_magic=expected_magic)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IDXFormatError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    _check_sha256(raw, path.name.removesuffix(".gz"), str(path))
    return parse_idx(raw, name=str(path), expected_magic=expected_magic)


def _check_sha256(raw: bytes, base_name: str, where: str) -> None:
    expected = MNIST_FILES.get(base_name)
    if expected is None:
        raise IDXFormatError(f"{where}: not an MNIST file name ({sorted(MNIST_FILES)})")
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected:
        raise IDXFormatError(
            f"{where}: SHA-256 of the decompressed contents is {actual}, expected {expected} "
            "(corrupt or not the official file; delete it and download again)"
        )


def _load_directory(directory: Path, *, verify: bool) -> DigitSource:
    if not directory.is_dir():
        raise FileNotFoundError(f"MNIST directory {directory} does not exist or is not a directory")
    images: list[npt.NDArray[np.uint8]] = []
    labels: list[npt.NDArray[np.uint8]] = []
    used: list[str] = []
    for split in _SPLITS:
        files = _split_files(directory, split)
        if files is None:
            continue
        imgs = _read_verified(files[0], IDX_IMAGES_MAGIC, verify)
        labs = _read_verified(files[1], IDX_LABELS_MAGIC, verify)
        if imgs.shape[1:] != (HEIGHT, HEIGHT):
            raise IDXFormatError(f"{files[0]}: images are {imgs.shape[1:]}, expected (28, 28)")
        if labs.shape[0] != imgs.shape[0]:
            raise IDXFormatError(
                f"{files[1]}: {labs.shape[0]} labels for {imgs.shape[0]} images in {files[0]}"
            )
        if labs.size and labs.max() > 9:
            raise IDXFormatError(f"{files[1]}: labels must be 0-9, found {int(labs.max())}")
        images.append(imgs)
        labels.append(labs)
        used.append(split)
    if not images:
        names = ", ".join(
            f"{s}-images-idx3-ubyte[.gz] + {s}-labels-idx1-ubyte[.gz]" for s in _SPLITS
        )
        raise FileNotFoundError(f"no MNIST files in {directory}: expected {names}")
    return DigitSource(
        name=f"{directory} ({'+'.join(used)})",
        images=np.concatenate(images) if len(images) > 1 else images[0],
        labels=np.concatenate(labels) if len(labels) > 1 else labels[0],
    )


@functools.lru_cache(maxsize=8)
def _cached_directory(directory: str, verify: bool) -> DigitSource:
    return _load_directory(Path(directory), verify=verify)


@functools.lru_cache(maxsize=1)
def _packaged() -> DigitSource:
    data = resources.files("number_generator") / "data"
    arrays = []
    for base, magic in (
        ("t10k-images-idx3-ubyte", IDX_IMAGES_MAGIC),
        ("t10k-labels-idx1-ubyte", IDX_LABELS_MAGIC),
    ):
        raw = gzip.decompress((data / f"{base}.gz").read_bytes())
        _check_sha256(raw, base, f"package data {base}.gz")
        arrays.append(parse_idx(raw, name=f"package data {base}.gz", expected_magic=magic))
    return DigitSource(name="MNIST test set (packaged)", images=arrays[0], labels=arrays[1])


#: The three dataset splits and where their digits come from. MNIST's training and test sets have
#: disjoint writers; within the test set, the first 5,000 images come from NIST's SD-3 writers
#: (Census Bureau employees) and the last 5,000 from SD-1 (high-school students), also disjoint.
SPLIT_SOURCES: Final[dict[str, tuple[str, slice]]] = {
    "train": ("train", slice(None)),
    "validation": ("t10k", slice(0, 5000)),
    "test": ("t10k", slice(5000, None)),
}


def split_sources(directory: str | os.PathLike[str] | None = None) -> dict[str, DigitSource]:
    """Digit sources for the train, validation and test splits, from disjoint MNIST writers.

    ``train`` is MNIST's training set (60,000 digits), ``validation`` the first half of its test
    set and ``test`` the second half (see :data:`SPLIT_SOURCES`). ``directory`` defaults to
    ``NUMBER_GENERATOR_MNIST_DIR``, else the download cache; it must hold both splits' files.
    """
    if directory is None:
        env = os.environ.get(MNIST_DIR_ENV)
        folder = Path(env).expanduser() if env else cache_dir()
        verify = not env
    else:
        folder = Path(directory).expanduser()
        verify = False
    arrays: dict[str, tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]] = {}
    for split in _SPLITS:
        files = _split_files(folder, split) if folder.is_dir() else None
        if files is None:
            raise FileNotFoundError(
                f"the train/validation/test splits need MNIST's {split} files in {folder} "
                "(run `python -m number_generator download`, or pass a folder holding "
                f"{split}-images-idx3-ubyte[.gz] and {split}-labels-idx1-ubyte[.gz])"
            )
        arrays[split] = (
            _read_verified(files[0], IDX_IMAGES_MAGIC, verify),
            _read_verified(files[1], IDX_LABELS_MAGIC, verify),
        )
    out: dict[str, DigitSource] = {}
    for name, (split, part) in SPLIT_SOURCES.items():
        images, labels = arrays[split]
        out[name] = DigitSource.from_arrays(
            images[part], labels[part], name=f"MNIST {split}[{part.start or 0}:{part.stop or ''}]"
        )
    return out
