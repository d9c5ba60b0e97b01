"""The photo-mosaic command line: stages separately and together, one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photo_mosaic.cli import main


def test_stages_run_separately(
    tile_folder: Path,
    target_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = tmp_path / "c" / "tiles.h5"
    out = tmp_path / "mosaic.jpg"

    assert main(["index", str(tile_folder), "--cache", str(cache), "--thumb-size", "16"]) == 0
    assert "24 distinct tiles, 3 duplicates removed" in capsys.readouterr().out
    assert main(["match", str(target_path), "--cache", str(cache), "--cols", "6"]) == 0
    assert "matched 4 x 6 cells to 24 tiles (nearest" in capsys.readouterr().out
    assert (tmp_path / "c" / "tiles.matches.npz").is_file()
    assert main(["render", "--cache", str(cache), "-o", str(out), "--blend", "0.2"]) == 0
    assert f"written to {out}" in capsys.readouterr().out
    assert Image.open(out).size == (96, 64)


def test_run_does_all_three_stages(tile_folder: Path, target_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "mosaic.png"
    args = ["run", str(tile_folder), str(target_path), "--cache", str(tmp_path / "t.h5")]
    code = main([*args, "--cols", "5", "--method", "unique", "--grid", "2", "-o", str(out)])

    assert code == 0
    mosaic = np.asarray(Image.open(out))
    assert mosaic.shape == (32 * 3, 32 * 5, 3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["index", "{empty}", "--cache", "{tmp}/c.h5"], "no .jpg, .jpeg or .png files under"),
        (["match", "{target}", "--cache", "{tmp}/none.h5", "--cols", "3"], "index stage first"),
        (
            ["run", "{tiles}", "{target}", "--cache", "{tmp}/c.h5", "--cols", "500", "-o", "x.png"],
            "use at most",
        ),
        (
            [
                "run",
                "{tiles}",
                "{target}",
                "--cache",
                "{tmp}/c.h5",
                "--cols",
                "4",
                "-o",
                "{tmp}/no/m.png",
            ],
            "the output folder",
        ),
    ],
)
def test_bad_input_gives_a_one_line_error(
    argv: list[str],
    message: str,
    tile_folder: Path,
    target_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "empty").mkdir()
    values = {
        "empty": tmp_path / "empty",
        "tmp": tmp_path,
        "target": target_path,
        "tiles": tile_folder,
    }
    code = main([a.format(**values) for a in argv])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("photo-mosaic: error: ")
    assert message in err
    assert "\n" not in err


def test_argument_errors_exit_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["render", "--blend", "2", "-o", "m.png"])
    assert exc.value.code == 2
    assert "expected a number between 0 and 1" in capsys.readouterr().err


@pytest.fixture
def big_target(tmp_path: Path) -> Path:
    path = tmp_path / "big.png"
    Image.new("RGB", (4000, 3000), (90, 120, 200)).save(path)
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cols", "3000"], "96,000 x 72,000 px (6,912 megapixels); the limit is 100 megapixels"),
        (["--cols", "1500", "--method", "unique"], "1,687,500 cells would take about"),
    ],
)
def test_sizes_above_the_limits_are_refused_before_indexing(
    tile_folder: Path,
    big_target: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    cache = tmp_path / "c" / "tiles.h5"
    argv = ["run", str(tile_folder), str(big_target), "--cache", str(cache)]

    code = main([*argv, *extra, "-o", str(tmp_path / "m.jpg")])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err
    assert "use at most" in err
    assert "\n" not in err
    assert not cache.exists()  # refused before the (long) index stage


def test_unique_match_says_how_long_it_will_take(
    tile_folder: Path, target_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "tiles.h5"
    assert main(["index", str(tile_folder), "--cache", str(cache)]) == 0

    argv = ["match", str(target_path), "--cache", str(cache), "--cols", "6", "--method", "unique"]
    assert main(argv) == 0

    err = capsys.readouterr().err
    assert "unique assignment of 24 cells to 24 tiles: expect under a second" in err


def test_broken_inputs_give_one_line_errors(
    tile_folder: Path,
    bomb_png: Path,
    target_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "out_dir.png").mkdir()
    cases = [
        (
            [
                "run",
                str(tile_folder),
                str(bomb_png),
                "--cache",
                str(tmp_path / "c.h5"),
                "--cols",
                "4",
                "-o",
                str(tmp_path / "m.png"),
            ],
            "bomb.png' is too large to decode safely",
        ),
        (
            ["index", str(tile_folder), "--cache", str(tmp_path / "a_file" / "c" / "t.h5")],
            "cannot create the cache folder",
        ),
        (
            ["render", "--cache", str(tmp_path / "t.h5"), "-o", str(tmp_path / "out_dir.png")],
            "out_dir.png' is a folder",
        ),
    ]
    for argv, message in cases:
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, argv
        assert err.startswith("photo-mosaic: error: ")
        assert message in err
        assert "\n" not in err


def test_index_prints_names_that_are_not_utf8(
    tile_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tile_folder / os.fsdecode(b"r\xe9sum\xe9.jpg")).write_text("not an image")

    code = main(["index", str(tile_folder), "--cache", str(tmp_path / "t.h5")])

    out = capsys.readouterr().out
    assert code == 0
    assert "unreadable: r\\xe9sum\\xe9.jpg: not a JPEG or PNG image" in out
