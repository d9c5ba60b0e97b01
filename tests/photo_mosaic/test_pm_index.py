"""Index stage on real JPEG/PNG folders: duplicates, cache reuse and refresh, broken files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from photo_mosaic import build_index, load_index
from photo_mosaic.colour import block_descriptors, srgb_to_lab


def test_duplicates_are_removed_and_reported(tile_folder: Path, cache_path: Path) -> None:
    report = build_index(tile_folder, cache_path, progress=False)

    assert report.n_files == 27
    assert report.n_tiles == 24
    assert sorted(dup for dup, _ in report.duplicates) == [
        "copies/dup_img_01.jpg",
        "copies/dup_img_05.jpg",
        "copies/dup_img_09.png",
    ]
    kept = {dup: orig for dup, orig in report.duplicates}
    assert kept["copies/dup_img_05.jpg"] == "album1/img_05.jpg"
    index = load_index(cache_path)
    assert len(index.paths) == len(set(index.hashes)) == 24
    assert not any(p.startswith("copies/") for p in index.paths)


def test_thumbnails_are_square_crops_with_lab_descriptors(tmp_path: Path, cache_path: Path) -> None:
    # Left half red, right half blue, wider than tall: the centre crop keeps both halves.
    arr = np.zeros((60, 120, 3), dtype=np.uint8)
    arr[:, :60] = (255, 0, 0)
    arr[:, 60:] = (0, 0, 255)
    Image.fromarray(arr).save(tmp_path / "two.png")

    build_index(tmp_path, cache_path, thumb_size=16, grid=2, progress=False)

    index = load_index(cache_path)
    assert index.thumbnails.shape == (1, 16, 16, 3)
    assert index.thumbnails.dtype == np.uint8
    np.testing.assert_array_equal(index.thumbnails[0, 8, 1], (255, 0, 0))
    np.testing.assert_array_equal(index.thumbnails[0, 8, 14], (0, 0, 255))
    assert index.descriptors.shape == (1, 12)
    np.testing.assert_allclose(index.descriptors, block_descriptors(index.thumbnails, 2))
    red = srgb_to_lab(np.array([255, 0, 0], dtype=np.uint8))
    np.testing.assert_allclose(red, (53.24, 80.09, 67.20), atol=0.05)


def test_cache_is_reused_and_refreshed_for_changed_files(
    tile_folder: Path, cache_path: Path, photo_writer: Callable[..., Path]
) -> None:
    first = build_index(tile_folder, cache_path, progress=False)
    assert first.n_decoded == 27

    second = build_index(tile_folder, cache_path, progress=False)
    assert (second.n_reused, second.n_decoded) == (27, 0)

    changed = tile_folder / "album0" / "img_00.png"
    photo_writer(changed, (1, 2, 3))
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    (tile_folder / "album1" / "img_07.jpg").unlink()
    photo_writer(tile_folder / "new" / "fresh.jpg", (250, 250, 5))

    third = build_index(tile_folder, cache_path, progress=False)

    assert third.n_decoded == 2  # the changed and the new file
    assert third.n_reused == 25
    index = load_index(cache_path)
    assert "album1/img_07.jpg" not in index.paths
    assert "new/fresh.jpg" in index.paths
    changed_row = index.paths.index("album0/img_00.png")
    np.testing.assert_allclose(index.thumbnails[changed_row].mean(axis=(0, 1)), (1, 2, 3), atol=3)


def test_cache_is_rebuilt_for_another_thumbnail_size(tile_folder: Path, cache_path: Path) -> None:
    build_index(tile_folder, cache_path, thumb_size=16, progress=False)

    report = build_index(tile_folder, cache_path, thumb_size=24, progress=False)

    assert report.n_reused == 0
    with h5py.File(cache_path) as f:
        assert f["tiles/thumbnail"].shape[1:] == (24, 24, 3)


def test_corrupt_and_non_image_files_are_reported_and_skipped(
    tile_folder: Path, cache_path: Path
) -> None:
    good = (tile_folder / "album0" / "img_00.png").read_bytes()
    (tile_folder / "bad").mkdir()
    (tile_folder / "bad" / "truncated.png").write_bytes(good[: len(good) // 3])
    (tile_folder / "bad" / "letter.jpg").write_text("Dear tiles,\n")
    (tile_folder / "bad" / "notes.txt").write_text("not an image suffix\n")

    report = build_index(tile_folder, cache_path, progress=False)

    failed = dict(report.failed)
    assert sorted(failed) == ["bad/letter.jpg", "bad/truncated.png"]
    assert failed["bad/letter.jpg"] == "not a JPEG or PNG image"
    assert failed["bad/truncated.png"].startswith("damaged image")
    assert report.ignored == 1
    assert report.n_tiles == 24
    assert "2 unreadable" in report.summary()
    assert "bad/letter.jpg" in report.summary()


def test_process_scheduler_gives_the_same_cache(tile_folder: Path, tmp_path: Path) -> None:
    build_index(tile_folder, tmp_path / "a.h5", scheduler="threads", progress=False)
    build_index(tile_folder, tmp_path / "b.h5", scheduler="processes", progress=False)

    a, b = load_index(tmp_path / "a.h5"), load_index(tmp_path / "b.h5")
    assert a.paths == b.paths
    np.testing.assert_array_equal(a.thumbnails, b.thumbnails)


@pytest.mark.slow
def test_distributed_scheduler_address(tile_folder: Path, cache_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        report = build_index(tile_folder, cache_path, scheduler=cluster.scheduler_address)
    assert report.n_tiles == 24


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"thumb_size": 4}, "thumb_size must be between 8 and 512"),
        ({"thumb_size": 30, "grid": 4}, "grid must be a positive divisor of thumb_size=30"),
        ({"scheduler": "gpu"}, "scheduler must be one of threads, processes, sync"),
    ],
)
def test_bad_options_are_rejected(
    tile_folder: Path, cache_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_index(tile_folder, cache_path, progress=False, **kwargs)  # type: ignore[arg-type]


def test_empty_and_missing_folders_are_rejected(tmp_path: Path, cache_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no photos here")
    with pytest.raises(ValueError, match=r"no \.jpg, \.jpeg or \.png files under"):
        build_index(tmp_path / "empty", cache_path, progress=False)
    with pytest.raises(ValueError, match="does not exist or is not a folder"):
        build_index(tmp_path / "missing", cache_path, progress=False)


def test_a_folder_of_only_broken_images_is_rejected(tmp_path: Path, cache_path: Path) -> None:
    (tmp_path / "x.jpg").write_text("nope")
    with pytest.raises(ValueError, match=r"none of the 1 image files .* could be read"):
        build_index(tmp_path, cache_path, progress=False)


def test_load_index_without_a_cache(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="run the index stage first"):
        load_index(tmp_path / "nothing.h5")
