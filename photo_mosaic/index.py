"""Index stage: find tile photos, drop exact duplicates, make thumbnails in parallel, cache them.

Thumbnails are made with ``dask.bag`` (local threads by default: Pillow releases the GIL while it
decodes and resizes) or on a dask.distributed cluster given its address. The cache is one HDF5
file; a later run re-reads only files whose size or modification time changed.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from photo_mosaic.colour import block_descriptors

__all__ = [
    "IMAGE_SUFFIXES",
    "IndexReport",
    "TileIndex",
    "build_index",
    "load_index",
    "make_thumbnail",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
CACHE_VERSION = 1
LOCAL_SCHEDULERS = ("threads", "processes", "sync")


@dataclass(frozen=True)
class TileIndex:
    """The cached tiles: one entry per distinct image (duplicates removed)."""

    paths: list[str]  # relative to the indexed folder; the first path of each duplicate group
    thumbnails: npt.NDArray[np.uint8]  # (n, size, size, 3)
    descriptors: npt.NDArray[np.float64]  # (n, grid * grid * 3) mean CIELAB per block
    hashes: list[str]
    grid: int
    folder: str

    @property
    def thumb_size(self) -> int:
        return int(self.thumbnails.shape[1])

    def fingerprint(self) -> str:
        """A digest of the tile set and order (matches record it; render checks it)."""
        return hashlib.blake2b("\n".join(self.hashes).encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class IndexReport:
    """What :func:`build_index` found and did."""

    cache_path: Path
    n_files: int  # image files found (by suffix)
    n_tiles: int  # distinct images in the cache
    n_reused: int  # files taken from the previous cache unchanged
    n_decoded: int  # files read and thumbnailed in this run
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (duplicate, kept)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    ignored: int = 0  # other files under the folder (not .jpg/.jpeg/.png)

    def summary(self) -> str:
        lines = [
            f"{self.n_files} image files: {self.n_tiles} distinct tiles, "
            f"{len(self.duplicates)} duplicates removed, {len(self.failed)} unreadable; "
            f"{self.n_reused} reused from the cache, {self.n_decoded} read; "
            f"{self.ignored} other files ignored",
            f"cache: {self.cache_path}",
        ]
        lines += [f"unreadable: {name}: {reason}" for name, reason in self.failed]
        return "\n".join(lines)


@dataclass(frozen=True)
class _FileResult:
    path: str
    digest: str
    thumbnail: npt.NDArray[np.uint8] | None
    error: str | None


def make_thumbnail(data: bytes, size: int) -> npt.NDArray[np.uint8]:
    """Square RGB thumbnail of an encoded image: centre crop, resize to ``size`` x ``size``.

    JPEGs are decoded at a reduced scale (Pillow's ``draft``) when that still leaves at least
    ``size`` pixels on the short side. EXIF orientation is applied.
    """
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (size, size))
        rgb = ImageOps.exif_transpose(im).convert("RGB")
        thumb = ImageOps.fit(rgb, (size, size), method=Image.Resampling.BILINEAR)
        return np.asarray(thumb, dtype=np.uint8)


def _process(path: str, size: int) -> _FileResult:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return _FileResult(path, "", None, f"cannot read: {exc.strerror or exc}")
    digest = hashlib.blake2b(data, digest_size=20).hexdigest()
    try:
        thumb = make_thumbnail(data, size)
    except UnidentifiedImageError:
        return _FileResult(path, digest, None, "not a JPEG or PNG image")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return _FileResult(path, digest, None, f"damaged image ({type(exc).__name__}: {exc})")
    return _FileResult(path, digest, thumb, None)


def _process_batch(paths: Sequence[str], size: int) -> list[_FileResult]:
    return [_process(p, size) for p in paths]


def _scan(folder: Path, exclude: Path) -> tuple[list[Path], int]:
    images: list[Path] = []
    ignored = 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            if p.resolve() == exclude:
                continue
            if p.suffix.lower() in IMAGE_SUFFIXES:
                images.append(p)
            else:
                ignored += 1
    return images, ignored


def _batches(items: Sequence[str], n_workers: int) -> list[list[str]]:
    # Several partitions per worker for load balance and a live progress bar, none tiny.
    n_parts = max(1, min(len(items), max(4 * n_workers, math.ceil(len(items) / 256))))
    step = math.ceil(len(items) / n_parts)
    return [list(items[i : i + step]) for i in range(0, len(items), step)]


def _run_local(
    batches: list[list[str]], size: int, scheduler: str, on_done: Callable[[int], None]
) -> Iterator[_FileResult]:
    import dask.bag as db
    from dask.callbacks import Callback

    class _Progress(Callback):
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if isinstance(result, list) and result and isinstance(result[0], _FileResult):
                on_done(len(result))

    bag = db.from_sequence(batches, npartitions=len(batches)).map(  # type: ignore[no-untyped-call]
        _process_batch, size
    )
    with _Progress():  # type: ignore[no-untyped-call]
        for batch in bag.compute(scheduler=scheduler):
            yield from batch


def _run_distributed(
    batches: list[list[str]], size: int, address: str, on_done: Callable[[int], None]
) -> Iterator[_FileResult]:
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise RuntimeError(
            "a scheduler address needs dask.distributed: pip install 'distributed==2026.8.0'"
        ) from exc
    import dask.bag as db

    bag = db.from_sequence(batches, npartitions=len(batches)).map(  # type: ignore[no-untyped-call]
        _process_batch, size
    )
    with Client(address) as client:  # type: ignore[no-untyped-call]
        futures = client.compute(bag.to_delayed())
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            for part in future.result():
                on_done(len(part))
                yield from part


def _read_cache(cache_path: Path, thumb_size: int, grid: int) -> dict[str, Any] | None:
    if not cache_path.exists():
        return None
    try:
        with h5py.File(cache_path, "r") as f:
            if (
                f.attrs.get("version") != CACHE_VERSION
                or int(f.attrs["thumb_size"]) != thumb_size
                or int(f.attrs["grid"]) != grid
            ):
                return None
            return {
                "files": [s.decode() for s in f["files/path"][:]],
                "sizes": f["files/size"][:],
                "mtimes": f["files/mtime_ns"][:],
                "hashes": [s.decode() for s in f["files/hash"][:]],
                "tile_of_file": f["files/tile"][:],
                "thumbnails": f["tiles/thumbnail"][:],
            }
    except (OSError, KeyError) as exc:
        raise RuntimeError(
            f"the cache {cache_path} is not a readable photo-mosaic cache ({exc}); "
            "delete it or choose another --cache path"
        ) from exc


def build_index(
    folder: str | os.PathLike[str],
    cache_path: str | os.PathLike[str],
    *,
    thumb_size: int = 32,
    grid: int = 1,
    scheduler: str = "threads",
    progress: bool = True,
) -> IndexReport:
    """Index the JPEG and PNG images under ``folder`` into the HDF5 cache at ``cache_path``.

    Files already in the cache with the same size and modification time are reused; new and
    changed files are read (in parallel with dask.bag), removed files are dropped. Exact duplicates
    (same content hash) are kept once, under their first path in sorted order.

    Args:
        folder: the folder to search (recursively).
        cache_path: the HDF5 file to create or refresh.
        thumb_size: thumbnail side in pixels (8 to 512).
        grid: descriptor blocks per side; must divide ``thumb_size``.
        scheduler: ``"threads"``, ``"processes"``, ``"sync"`` or a dask.distributed address such
            as ``"tcp://10.0.0.5:8786"``.
        progress: show a progress bar on stderr.

    Raises:
        ValueError: bad options, a missing folder, or no readable image.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"the tile folder {str(root)!r} does not exist or is not a folder")
    if not (8 <= thumb_size <= 512):
        raise ValueError(f"thumb_size must be between 8 and 512 pixels, got {thumb_size}")
    if grid < 1 or thumb_size % grid:
        raise ValueError(f"grid must be a positive divisor of thumb_size={thumb_size}, got {grid}")
    if scheduler not in LOCAL_SCHEDULERS and "://" not in scheduler:
        raise ValueError(
            f"scheduler must be one of {', '.join(LOCAL_SCHEDULERS)} or an address such as "
            f"tcp://host:8786, got {scheduler!r}"
        )
    cache = Path(cache_path)
    if not cache.parent.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
    images, ignored = _scan(root, cache.resolve())
    if not images:
        raise ValueError(f"no .jpg, .jpeg or .png files under {str(root)!r}")

    rel = [p.relative_to(root).as_posix() for p in images]
    stats = [p.stat() for p in images]
    sizes = np.array([s.st_size for s in stats], dtype=np.int64)
    mtimes = np.array([s.st_mtime_ns for s in stats], dtype=np.int64)

    old = _read_cache(cache, thumb_size, grid)
    old_rows: dict[str, int] = {}
    if old is not None:
        old_rows = {name: i for i, name in enumerate(old["files"])}
    hashes: list[str] = [""] * len(rel)
    thumbs: list[npt.NDArray[np.uint8] | None] = [None] * len(rel)
    todo: list[int] = []
    for k, name in enumerate(rel):
        i = old_rows.get(name)
        if (
            old is not None
            and i is not None
            and old["sizes"][i] == sizes[k]
            and old["mtimes"][i] == mtimes[k]
        ):
            hashes[k] = old["hashes"][i]
            thumbs[k] = old["thumbnails"][old["tile_of_file"][i]]
            continue
        todo.append(k)

    failed: list[tuple[str, str]] = []
    if todo:
        by_path = {str(images[k]): k for k in todo}
        batches = _batches(list(by_path), os.cpu_count() or 1)
        with tqdm(
            total=len(todo), desc="thumbnails", unit="img", disable=not progress, leave=False
        ) as bar:

            def advance(n: int) -> None:
                bar.update(n)

            if scheduler in LOCAL_SCHEDULERS:
                results = _run_local(batches, thumb_size, scheduler, advance)
            else:
                results = _run_distributed(batches, thumb_size, scheduler, advance)
            for res in results:
                k = by_path[res.path]
                if res.thumbnail is None:
                    failed.append((rel[k], res.error or "unknown error"))
                else:
                    hashes[k] = res.digest
                    thumbs[k] = res.thumbnail

    # Exact duplicates: the first path (sorted order) of each content hash is the tile.
    tile_of_hash: dict[str, int] = {}
    tile_of_file = np.full(len(rel), -1, dtype=np.int64)
    duplicates: list[tuple[str, str]] = []
    tile_paths: list[str] = []
    tile_thumbs: list[npt.NDArray[np.uint8]] = []
    for k, thumb in enumerate(thumbs):
        if thumb is None:
            continue
        t = tile_of_hash.get(hashes[k])
        if t is None:
            t = tile_of_hash[hashes[k]] = len(tile_paths)
            tile_paths.append(rel[k])
            tile_thumbs.append(thumb)
        else:
            duplicates.append((rel[k], tile_paths[t]))
        tile_of_file[k] = t
    if not tile_paths:
        raise ValueError(
            f"none of the {len(rel)} image files under {str(root)!r} could be read "
            f"(first error: {failed[0][0]}: {failed[0][1]})"
        )
    thumbnails = np.stack(tile_thumbs)
    descriptors = block_descriptors(thumbnails, grid)
    ok = tile_of_file >= 0
    _write_cache(
        cache,
        folder=str(root.resolve()),
        thumb_size=thumb_size,
        grid=grid,
        files=[n for n, good in zip(rel, ok, strict=True) if good],
        sizes=sizes[ok],
        mtimes=mtimes[ok],
        hashes=[h for h, good in zip(hashes, ok, strict=True) if good],
        tile_of_file=tile_of_file[ok],
        tile_paths=tile_paths,
        tile_hashes=list(tile_of_hash),
        thumbnails=thumbnails,
        descriptors=descriptors,
    )
    return IndexReport(
        cache_path=cache,
        n_files=len(rel),
        n_tiles=len(tile_paths),
        n_reused=len(rel) - len(todo),
        n_decoded=len(todo),
        duplicates=duplicates,
        failed=failed,
        ignored=ignored,
    )


