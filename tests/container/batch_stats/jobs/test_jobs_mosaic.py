"""The ``mosaic`` job kind on moto's S3 server, against photo_mosaic's own API on the same files.

The tiles are photo_mosaic's demo tiles (real JPEG/PNG photos cut from scikit-image's bundled
pictures, with exact duplicates, a truncated JPEG, a text file named .png and a README).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest
from batch_stats.jobs.base import JobContext, JobInputError, JobSpecError
from batch_stats.jobs.mosaic import KIND, MosaicParams, cache_key
from batch_stats.jobs.registry import get_kind
from batch_stats.local.services import MotoEndpoint, moto_server
from batch_stats.worker.adapters import S3ObjectStore
from PIL import Image

from photo_mosaic import build_index, load_index, match_tiles, render_mosaic
from photo_mosaic.demo import DemoData, make_demo_data

from .conftest import RecordingStore

RAW, RESULTS = "mosaic-raw", "mosaic-results"
TILES = "inputs/tiles/demo/"
TARGET = "inputs/targets/cat.png"
_ids = itertools.count()


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoEndpoint]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    return make_demo_data(tmp_path_factory.mktemp("demo"), n_tiles=120, n_duplicates=5, seed=3)


@pytest.fixture
def s3(moto: MotoEndpoint, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in moto.environ().items():
        monkeypatch.setenv(name, value)
    client = boto3.Session(region_name="us-east-1").client("s3")
    for bucket in (RAW, RESULTS):
        client.create_bucket(Bucket=bucket)
        for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])
    return client


@pytest.fixture
def store(s3: Any) -> RecordingStore:
    return RecordingStore(S3ObjectStore(s3))


def upload_folder(store: RecordingStore, folder: Path, prefix: str) -> list[str]:
    keys = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = prefix + path.relative_to(folder).as_posix()
        store.put(RAW, key, path.read_bytes(), content_type="image/jpeg", metadata={})
        keys.append(key)
    return keys


@pytest.fixture
def uploaded(store: RecordingStore, demo: DemoData) -> list[str]:
    keys = upload_folder(store, demo.tiles, TILES)
    store.put(RAW, TARGET, demo.target.read_bytes(), content_type="image/png", metadata={})
    return keys


def context(store: RecordingStore, tmp_path: Path) -> JobContext:
    job_id = f"job-{next(_ids)}"
    scratch = tmp_path / job_id
    scratch.mkdir()
    return JobContext(
        job_id=job_id, input_bucket=RAW, output_bucket=RESULTS, store=store, scratch=scratch
    )


def run_job(params: MosaicParams, ctx: JobContext) -> dict[str, Any]:
    shards = KIND.shards(params)
    results = [KIND.run_shard(params, shard=k, shards=shards, ctx=ctx) for k in range(shards)]
    return KIND.finish(params, shard_results=results, ctx=ctx)


def params(**overrides: Any) -> MosaicParams:
    doc: dict[str, Any] = {"tiles_prefix": TILES, "target_key": TARGET, "cols": 10}
    return KIND.parse(doc | overrides)


# --- parameters -------------------------------------------------------------------------------


def test_the_registry_finds_the_kind() -> None:
    assert get_kind("mosaic") is KIND
    assert KIND.output_prefix("j1") == "mosaics/j1/"


def test_parse_names_every_problem_at_once() -> None:
    with pytest.raises(JobSpecError) as caught:
        KIND.parse(
            {
                "tiles_prefix": "uploads/tiles/",
                "cols": "ten",
                "tile_size": 1000,
                "grid": 3,
                "method": "best",
                "format": "gif",
                "blend": 2,
                "colour": "red",
            }
        )
    problems = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 8, problems
    for expected in (
        "unknown parameters 'colour'",
        "target_key is required",
        "tiles_prefix must be a key under 'inputs/'",
        "cols must be an integer, got str",
        "tile_size must be between 8 and 256, got 1000",
        "method must be one of nearest, unique, got 'best'",
        "format must be one of png, jpg, got 'gif'",
        "blend must be between 0 and 1, got 2",
    ):
        assert expected in problems


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"cols": 0}, "cols must be between 1 and 2000, got 0"),
        ({"cols": True}, "cols must be an integer, got bool"),
        ({"cols": 2000, "tile_size": 256}, "the limit is 65,500 px: use at most 255 columns"),
        ({"grid": 3}, "grid (3) must divide tile_size (32)"),
        ({"grid": 5, "tile_size": 40}, "grid must be between 1 and 4, got 5"),
        ({"target_key": "inputs/cat.gif"}, "target_key must end in .jpg, .jpeg or .png"),
        ({"tiles_prefix": "inputs/../uploads/"}, "must not contain empty, '.' or '..'"),
        ({"tiles_prefix": "inputs/"}, "tiles_prefix must be a key under 'inputs/'"),
    ],
)
def test_parse_refuses(doc: dict[str, Any], expected: str) -> None:
    with pytest.raises(JobSpecError) as caught:
        params(**doc)
    assert any(expected in p for p in caught.value.problems), caught.value.problems


def test_parse_defaults_and_normalises_the_prefix() -> None:
    p = params(tiles_prefix="inputs/tiles/demo", method="unique", blend=0)
    assert p == MosaicParams(
        tiles_prefix="inputs/tiles/demo/",
        target_key=TARGET,
        cols=10,
        method="unique",
        tile_size=32,
        grid=1,
        format="png",
        blend=0.0,
    )
    assert KIND.shards(p) == 1


# --- a job end to end -------------------------------------------------------------------------


def reference_mosaic(demo: DemoData, tmp_path: Path, *, method: str, tile_size: int) -> np.ndarray:
    """What photo_mosaic's own API makes of the same files."""
    cache = tmp_path / "reference" / "tiles.h5"
    build_index(demo.tiles, cache, thumb_size=tile_size, progress=False)
    index = load_index(cache)
    matches = match_tiles(index, demo.target, cols=10, method=method)  # type: ignore[arg-type]
    return np.asarray(render_mosaic(index, matches))


