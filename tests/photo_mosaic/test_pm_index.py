"""Index stage on real JPEG/PNG folders: duplicates, cache reuse and refresh, broken files."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from photo_mosaic import build_index, load_index
from photo_mosaic.colour import block_descriptors, srgb_to_lab
from photo_mosaic.index import rebind_cached_files


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


def test_16_bit_greyscale_tile_keeps_its_grey(
    tmp_path: Path, cache_path: Path, grey16_writer: Callable[..., Path]
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    grey16_writer(folder / "mid.png", 32768)
    grey16_writer(folder / "dark.png", 4369)

    build_index(folder, cache_path, thumb_size=16, progress=False)

    index = load_index(cache_path)
    thumbs = dict(zip(index.paths, index.thumbnails, strict=True))
    assert np.all(thumbs["mid.png"] == 128)
    assert np.all(thumbs["dark.png"] == 17)


def test_exif_rotated_tile_is_stood_up(
    tmp_path: Path, cache_path: Path, rotated_jpeg: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    rotated_jpeg.rename(folder / "portrait.jpg")

    build_index(folder, cache_path, thumb_size=16, progress=False)

    thumb = load_index(cache_path).thumbnails[0].astype(int)
    assert thumb[1, 8, 0] > 180
    assert thumb[1, 8, 2] < 60
    assert thumb[14, 8, 2] > 180
    assert thumb[14, 8, 0] < 60


@pytest.mark.parametrize("scheduler", ["threads", "processes", "sync"])
def test_progress_advances_to_the_total(
    tile_folder: Path, cache_path: Path, photo_writer: Callable[..., Path], scheduler: str
) -> None:
    for k in range(40):  # more files than partitions, so the progress moves in several steps
        photo_writer(tile_folder / "more" / f"extra_{k:02d}.png", (k * 6, 255 - k * 6, 90))
    calls: list[tuple[int, int]] = []

    report = build_index(
        tile_folder,
        cache_path,
        scheduler=scheduler,
        progress=lambda done, total: calls.append((done, total)),
    )

    assert report.n_decoded == 67
    assert len(calls) > 1
    assert calls[-1] == (67, 67)
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert done[0] > 0
    assert {t for _, t in calls} == {67}


def test_progress_bar_moves(
    tile_folder: Path, cache_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_index(tile_folder, cache_path, progress=True)

    err = capsys.readouterr().err
    assert "thumbnails:   0%" in err
    assert re.search(r"\b[1-9]\d*/27\b", err), err
    assert "27/27" in err


def test_a_file_name_that_is_not_utf8_is_indexed(
    tile_folder: Path, cache_path: Path, photo_writer: Callable[..., Path]
) -> None:
    name = os.fsdecode(b"caf\xe9_latin1.jpg")  # a name written on a Latin-1 system
    photo_writer(tile_folder / name, (10, 200, 30))

    report = build_index(tile_folder, cache_path, progress=False)

    assert report.n_tiles == 25
    assert not report.failed
    index = load_index(cache_path)
    assert name in index.paths
    assert (tile_folder / index.paths[index.paths.index(name)]).is_file()
    # The summary can be printed on any terminal: the byte is shown escaped.
    assert "25 distinct tiles" in report.summary()
    report.summary().encode("utf-8")
    again = build_index(tile_folder, cache_path, progress=False)
    assert (again.n_reused, again.n_decoded) == (28, 0)


def test_a_cache_folder_that_cannot_be_created_is_a_clear_error(
    tile_folder: Path, tmp_path: Path
) -> None:
    (tmp_path / "plain_file").write_text("not a folder")

    with pytest.raises(ValueError, match=r"cannot create the cache folder .*plain_file"):
        build_index(tile_folder, tmp_path / "plain_file" / "sub" / "tiles.h5", progress=False)
    (tmp_path / "folder.h5").mkdir()
    with pytest.raises(ValueError, match=r"folder\.h5' exists and is not a file"):
        build_index(tile_folder, tmp_path / "folder.h5", progress=False)


def test_a_file_rewritten_with_the_same_size_and_mtime_is_read_again(
    tmp_path: Path, cache_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    tile = folder / "tile.png"
    # Uncompressed PNGs: the file size depends only on the image size, not on the colours.
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tile, compress_level=0)
    Image.new("RGB", (40, 30), (30, 30, 200)).save(folder / "other.png", compress_level=0)
    build_index(folder, cache_path, thumb_size=8, progress=False)
    before = tile.stat()

    Image.new("RGB", (40, 30), (30, 200, 30)).save(tile, compress_level=0)
    os.utime(tile, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = tile.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    report = build_index(folder, cache_path, thumb_size=8, progress=False)

    assert (report.n_decoded, report.n_reused) == (1, 1)
    index = load_index(cache_path)
    np.testing.assert_array_equal(
        index.thumbnails[index.paths.index("tile.png")],
        np.broadcast_to(np.uint8([30, 200, 30]), (8, 8, 3)),
    )


def test_an_unchanged_rerun_reuses_descriptors_and_leaves_the_cache_alone(
    tile_folder: Path, cache_path: Path
) -> None:
    first = build_index(tile_folder, cache_path, grid=2, progress=False)
    stat = cache_path.stat()
    with h5py.File(cache_path) as f:
        descriptors = f["tiles/descriptor"][:]

    second = build_index(tile_folder, cache_path, grid=2, progress=False)

    assert first.cache_written
    assert not second.cache_written
    assert (second.n_reused, second.n_decoded) == (27, 0)
    assert "(unchanged)" in second.summary()
    again = cache_path.stat()
    assert (again.st_ino, again.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    index = load_index(cache_path)
    np.testing.assert_array_equal(index.descriptors, descriptors)
    np.testing.assert_allclose(index.descriptors, block_descriptors(index.thumbnails, 2))

    # A removed file is a change: the cache is written without it.
    (tile_folder / "album1" / "img_07.jpg").unlink()
    third = build_index(tile_folder, cache_path, grid=2, progress=False)
    assert third.cache_written
    assert third.n_tiles == 23


def test_a_cache_made_elsewhere_is_reused_for_the_rebound_files_only(
    tile_folder: Path, tmp_path: Path
) -> None:
    """The S3 use: the cache travels to a fresh folder; the caller vouches for some files (empty
    placeholders there), every other file of the cache is read again."""
    cache = tmp_path / "first" / "tiles.h5"
    first = build_index(tile_folder, cache, progress=False)
    names = sorted(p.relative_to(tile_folder).as_posix() for p in tile_folder.rglob("*.*"))
    elsewhere = tmp_path / "elsewhere"
    vouched, changed = names[:-3], names[-3:]
    for name in vouched:
        (elsewhere / name).parent.mkdir(parents=True, exist_ok=True)
        (elsewhere / name).touch()
    for name in changed:
        (elsewhere / name).parent.mkdir(parents=True, exist_ok=True)
        (elsewhere / name).write_bytes((tile_folder / name).read_bytes())
    moved = tmp_path / "moved" / "tiles.h5"
    moved.parent.mkdir()
    moved.write_bytes(cache.read_bytes())
    assert rebind_cached_files(moved, elsewhere, vouched) == len(vouched)
    second = build_index(elsewhere, moved, progress=False)
    assert second.n_reused == len(vouched)
    assert second.n_decoded == len(changed)
    assert second.n_tiles == first.n_tiles
    assert load_index(moved).fingerprint() == load_index(cache).fingerprint()
    # Without the rebinding every file would be read (here: the empty placeholders fail).
    again = tmp_path / "again" / "tiles.h5"
    again.parent.mkdir()
    again.write_bytes(cache.read_bytes())
    third = build_index(elsewhere, again, progress=False)
    assert third.n_reused == 0
    assert {name for name, _ in third.failed} == set(vouched)


def test_rebinding_a_file_that_is_not_a_cache_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "tiles.h5"
    bogus.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="is not a readable photo-mosaic cache"):
        rebind_cached_files(bogus, tmp_path, [])
