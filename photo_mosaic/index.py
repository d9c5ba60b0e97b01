"""Index stage: find tile photos, drop exact duplicates, make thumbnails in parallel, cache them.

Thumbnails are made with ``dask.bag`` (local threads by default: Pillow releases the GIL while it
decodes and resizes) or on a dask.distributed cluster given its address. The cache is one HDF5
file holding thumbnails and their CIELAB descriptors; a later run re-reads only files whose size,
modification time, status-change time or inode changed, and leaves the file untouched when nothing
changed.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from photo_mosaic._images import display_name, to_rgb
from photo_mosaic.colour import block_descriptors

__all__ = [
    "IMAGE_SUFFIXES",
    "IndexReport",
    "TileIndex",
    "build_index",
    "load_index",
    "make_thumbnail",
    "rebind_cached_files",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
CACHE_VERSION = 2
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
    cache_written: bool = True  # False: nothing changed, the cache file was left as it was

    def summary(self) -> str:
        lines = [
            f"{self.n_files} image files: {self.n_tiles} distinct tiles, "
            f"{len(self.duplicates)} duplicates removed, {len(self.failed)} unreadable; "
            f"{self.n_reused} reused from the cache, {self.n_decoded} read; "
            f"{self.ignored} other files ignored",
            f"cache: {display_name(str(self.cache_path))}"
            + ("" if self.cache_written else " (unchanged)"),
        ]
        lines += [f"unreadable: {display_name(name)}: {reason}" for name, reason in self.failed]
        return "\n".join(lines)


@dataclass(frozen=True)
class _FileResult:
    path: str
    digest: str
    thumbnail: npt.NDArray[np.uint8] | None
    descriptor: npt.NDArray[np.float64] | None
    error: str | None


def make_thumbnail(data: bytes, size: int) -> npt.NDArray[np.uint8]:
    """Square RGB thumbnail of an encoded image: centre crop, resize to ``size`` x ``size``.

    JPEGs are decoded at a reduced scale (Pillow's ``draft``) when that still leaves at least
    ``size`` pixels on the short side. EXIF orientation is applied; 16-bit greyscale is scaled
    to 8 bits (not clipped).
    """
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (size, size))
        rgb = to_rgb(ImageOps.exif_transpose(im))
        thumb = ImageOps.fit(rgb, (size, size), method=Image.Resampling.BILINEAR)
        return np.asarray(thumb, dtype=np.uint8)


def _process(path: str, size: int) -> _FileResult:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return _FileResult(path, "", None, None, f"cannot read: {exc.strerror or exc}")
    digest = hashlib.blake2b(data, digest_size=20).hexdigest()
    try:
        thumb = make_thumbnail(data, size)
    except UnidentifiedImageError:
        return _FileResult(path, digest, None, None, "not a JPEG or PNG image")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return _FileResult(path, digest, None, None, f"damaged image ({type(exc).__name__}: {exc})")
    return _FileResult(path, digest, thumb, None, None)


def _process_partition(paths: Sequence[str], size: int, grid: int) -> list[_FileResult]:
    results = [_process(p, size) for p in paths]
    # Descriptors are computed here, in parallel and once per file (later runs reuse the cached
    # ones), for the whole partition at once: one array operation instead of one per photo.
    good = [r for r in results if r.thumbnail is not None]
    if not good:
        return results
    descriptors = block_descriptors(np.stack([r.thumbnail for r in good]), grid)  # type: ignore[misc]
    done = iter(replace(r, descriptor=d) for r, d in zip(good, descriptors, strict=True))
    return [next(done) if r.thumbnail is not None else r for r in results]


def _scan(folder: Path, exclude: Path) -> tuple[list[Path], int]:
    images: list[Path] = []
    ignored = 0
    # Only files named like the cache (or its temporary file) can be the cache itself.
    exclude_names = {exclude.name, exclude.name + ".tmp"}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            if name in exclude_names and p.resolve() in (exclude, exclude.with_name(name)):
                continue
            if p.suffix.lower() in IMAGE_SUFFIXES:
                images.append(p)
            else:
                ignored += 1
    return images, ignored


def _partitions(n_items: int, n_workers: int) -> int:
    # Several partitions per worker for load balance and a live progress bar, none tiny.
    return max(1, min(n_items, max(4 * n_workers, math.ceil(n_items / 256))))


def _bag(paths: list[str], size: int, grid: int) -> Any:
    import dask.bag as db

    n_parts = _partitions(len(paths), os.cpu_count() or 1)
    bag = db.from_sequence(paths, npartitions=n_parts)  # type: ignore[no-untyped-call]
    return bag.map_partitions(_process_partition, size, grid)


def _run_local(
    paths: list[str], size: int, grid: int, scheduler: str, on_done: Callable[[int], None]
) -> Iterator[_FileResult]:
    from dask.callbacks import Callback

    bag = _bag(paths, size, grid)
    name = bag.name

    class _Progress(Callback):
        # Called in the scheduling thread after every task; the tasks of the last layer (one per
        # partition) return the list of that partition's results.
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if isinstance(key, tuple) and key and key[0] == name:
                on_done(len(result))

    with _Progress():  # type: ignore[no-untyped-call]
        parts = bag.compute(scheduler=scheduler)
    yield from parts


def _run_distributed(
    paths: list[str], size: int, grid: int, address: str, on_done: Callable[[int], None]
) -> Iterator[_FileResult]:
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise RuntimeError(
            "a scheduler address needs dask.distributed: pip install 'distributed==2026.8.0'"
        ) from exc

    bag = _bag(paths, size, grid)
    with Client(address) as client:  # type: ignore[no-untyped-call]
        futures = client.compute(bag.to_delayed())
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            part = future.result()
            on_done(len(part))
            yield from part


def _encode_names(names: Sequence[str]) -> npt.NDArray[np.object_]:
    # File names that are not valid UTF-8 are kept byte for byte (surrogate escapes).
    return np.array([n.encode("utf-8", "surrogateescape") for n in names], dtype=object)


def _decode_names(values: npt.NDArray[Any]) -> list[str]:
    return [
        v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v) for v in values
    ]


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
                "files": _decode_names(f["files/path"][:]),
                "keys": np.stack([f[f"files/{k}"][:] for k in _STAT_KEYS], axis=1),
                "hashes": _decode_names(f["files/hash"][:]),
                "tile_of_file": f["files/tile"][:],
                "thumbnails": f["tiles/thumbnail"][:],
                "descriptors": f["tiles/descriptor"][:],
            }
    except (OSError, KeyError) as exc:
        raise RuntimeError(
            f"the cache {display_name(str(cache_path))} is not a readable photo-mosaic cache "
            f"({exc}); delete it or choose another --cache path"
        ) from exc


# What decides that a cached file is unchanged. The status-change time (ctime) is set by the
# kernel on every write, and no program can set it back (unlike mtime, with utime/touch), so a
# file rewritten with the same size and mtime is noticed; the inode catches a replaced file.
_STAT_KEYS = ("size", "mtime_ns", "ctime_ns", "inode")


def _stat_keys(paths: Sequence[Path]) -> npt.NDArray[np.int64]:
    keys = np.empty((len(paths), len(_STAT_KEYS)), dtype=np.int64)
    for k, p in enumerate(paths):
        st = p.stat()
        keys[k] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    return keys


def rebind_cached_files(
    cache_path: str | os.PathLike[str], folder: str | os.PathLike[str], unchanged: Iterable[str]
) -> int:
    """Tell the cache that the files named in ``unchanged`` (paths relative to ``folder``) did not
    change, although they were not seen on this machine before.

    For a cache made elsewhere (for example kept in S3 and downloaded into a fresh folder) whose
    files the caller has checked by other means (object key and size or ETag): each named file
    that is in the cache must exist under ``folder`` (an empty placeholder is enough) and is
    recorded with its current size, times and inode, so that the next :func:`build_index` over
    ``folder`` reuses its thumbnail without reading it. Every other file of the cache is marked
    as changed (it is read again if present). Returns how many files were rebound.

    Raises:
        ValueError: the cache is not a readable photo-mosaic cache of this version.
    """
    cache = Path(cache_path)
    root = Path(folder)
    keep = set(unchanged)
    try:
        with h5py.File(cache, "r+") as f:
            if f.attrs.get("version") != CACHE_VERSION:
                raise ValueError(f"{display_name(str(cache))!r} was written by another version")
            names = _decode_names(f["files/path"][:])
            rows = [k for k, name in enumerate(names) if name in keep]
            keys = np.full((len(names), len(_STAT_KEYS)), -1, dtype=np.int64)
            if rows:
                keys[rows] = _stat_keys([root / names[k] for k in rows])
            for j, key in enumerate(_STAT_KEYS):
                f[f"files/{key}"][...] = keys[:, j]
    except (OSError, KeyError) as exc:
        raise ValueError(
            f"{display_name(str(cache))!r} is not a readable photo-mosaic cache: {exc}"
        ) from exc
    return len(rows)


def _prepare_cache_folder(cache: Path) -> None:
    folder = cache.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"cannot create the cache folder {display_name(str(folder))!r}: "
            f"{exc.strerror or exc}; choose another --cache path"
        ) from exc
    if cache.exists() and not cache.is_file():
        raise ValueError(
            f"the cache path {display_name(str(cache))!r} exists and is not a file; "
            "choose another --cache path"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(
            f"the cache folder {display_name(str(folder))!r} is not writable; "
            "choose another --cache path"
        )


ProgressOption = bool | Callable[[int, int], None]


def build_index(
    folder: str | os.PathLike[str],
    cache_path: str | os.PathLike[str],
    *,
    thumb_size: int = 32,
    grid: int = 1,
    scheduler: str = "threads",
    progress: ProgressOption = True,
) -> IndexReport:
    """Index the JPEG and PNG images under ``folder`` into the HDF5 cache at ``cache_path``.

    Files already in the cache with the same size, modification time, status-change time and
    inode are reused (thumbnail and descriptor); new and changed files are read (in parallel with
    dask.bag), removed files are dropped. When nothing changed the cache file is not rewritten.
    Exact duplicates (same content hash) are kept once, under their first path in sorted order.

    Args:
        folder: the folder to search (recursively).
        cache_path: the HDF5 file to create or refresh (its folder is created if needed).
        thumb_size: thumbnail side in pixels (8 to 512).
        grid: descriptor blocks per side; must divide ``thumb_size``.
        scheduler: ``"threads"``, ``"processes"``, ``"sync"`` or a dask.distributed address such
            as ``"tcp://10.0.0.5:8786"``.
        progress: show a progress bar on stderr (True), nothing (False), or a function called
            with ``(files done, files to read)`` as the thumbnails complete.

    Raises:
        ValueError: bad options, a missing folder, a cache path that cannot be created or
            written, or no readable image.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(
            f"the tile folder {display_name(str(root))!r} does not exist or is not a folder"
        )
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
    _prepare_cache_folder(cache)
    images, ignored = _scan(root, cache.resolve())
    if not images:
        raise ValueError(f"no .jpg, .jpeg or .png files under {display_name(str(root))!r}")

    rel = [p.relative_to(root).as_posix() for p in images]
    keys = _stat_keys(images)

    old = _read_cache(cache, thumb_size, grid)
    old_rows: dict[str, int] = {}
    if old is not None:
        old_rows = {name: i for i, name in enumerate(old["files"])}
    hashes: list[str] = [""] * len(rel)
    thumbs: list[npt.NDArray[np.uint8] | None] = [None] * len(rel)
    descs: list[npt.NDArray[np.float64] | None] = [None] * len(rel)
    todo: list[int] = []
    for k, name in enumerate(rel):
        i = old_rows.get(name)
        if old is not None and i is not None and np.array_equal(old["keys"][i], keys[k]):
            t = old["tile_of_file"][i]
            hashes[k] = old["hashes"][i]
            thumbs[k] = old["thumbnails"][t]
            descs[k] = old["descriptors"][t]
            continue
        todo.append(k)

    failed: list[tuple[str, str]] = []
    n_read_ok = 0
    if todo:
        by_path = {str(images[k]): k for k in todo}
        with tqdm(
            total=len(todo),
            desc="thumbnails",
            unit="img",
            disable=progress is not True,
            leave=False,
            mininterval=0,  # one update per partition of work: few, each worth drawing
            miniters=1,
        ) as bar:
            done = 0

            def advance(n: int) -> None:
                nonlocal done
                done += n
                bar.update(n)
                if callable(progress):
                    progress(done, len(todo))

            if scheduler in LOCAL_SCHEDULERS:
                results = _run_local(list(by_path), thumb_size, grid, scheduler, advance)
            else:
                results = _run_distributed(list(by_path), thumb_size, grid, scheduler, advance)
            for res in results:
                k = by_path[res.path]
                if res.thumbnail is None:
                    failed.append((rel[k], res.error or "unknown error"))
                else:
                    n_read_ok += 1
                    hashes[k] = res.digest
                    thumbs[k] = res.thumbnail
                    descs[k] = res.descriptor

    # Exact duplicates: the first path (sorted order) of each content hash is the tile.
    tile_of_hash: dict[str, int] = {}
    tile_of_file = np.full(len(rel), -1, dtype=np.int64)
    duplicates: list[tuple[str, str]] = []
    tile_paths: list[str] = []
    tile_rows: list[int] = []
    for k, thumb in enumerate(thumbs):
        if thumb is None:
            continue
        t = tile_of_hash.get(hashes[k])
        if t is None:
            t = tile_of_hash[hashes[k]] = len(tile_paths)
            tile_paths.append(rel[k])
            tile_rows.append(k)
        else:
            duplicates.append((rel[k], tile_paths[t]))
        tile_of_file[k] = t
    if not tile_paths:
        raise ValueError(
            f"none of the {len(rel)} image files under {display_name(str(root))!r} could be "
            f"read (first error: {display_name(failed[0][0])}: {failed[0][1]})"
        )
    ok = tile_of_file >= 0
    files = [n for n, good in zip(rel, ok, strict=True) if good]
    unchanged = (
        old is not None
        and n_read_ok == 0
        and files == old["files"]
        and np.array_equal(keys[ok], old["keys"])
    )
    if not unchanged:
        _write_cache(
            cache,
            folder=str(root.resolve()),
            thumb_size=thumb_size,
            grid=grid,
            files=files,
            keys=keys[ok],
            hashes=[h for h, good in zip(hashes, ok, strict=True) if good],
            tile_of_file=tile_of_file[ok],
            tile_paths=tile_paths,
            tile_hashes=list(tile_of_hash),
            thumbnails=np.stack([thumbs[k] for k in tile_rows]),  # type: ignore[misc]
            descriptors=np.stack([descs[k] for k in tile_rows]),  # type: ignore[misc]
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
        cache_written=not unchanged,
    )


def _write_cache(cache: Path, **data: Any) -> None:
    tmp = cache.with_name(cache.name + ".tmp")
    text = h5py.string_dtype("utf-8")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["version"] = CACHE_VERSION
            f.attrs["thumb_size"] = data["thumb_size"]
            f.attrs["grid"] = data["grid"]
            f.attrs["folder"] = np.bytes_(data["folder"].encode("utf-8", "surrogateescape"))
            f.create_dataset("files/path", data=_encode_names(data["files"]), dtype=text)
            for j, key in enumerate(_STAT_KEYS):
                f.create_dataset(f"files/{key}", data=data["keys"][:, j])
            f.create_dataset("files/hash", data=_encode_names(data["hashes"]), dtype=text)
            f.create_dataset("files/tile", data=data["tile_of_file"])
            f.create_dataset("tiles/path", data=_encode_names(data["tile_paths"]), dtype=text)
            f.create_dataset("tiles/hash", data=_encode_names(data["tile_hashes"]), dtype=text)
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
        raise ValueError(f"cannot write the cache {display_name(str(cache))!r}: {exc}") from exc


def load_index(cache_path: str | os.PathLike[str]) -> TileIndex:
    """Load the tiles of a cache written by :func:`build_index`."""
    cache = Path(cache_path)
    name = display_name(str(cache))
    if not cache.is_file():
        raise ValueError(f"no tile cache at {name!r}: run the index stage first")
    try:
        with h5py.File(cache, "r") as f:
            if f.attrs.get("version") != CACHE_VERSION:
                raise ValueError(f"{name!r} was written by another version; re-index")
            folder = f.attrs["folder"]
            return TileIndex(
                paths=_decode_names(f["tiles/path"][:]),
                thumbnails=f["tiles/thumbnail"][:],
                descriptors=f["tiles/descriptor"][:],
                hashes=_decode_names(f["tiles/hash"][:]),
                grid=int(f.attrs["grid"]),
                folder=_decode_names(np.array([folder], dtype=object))[0],
            )
    except (OSError, KeyError) as exc:
        raise ValueError(f"{name!r} is not a readable photo-mosaic cache: {exc}") from exc
