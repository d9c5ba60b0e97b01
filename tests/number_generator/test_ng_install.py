"""The distribution installs into a fresh virtual environment with only the core dependencies,
the two number_generator console scripts work there (package data included), and the commands
of the other parts say which extra they need instead of a ModuleNotFoundError traceback."""

from __future__ import annotations

import csv
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def _run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.slow
def test_console_scripts_in_a_fresh_virtual_environment(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / ("Scripts" if sys.platform == "win32" else "bin")
    installed = _run(bin_dir / "python", "-m", "pip", "install", "--quiet", REPO, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr

    names = _run(bin_dir / "python", "-m", "pip", "list", "--format=freeze", cwd=tmp_path)
    packages = {line.split("==")[0].lower() for line in names.stdout.split()}
    assert packages - {"pip", "setuptools"} == {"imgpipe", "numpy", "pillow", "tqdm"}

    work = tmp_path / "work"
    work.mkdir()
    done = _run(
        bin_dir / "generate-numbers-sequence", "0070", "1", "4", "110", "--seed", "5", cwd=work
    )
    assert done.returncode == 0, done.stderr
    with Image.open(work / "0070_w110_s1-4_seed5.png") as image:
        assert image.mode == "L"
        assert image.size == (110, 28)
        assert np.asarray(image).min() == 0

    bad = _run(bin_dir / "generate-numbers-sequence", "00x", "1", "4", "110", cwd=work)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "only the digits 0-9" in bad.stderr

    done = _run(
        bin_dir / "generate-phone-numbers", "1", "4", "250", "40", "out", "--seed", "2", "--quiet",
        cwd=work,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with (work / "out" / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 40
    assert all((work / "out" / row["file"]).is_file() for row in rows)

    help_text = _run(bin_dir / "generate-phone-numbers", "--help", cwd=work)
    assert help_text.returncode == 0
    assert "Formats: 090-XXXX-" in " ".join(help_text.stdout.split())

    for command, extra in (
        ("batch-stats", "worker"),
        ("photo-mosaic", "mosaic"),
        ("recognize-numbers", "train"),
    ):
        missing = _run(bin_dir / command, "--help", cwd=work)
        assert missing.returncode == 1
        assert "Traceback" not in missing.stderr
        assert missing.stderr.count("\n") == 1, missing.stderr
        assert missing.stderr.startswith(f"{command}: error: this command needs the '{extra}'")
        assert f"pip install 'imgpipe[{extra}" in missing.stderr
