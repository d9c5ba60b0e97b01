"""The photo-mosaic command line: stages separately and together, one-line errors."""

from __future__ import annotations

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