@pytest.mark.slow
def test_unique_job_end_to_end(
    store: RecordingStore, uploaded: list[str], demo: DemoData, tmp_path: Path
) -> None:
    p = params(method="unique", tile_size=16)
    ctx = context(store, tmp_path)
    outputs = run_job(p, ctx)
    prefix = f"mosaics/{ctx.job_id}/"
    written = [k for k in store.written if k.startswith(prefix)]
    assert written[-1] == prefix + "manifest.json"  # last
    assert sorted(written) == sorted(
        prefix + n for n in ("mosaic.png", "assignment.parquet", "tiles.json", "manifest.json")
    )

    mosaic = store.get(RESULTS, prefix + "mosaic.png")
    pixels = np.asarray(Image.open(io.BytesIO(mosaic)))
    expected = reference_mosaic(demo, tmp_path, method="unique", tile_size=16)
    assert pixels.shape == expected.shape == (7 * 16, 10 * 16, 3)
    assert np.array_equal(pixels, expected)

    table = pq.read_table(io.BytesIO(store.get(RESULTS, prefix + "assignment.parquet")))
    assert table.column_names == ["row", "col", "tile_key", "cost"]
    tiles = table.column("tile_key").to_pylist()
    assert len(tiles) == 70
    assert len(set(tiles)) == 70
    assert set(tiles) <= set(uploaded)

    manifest = json.loads(store.get(RESULTS, prefix + "manifest.json"))
    assert manifest["status"] == "succeeded"
    assert manifest["manifest_version"] == 1
    assert manifest["reason"] is None
    assert manifest["params"]["method"] == "unique"
    assert manifest["counts"]["cells"] == 70
    assert manifest["counts"]["unreadable"] == 2
    assert manifest["mosaic"] == {"rows": 7, "cols": 10, "cells": 70, "width": 160, "height": 112}
    assert manifest["max_uses"] == 1
    assert manifest["total_cost"] == pytest.approx(sum(table.column("cost").to_pylist()))
    for obj in manifest["objects"]:
        data = store.get(RESULTS, obj["key"])
        assert hashlib.sha256(data).hexdigest() == obj["sha256"]
        assert len(data) == obj["size"]
    assert outputs["mosaic"] == f"s3://{RESULTS}/{prefix}mosaic.png"
    assert outputs["mosaic_sha256"] == hashlib.sha256(mosaic).hexdigest()
    assert outputs["cells"] == 70

    # Nothing silent: the broken files, the duplicates and the other files are listed.
    report = json.loads(store.get(RESULTS, prefix + "tiles.json"))
    unreadable = dict(report["unreadable"])
    assert set(unreadable) == {TILES + "broken/truncated.jpg", TILES + "broken/notes.png"}
    assert unreadable[TILES + "broken/notes.png"] == "not a JPEG or PNG image"
    assert report["not_images"] == [TILES + "broken/README.txt"]
    assert report["counts"]["duplicates"] == demo.n_duplicates == len(report["duplicates"])
    assert report["counts"]["tiles_used"] == 120
    assert outputs["tiles_unreadable"] == 2