def _write_cache(cache: Path, **data: Any) -> None:
    tmp = cache.with_name(cache.name + ".tmp")
    text = h5py.string_dtype("utf-8")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["version"] = CACHE_VERSION
            f.attrs["thumb_size"] = data["thumb_size"]
            f.attrs["grid"] = data["grid"]
            f.attrs["folder"] = data["folder"]
            f.create_dataset("files/path", data=np.array(data["files"], dtype=object), dtype=text)
            f.create_dataset("files/size", data=data["sizes"])
            f.create_dataset("files/mtime_ns", data=data["mtimes"])
            f.create_dataset("files/hash", data=np.array(data["hashes"], dtype=object), dtype=text)
            f.create_dataset("files/tile", data=data["tile_of_file"])
            f.create_dataset(
                "tiles/path", data=np.array(data["tile_paths"], dtype=object), dtype=text
            )
            f.create_dataset(
                "tiles/hash", data=np.array(data["tile_hashes"], dtype=object), dtype=text
            )
            thumbs = data["thumbnails"]
            f.create_dataset(
                "tiles/thumbnail",
                data=thumbs,
                chunks=(min(len(thumbs), 256), *thumbs.shape[1:]),
                compression="gzip",
                compression_opts=1,
            )
            f.create_dataset("tiles/descriptor", data=data["descriptors"])
        os.replace(tmp, cache)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"cannot write the cache {str(cache)!r}: {exc}") from exc


def load_index(cache_path: str | os.PathLike[str]) -> TileIndex:
    """Load the tiles of a cache written by :func:`build_index`."""
    cache = Path(cache_path)
    if not cache.is_file():
        raise ValueError(f"no tile cache at {str(cache)!r}: run the index stage first")
    try:
        with h5py.File(cache, "r") as f:
            if f.attrs.get("version") != CACHE_VERSION:
                raise ValueError(f"{str(cache)!r} was written by another version; re-index")
            return TileIndex(
                paths=[s.decode() for s in f["tiles/path"][:]],
                thumbnails=f["tiles/thumbnail"][:],
                descriptors=f["tiles/descriptor"][:],
                hashes=[s.decode() for s in f["tiles/hash"][:]],
                grid=int(f.attrs["grid"]),
                folder=str(f.attrs["folder"]),
            )
    except (OSError, KeyError) as exc:
        raise ValueError(f"{str(cache)!r} is not a readable photo-mosaic cache: {exc}") from exc
