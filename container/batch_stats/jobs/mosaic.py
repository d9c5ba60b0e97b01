"""The ``mosaic`` job: a :mod:`photo_mosaic` mosaic of a target image from a tile set in S3.

One shard (one assignment problem): list the tiles under ``tiles_prefix``, fetch the thumbnail
cache of that tile set from the results bucket, download (concurrently) only the tiles that are
not in it (by key and size), let :func:`photo_mosaic.build_index` thumbnail them (dask threads),
match the target's cells (``nearest`` or the exact ``unique`` assignment), render, and write under
``mosaics/<job_id>/``:

- ``mosaic.png`` (or ``mosaic.jpg``): the mosaic;
- ``assignment.parquet``: one row per cell (``row``, ``col``, ``tile_key``, ``cost``);
- ``tiles.json``: what happened to every tile key that was not used as is (unreadable tiles with
  the reason, exact duplicates and the copy kept, keys that are not images);
- ``manifest.json`` last (:meth:`MosaicKind.finish`).

The thumbnail cache is ``cache/thumbnails/<digest>.h5`` in the results bucket, the digest of the
input bucket, the tile prefix and the thumbnail parameters; it is uploaded again only when it
changed. Nothing here imports boto3: the job talks to :class:`batch_stats.jobs.base.JobStore`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from batch_stats.jobs.base import JobContext, JobInputError, JobSpecError, JobStore

log = logging.getLogger(__name__)

NAME = "mosaic"
INPUTS_PREFIX = "inputs/"
OUTPUT_ROOT = "mosaics/"
CACHE_PREFIX = "cache/thumbnails/"
DEMO_PREFIX = "inputs/demo-mosaic/"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1

#: Limits of the parameters (documented in the README). The rendered size also depends on the
#: target's aspect ratio, so it is checked again against photo_mosaic's limits (100 megapixels,
#: 65,500 px per side; 100,000 cells for ``unique``) once the target is read.
MAX_COLS = 2000
TILE_SIZE_RANGE = (8, 256)
GRIDS = (1, 2, 3, 4)
METHODS = ("nearest", "unique")
FORMATS = ("png", "jpg")
MAX_SIDE = 65_500
#: At most this many tile keys under the prefix (the cache and the assignment hold them in memory).
MAX_TILES = 1_000_000
#: Concurrent downloads (threads: the work is waiting on S3); botocore keeps 10 connections per
#: client by default, more threads would only queue for them.
DOWNLOAD_THREADS = 10
#: Entries listed by name in ``tiles.json`` per category (the counts are always complete).
MAX_LISTED = 10_000

_ALLOWED = ("tiles_prefix", "target_key", "cols", "grid", "method", "tile_size", "format", "blend")


@dataclass(frozen=True)
class MosaicParams:
    """A validated mosaic job (see :meth:`MosaicKind.parse`)."""

    tiles_prefix: str  # under inputs/, ends with "/"
    target_key: str  # under inputs/, .jpg/.jpeg/.png
    cols: int  # cells across the target; rows follow from its aspect ratio
    method: Literal["nearest", "unique"] = "nearest"
    tile_size: int = 32  # pixels per cell in the mosaic (the thumbnail side)
    grid: int = 1  # colour descriptor blocks per side (1 = mean colour)
    format: Literal["png", "jpg"] = "png"
    blend: float = 0.0  # 0..1: mix each tile towards its cell's colour


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _key_problem(name: str, value: object, *, folder: bool) -> str | None:
    if not isinstance(value, str):
        return f"{name} must be a string, got {type(value).__name__}"
    if not value.startswith(INPUTS_PREFIX) or len(value) <= len(INPUTS_PREFIX):
        return f"{name} must be a key under {INPUTS_PREFIX!r}, got {value!r}"
    parts = value.rstrip("/").split("/") if folder else value.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        return f"{name} must not contain empty, '.' or '..' path segments, got {value!r}"
    if not folder and not value.lower().endswith(IMAGE_SUFFIXES):
        return f"{name} must end in .jpg, .jpeg or .png, got {value!r}"
    return None


def parse_params(params: Mapping[str, Any]) -> MosaicParams:
    """Validate a mosaic job's ``params``; one JobSpecError naming every problem."""
    problems: list[str] = []
    if not isinstance(params, Mapping):
        raise JobSpecError([f"params must be an object, got {type(params).__name__}"])
    unknown = sorted(set(params) - set(_ALLOWED))
    if unknown:
        problems.append(
            f"unknown parameters {', '.join(map(repr, unknown))} (allowed: {', '.join(_ALLOWED)})"
        )
    for required in ("tiles_prefix", "target_key", "cols"):
        if required not in params:
            problems.append(f"{required} is required")
    if "tiles_prefix" in params:
        problem = _key_problem("tiles_prefix", params["tiles_prefix"], folder=True)
        if problem:
            problems.append(problem)
    if "target_key" in params:
        problem = _key_problem("target_key", params["target_key"], folder=False)
        if problem:
            problems.append(problem)

    def integer(name: str, default: int | None, low: int, high: int) -> int | None:
        value = params.get(name, default)
        if value is None:
            return None
        if not _is_int(value):
            problems.append(f"{name} must be an integer, got {type(value).__name__}")
            return None
        if not low <= value <= high:
            problems.append(f"{name} must be between {low} and {high}, got {value}")
            return None
        return int(value)

    cols = integer("cols", None, 1, MAX_COLS)
    tile_size = integer("tile_size", 32, *TILE_SIZE_RANGE)
    grid = integer("grid", 1, GRIDS[0], GRIDS[-1])
    if tile_size is not None and grid is not None and tile_size % grid:
        problems.append(f"grid ({grid}) must divide tile_size ({tile_size})")
    if cols is not None and tile_size is not None and cols * tile_size > MAX_SIDE:
        problems.append(
            f"cols x tile_size is {cols * tile_size:,} px across; the limit is {MAX_SIDE:,} px: "
            f"use at most {MAX_SIDE // tile_size} columns of {tile_size} px"
        )
    method = params.get("method", "nearest")
    if method not in METHODS:
        problems.append(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    fmt = params.get("format", "png")
    if fmt not in FORMATS:
        problems.append(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    blend = params.get("blend", 0.0)
    if not isinstance(blend, int | float) or isinstance(blend, bool) or not math.isfinite(blend):
        problems.append(f"blend must be a number between 0 and 1, got {blend!r}")
    elif not 0.0 <= blend <= 1.0:
        problems.append(f"blend must be between 0 and 1, got {blend}")
    if problems:
        raise JobSpecError(problems)
    prefix = str(params["tiles_prefix"])
    return MosaicParams(
        tiles_prefix=prefix if prefix.endswith("/") else prefix + "/",
        target_key=str(params["target_key"]),
        cols=int(cols or 0),
        method=method,
        tile_size=int(tile_size or 0),
        grid=int(grid or 0),
        format=fmt,
        blend=float(blend),
    )


def cache_key(input_bucket: str, params: MosaicParams) -> str:
    """Where the thumbnail cache of this tile set and these thumbnail parameters is kept."""
    from photo_mosaic.index import CACHE_VERSION

    identity = json.dumps(
        [input_bucket, params.tiles_prefix, params.tile_size, params.grid, CACHE_VERSION]
    )
    return f"{CACHE_PREFIX}{hashlib.sha256(identity.encode()).hexdigest()[:32]}.h5"


def _relative(key: str, prefix: str) -> str | None:
    """The tile's path below the prefix, or None when it cannot be a file name."""
    rel = key[len(prefix) :]
    parts = rel.split("/")
    if any(p in {"", ".", ".."} or "\x00" in p or len(p.encode()) > 255 for p in parts):
        return None
    return rel


@dataclass
class _Listing:
    tiles: dict[str, int]  # relative path -> size, image keys only
    not_images: list[str]  # keys that are not .jpg/.jpeg/.png
    bad_names: list[str]  # keys that cannot be a file name


def _list_tiles(store: JobStore, bucket: str, prefix: str) -> _Listing:
    listing = _Listing({}, [], [])
    for n, (key, size) in enumerate(store.list_keys(bucket, prefix), start=1):
        if n > MAX_TILES:
            raise JobInputError(
                f"more than {MAX_TILES:,} objects under s3://{bucket}/{prefix}; the limit is "
                f"{MAX_TILES:,} tiles per job"
            )
        if key.endswith("/"):
            continue  # a folder marker
        if not key.lower().endswith(IMAGE_SUFFIXES):
            listing.not_images.append(key)
            continue
        rel = _relative(key, prefix)
        if rel is None:
            listing.bad_names.append(key)
            continue
        listing.tiles[rel] = size
    return listing


def _read_s3_identity(cache: Path) -> dict[str, int]:
    import h5py

    with h5py.File(cache, "r") as f:
        if "s3" not in f:
            return {}
        paths = [p.decode() if isinstance(p, bytes) else str(p) for p in f["s3/path"][:]]
        return dict(zip(paths, (int(s) for s in f["s3/size"][:]), strict=True))


def _write_s3_identity(cache: Path, identity: Mapping[str, int]) -> None:
    import h5py
    import numpy as np

    with h5py.File(cache, "r+") as f:
        # Only the files the cache holds (unreadable ones are not cached: read again next time).
        cached = {p.decode() if isinstance(p, bytes) else str(p) for p in f["files/path"][:]}
        names = sorted(cached & set(identity))
        if "s3" in f:
            del f["s3"]
        f.create_dataset("s3/path", data=names, dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("s3/size", data=np.array([identity[n] for n in names], dtype=np.int64))


@dataclass(frozen=True)
class CacheReport:
    """What the shard did with the S3 thumbnail cache (logged; not part of the job's outputs,
    which do not depend on whether the cache was there)."""

    key: str
    found: bool
    tiles_reused: int
    tiles_downloaded: int
    tiles_decoded: int
    uploaded: bool


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MosaicKind:
    """The ``mosaic`` job kind."""

    name = NAME

    def parse(self, params: Mapping[str, Any]) -> MosaicParams:
        return parse_params(params)

    def output_prefix(self, job_id: str) -> str:
        return f"{OUTPUT_ROOT}{job_id}/"

    def shards(self, params: MosaicParams) -> int:
        # One assignment problem: the exact unique assignment needs every cell and tile at
        # once; the thumbnails are made in parallel inside the task (dask threads).
        return 1

    def run_shard(
        self, params: MosaicParams, *, shard: int, shards: int, ctx: JobContext
    ) -> dict[str, Any]:
        summary, report = self.run(params, ctx=ctx)
        log.info(
            "mosaic job %s: thumbnail cache %s (%s): %d tiles reused, %d downloaded, %d decoded%s",
            ctx.job_id,
            report.key,
            "found" if report.found else "new",
            report.tiles_reused,
            report.tiles_downloaded,
            report.tiles_decoded,
            ", uploaded" if report.uploaded else ", unchanged",
            extra={"thumbnail_cache": asdict(report)},
        )
        return summary

    # The shard's work; also returns what happened to the cache (for the log and the tests).
    def run(self, params: MosaicParams, *, ctx: JobContext) -> tuple[dict[str, Any], CacheReport]:
        from photo_mosaic.index import build_index, load_index, rebind_cached_files
        from photo_mosaic.match import match_tiles
        from photo_mosaic.render import render_mosaic

        store, src, dst = ctx.store, ctx.input_bucket, ctx.output_bucket
        prefix = self.output_prefix(ctx.job_id)
        listing = _list_tiles(store, src, params.tiles_prefix)
        where = f"s3://{src}/{params.tiles_prefix}"
        if not listing.tiles:
            found = len(listing.not_images) + len(listing.bad_names)
            raise JobInputError(
                f"no tiles under {where}: "
                + (f"{found} objects, none a .jpg, .jpeg or .png" if found else "no objects")
            )
        try:
            target_bytes = store.get(src, params.target_key)
        except LookupError:
            raise JobInputError(
                f"the target s3://{src}/{params.target_key} does not exist"
            ) from None

        tiles_dir = ctx.scratch / "tiles"
        tiles_dir.mkdir(parents=True, exist_ok=True)
        cache = ctx.scratch / "cache" / "thumbnails.h5"
        cache.parent.mkdir(parents=True, exist_ok=True)
        ckey = cache_key(src, params)
        reused: set[str] = set()
        found_cache = False
        try:
            cache.write_bytes(store.get(dst, ckey))
            found_cache = True
        except LookupError:
            pass
        if found_cache:
            try:
                known = _read_s3_identity(cache)
                reused = {r for r, size in listing.tiles.items() if known.get(r) == size}
                for rel in reused:  # empty placeholders: the cache holds their thumbnails
                    (tiles_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                    (tiles_dir / rel).touch()
                rebind_cached_files(cache, tiles_dir, reused)
            except (OSError, ValueError, KeyError) as exc:
                log.warning(
                    "ignoring the unreadable thumbnail cache s3://%s/%s: %s", dst, ckey, exc
                )
                for rel in reused:
                    (tiles_dir / rel).unlink(missing_ok=True)
                reused = set()
                cache.unlink(missing_ok=True)

        todo = sorted(set(listing.tiles) - reused)
        vanished = self._download(store, src, params.tiles_prefix, todo, tiles_dir)
        try:
            index_report = build_index(
                tiles_dir, cache, thumb_size=params.tile_size, grid=params.grid, progress=False
            )
        except ValueError as exc:  # no readable tile
            raise JobInputError(f"no usable tile under {where}: {exc}") from None
        uploaded = False
        if index_report.cache_written:
            _write_s3_identity(
                cache, {r: s for r, s in listing.tiles.items() if r not in set(vanished)}
            )
            store.put(
                dst,
                ckey,
                cache.read_bytes(),
                content_type="application/x-hdf5",
                metadata={"tiles-prefix": params.tiles_prefix},
            )
            uploaded = True

        target_path = ctx.scratch / ("target" + PurePosixPath(params.target_key).suffix.lower())
        target_path.write_bytes(target_bytes)
        index = load_index(cache)
        try:
            matches = match_tiles(index, target_path, cols=params.cols, method=params.method)
            image = render_mosaic(index, matches, blend=params.blend)
        except ValueError as exc:  # unreadable target, sizes beyond the limits
            raise JobInputError(_in_job_terms(str(exc), str(target_path), params)) from None

        keys = [params.tiles_prefix + p for p in index.paths]
        objects: list[dict[str, Any]] = []

        def put(name: str, data: bytes, content_type: str) -> None:
            store.put(dst, prefix + name, data, content_type=content_type, metadata={})
            objects.append({"key": prefix + name, "size": len(data), "sha256": _sha256(data)})

        put(f"mosaic.{params.format}", _encode(image, params.format), f"image/{_mime(params)}")
        put(
            "assignment.parquet",
            _assignment(index, matches, keys, target_path),
            "application/vnd.apache.parquet",
        )
        failed = [[params.tiles_prefix + rel, reason] for rel, reason in index_report.failed]
        failed += [
            [params.tiles_prefix + rel, "vanished before it was downloaded"] for rel in vanished
        ]
        failed.sort()
        duplicates = sorted(
            [params.tiles_prefix + dup, params.tiles_prefix + kept]
            for dup, kept in index_report.duplicates
        )
        report = {
            "tiles_prefix": params.tiles_prefix,
            "counts": {
                "objects_listed": len(listing.tiles)
                + len(listing.not_images)
                + len(listing.bad_names),
                "tiles_used": len(index.paths),
                "unreadable": len(failed),
                "duplicates": len(duplicates),
                "not_images": len(listing.not_images),
                "bad_names": len(listing.bad_names),
            },
            "unreadable": failed[:MAX_LISTED],
            "duplicates": duplicates[:MAX_LISTED],
            "not_images": listing.not_images[:MAX_LISTED],
            "bad_names": listing.bad_names[:MAX_LISTED],
        }
        put("tiles.json", _json(report), "application/json")
        rows, cols = matches.shape
        uses = _max_uses(matches.tile_for_cell.ravel().tolist())
        summary = {
            "rows": rows,
            "cols": cols,
            "cells": rows * cols,
            "width": cols * index.thumb_size,
            "height": rows * index.thumb_size,
            "method": params.method,
            "total_cost": matches.total_cost,
            "max_uses": uses,
            "tiles": report["counts"],
            "objects": objects,
        }
        cache_report = CacheReport(
            key=ckey,
            found=found_cache,
            tiles_reused=len(reused),
            tiles_downloaded=len(todo) - len(vanished),
            tiles_decoded=index_report.n_decoded,
            uploaded=uploaded,
        )
        return summary, cache_report

    @staticmethod
    def _download(
        store: JobStore, bucket: str, prefix: str, names: Sequence[str], folder: Path
    ) -> list[str]:
        """Download the tiles ``names`` (relative to ``prefix``) into ``folder``; returns the
        names that no longer exist."""

        def one(rel: str) -> str | None:
            try:
                data = store.get(bucket, prefix + rel)
            except LookupError:
                return rel
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return None

        with ThreadPoolExecutor(max_workers=DOWNLOAD_THREADS) as pool:
            return [rel for rel in pool.map(one, names) if rel is not None]

    def finish(
        self,
        params: MosaicParams,
        *,
        shard_results: Sequence[Mapping[str, Any]],
        ctx: JobContext,
    ) -> dict[str, Any]:
        (result,) = shard_results
        prefix = self.output_prefix(ctx.job_id)
        objects = list(result["objects"])
        # The fields every job's manifest has (manifest_version, job_id, kind, status, reason,
        # params, counts, objects with key, size and sha256), then the mosaic's own.
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "job_id": ctx.job_id,
            "kind": NAME,
            "status": "succeeded",
            "reason": None,
            "params": asdict(params),
            "counts": {"cells": result["cells"], **result["tiles"]},
            "objects": objects,
            "inputs": {
                "tiles": f"s3://{ctx.input_bucket}/{params.tiles_prefix}",
                "target": f"s3://{ctx.input_bucket}/{params.target_key}",
            },
            "mosaic": {k: result[k] for k in ("rows", "cols", "cells", "width", "height")},
            "method": result["method"],
            "total_cost": result["total_cost"],
            "max_uses": result["max_uses"],
        }
        ctx.store.put(
            ctx.output_bucket,
            prefix + MANIFEST_NAME,
            json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"),
            content_type="application/json",
            metadata={"job-id": ctx.job_id, "status": "succeeded"},
        )
        uri = f"s3://{ctx.output_bucket}/"
        return {
            "mosaic": uri + objects[0]["key"],
            "mosaic_key": objects[0]["key"],
            "assignment": uri + objects[1]["key"],
            "tiles_report": uri + objects[2]["key"],
            "manifest": uri + prefix + MANIFEST_NAME,
            "cells": result["cells"],
            "size": f"{result['width']}x{result['height']}",
            "tiles_used": result["tiles"]["tiles_used"],
            "tiles_unreadable": result["tiles"]["unreadable"],
            "mosaic_sha256": objects[0]["sha256"],
        }

    def demo_params(self, *, store: JobStore, input_bucket: str, scratch: Path) -> dict[str, Any]:
        """Upload photo_mosaic's demo tiles (600 photos, duplicates, broken files) and target."""
        from photo_mosaic.demo import make_demo_data

        data = make_demo_data(scratch / "mosaic-demo", n_tiles=600, n_duplicates=20, seed=0)
        files = sorted(p for p in data.tiles.rglob("*") if p.is_file())
        tiles_prefix = DEMO_PREFIX + "tiles/"

        def upload(path: Path) -> None:
            key = tiles_prefix + path.relative_to(data.tiles).as_posix()
            store.put(input_bucket, key, path.read_bytes(), content_type=_guess(path), metadata={})

        with ThreadPoolExecutor(max_workers=DOWNLOAD_THREADS) as pool:
            list(pool.map(upload, files))
        target_key = DEMO_PREFIX + "target.png"
        store.put(
            input_bucket,
            target_key,
            data.target.read_bytes(),
            content_type="image/png",
            metadata={},
        )
        return {
            "tiles_prefix": tiles_prefix,
            "target_key": target_key,
            "cols": 30,
            "method": "unique",
            "tile_size": 24,
        }

    def write_preview(
        self, outputs: Mapping[str, Any], *, store: JobStore, output_bucket: str, path: Path
    ) -> Path:
        """The mosaic itself (``path``'s suffix is replaced by the mosaic's)."""
        key = str(outputs["mosaic_key"])
        out = path.with_suffix(PurePosixPath(key).suffix)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(store.get(output_bucket, key))
        return out


def _in_job_terms(message: str, target_path: str, params: MosaicParams) -> str:
    """photo_mosaic's message, naming the job's key and parameters instead of its CLI options."""
    for cli, job in (
        (target_path, params.target_key),
        ("--thumb-size", "tile_size"),
        ("--method nearest", "method 'nearest'"),
        ("--cols", "cols"),
    ):
        message = message.replace(cli, job)
    return message


def _guess(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(
        suffix, "application/octet-stream"
    )


def _mime(params: MosaicParams) -> str:
    return "png" if params.format == "png" else "jpeg"


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _encode(image: Any, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def _max_uses(tiles: Iterable[int]) -> int:
    counts: dict[int, int] = {}
    for t in tiles:
        counts[t] = counts.get(t, 0) + 1
    return max(counts.values(), default=0)


def _assignment(index: Any, matches: Any, keys: Sequence[str], target: Path) -> bytes:
    """The cell -> tile table as Parquet: row, col, tile_key, cost (squared descriptor distance
    between the cell and its tile, the quantity the assignment minimises in total)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from photo_mosaic.match import cell_costs

    rows, cols = matches.shape
    cost = cell_costs(index, target, matches).ravel()
    chosen = matches.tile_for_cell.ravel()
    table = pa.table(
        {
            "row": pa.array(np.repeat(np.arange(rows, dtype=np.int32), cols)),
            "col": pa.array(np.tile(np.arange(cols, dtype=np.int32), rows)),
            "tile_key": pa.array([keys[t] for t in chosen], type=pa.string()),
            "cost": pa.array(cost, type=pa.float64()),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


KIND = MosaicKind()