@pytest.mark.slow
def test_a_redelivered_shard_writes_the_same_bytes(
    store: RecordingStore, uploaded: list[str], tmp_path: Path
) -> None:
    p = params(tile_size=8, format="jpg", blend=0.2)
    ctx = context(store, tmp_path)
    first = KIND.run_shard(p, shard=0, shards=1, ctx=ctx)
    objects = {o["key"]: store.get(RESULTS, o["key"]) for o in first["objects"]}
    again = KIND.run_shard(p, shard=0, shards=1, ctx=ctx)  # the cache is in S3 now
    assert again == first
    assert {o["key"]: store.get(RESULTS, o["key"]) for o in again["objects"]} == objects
    assert Image.open(io.BytesIO(objects[f"mosaics/{ctx.job_id}/mosaic.jpg"])).format == "JPEG"


# --- the thumbnail cache in S3 ----------------------------------------------------------------


@pytest.mark.slow
def test_a_later_job_reuses_the_thumbnail_cache(
    store: RecordingStore, uploaded: list[str], demo: DemoData, tmp_path: Path
) -> None:
    p = params(tile_size=16)
    key = cache_key(RAW, p)
    first, report1 = KIND.run(p, ctx=context(store, tmp_path))
    assert not report1.found
    assert report1.uploaded
    # 120 tiles, 5 duplicates and 2 broken files are downloaded and read; README.txt is not.
    image_keys = [k for k in uploaded if not k.endswith(".txt")]
    assert report1.tiles_downloaded == report1.tiles_decoded == len(image_keys)
    cached = store.get(RESULTS, key)

    store.written.clear()
    second, report2 = KIND.run(p, ctx=context(store, tmp_path))
    assert report2.found
    assert not report2.uploaded
    assert key not in store.written
    # Only the two unreadable files (never cached) are fetched and read again.
    assert report2.tiles_reused == len(image_keys) - 2
    assert report2.tiles_downloaded == report2.tiles_decoded == 2
    assert store.get(RESULTS, key) == cached
    assert _object_bytes(store, second, "mosaic.png") == _object_bytes(store, first, "mosaic.png")
    assert second["total_cost"] == first["total_cost"]

    # A new tile and a replaced one (another size): only those two (and the broken) are read,
    # and the cache is uploaded again.
    new = Image.new("RGB", (40, 40), (250, 10, 10))
    buffer = io.BytesIO()
    new.save(buffer, format="PNG")
    store.put(RAW, TILES + "new/red.png", buffer.getvalue(), content_type="image/png", metadata={})
    replaced = TILES + "set1/photo_00001.jpg"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (0, 0, 250)).save(buffer, format="JPEG")
    store.put(RAW, replaced, buffer.getvalue(), content_type="image/jpeg", metadata={})
    third, report3 = KIND.run(p, ctx=context(store, tmp_path))
    assert report3.found
    assert report3.uploaded
    assert report3.tiles_decoded == 4
    assert report3.tiles_reused == len(image_keys) - 3
    assert third["tiles"]["tiles_used"] == first["tiles"]["tiles_used"] + 1
    # The cache now holds the replaced tile's new thumbnail: a fresh index agrees.
    fourth, report4 = KIND.run(p, ctx=context(store, tmp_path))
    assert report4.tiles_decoded == 2
    assert not report4.uploaded
    assert fourth["total_cost"] == third["total_cost"]


def _object_bytes(store: RecordingStore, summary: Mapping[str, Any], name: str) -> bytes:
    (key,) = [o["key"] for o in summary["objects"] if o["key"].endswith("/" + name)]
    return store.get(RESULTS, key)


def test_an_unreadable_cache_is_rebuilt(
    store: RecordingStore, uploaded: list[str], tmp_path: Path
) -> None:
    p = params(tile_size=8)
    store.put(RESULTS, cache_key(RAW, p), b"not hdf5", content_type="x", metadata={})
    summary, report = KIND.run(p, ctx=context(store, tmp_path))
    assert report.found
    assert report.uploaded
    assert report.tiles_reused == 0
    assert summary["tiles"]["tiles_used"] == 120
    assert store.get(RESULTS, cache_key(RAW, p))[:8] == b"\x89HDF\r\n\x1a\n"


# --- inputs that can never work ---------------------------------------------------------------


def test_a_missing_tile_prefix(store: RecordingStore, uploaded: list[str], tmp_path: Path) -> None:
    p = params(tiles_prefix="inputs/tiles/nothing-here/")
    with pytest.raises(JobInputError, match=r"no tiles under s3://mosaic-raw/inputs/tiles/nothing"):
        KIND.run_shard(p, shard=0, shards=1, ctx=context(store, tmp_path))


def test_a_missing_target(store: RecordingStore, uploaded: list[str], tmp_path: Path) -> None:
    p = params(target_key="inputs/targets/dog.jpg")
    with pytest.raises(JobInputError, match=r"s3://mosaic-raw/inputs/targets/dog.jpg does not"):
        KIND.run_shard(p, shard=0, shards=1, ctx=context(store, tmp_path))


def test_only_unreadable_tiles(store: RecordingStore, demo: DemoData, tmp_path: Path) -> None:
    upload_folder(store, demo.tiles / "broken", "inputs/broken/")
    store.put(RAW, TARGET, demo.target.read_bytes(), content_type="image/png", metadata={})
    p = params(tiles_prefix="inputs/broken/")
    with pytest.raises(JobInputError, match=r"no usable tile .* none of the 2 image files"):
        KIND.run_shard(p, shard=0, shards=1, ctx=context(store, tmp_path))


def test_a_target_that_is_not_an_image(
    store: RecordingStore, uploaded: list[str], tmp_path: Path
) -> None:
    store.put(RAW, "inputs/targets/fake.png", b"text", content_type="image/png", metadata={})
    p = params(target_key="inputs/targets/fake.png")
    with pytest.raises(JobInputError, match=r"inputs/targets/fake.png.*not an image"):
        KIND.run_shard(p, shard=0, shards=1, ctx=context(store, tmp_path))


def test_too_many_cells_for_unique_is_refused_before_the_work(
    store: RecordingStore, uploaded: list[str], tmp_path: Path
) -> None:
    # 400 columns on the 451 x 300 cat: 400 x 266 = 106,400 cells > 100,000.
    p = params(cols=400, tile_size=8, method="unique")
    with pytest.raises(JobInputError, match=r"106,400 cells.*the limit is 100,000 cells") as e:
        KIND.run_shard(p, shard=0, shards=1, ctx=context(store, tmp_path))
    assert "use at most 387 columns, or method 'nearest'" in str(e.value)
    assert not list(store.list_keys(RESULTS, "mosaics/"))  # nothing written for the job


def test_a_mosaic_above_the_pixel_limit_is_refused(
    store: RecordingStore, uploaded: list[str], tmp_path: Path
) -> None:
    # 250 x 166 cells of 256 px: 64,000 x 42,496 px (2,720 megapixels).
    p = params(cols=250, tile_size=256)
    with pytest.raises(JobInputError, match=r"the limit is 100 megapixels.*smaller tile_size"):
        KIND.run_shard(p, shard=0, shards=1, ctx=context(store, tmp_path))


# --- local mode -------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_job_and_preview(store: RecordingStore, tmp_path: Path) -> None:
    doc = KIND.demo_params(store=store, input_bucket=RAW, scratch=tmp_path)
    p = KIND.parse(doc)
    assert p.tiles_prefix.startswith("inputs/demo-mosaic/")
    outputs = run_job(p, context(store, tmp_path))
    preview = KIND.write_preview(
        outputs, store=store, output_bucket=RESULTS, path=tmp_path / "preview.png"
    )
    assert preview.read_bytes() == store.get(RESULTS, outputs["mosaic_key"])
    with Image.open(preview) as im:
        assert im.size == (30 * 24, 20 * 24)
