"""The download command against a real HTTP mirror on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import gzip
import os
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from number_generator import IDXFormatError, clear_source_cache, download_mnist, load_source
from number_generator.__main__ import main as module_main

T10K = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


class _Mirror:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.requests: list[str] = []
        mirror = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                mirror.requests.append(self.path)

        self.server = ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(Handler, directory=str(directory))
        )
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mnist/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def fetched(self) -> list[str]:
        return sorted(p.rsplit("/", 1)[-1] for p in self.requests)


@pytest.fixture
def mirror(tmp_path: Path, packaged_gz: dict[str, bytes]) -> Iterator[_Mirror]:
    root = tmp_path / "www"
    (root / "mnist").mkdir(parents=True)
    for name, data in packaged_gz.items():
        (root / "mnist" / name).write_bytes(data)
    served = _Mirror(root)
    served.thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv("NUMBER_GENERATOR_CACHE_DIR", str(directory))
    return directory


def test_download_fills_the_cache_which_becomes_the_default(mirror: _Mirror, cache: Path) -> None:
    assert "packaged" in load_source().name
    assert download_mnist(mirror=mirror.url, splits=["t10k"]) == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(T10K), "no temporary files left"
    assert mirror.fetched() == sorted(T10K)
    source = load_source()
    assert str(cache) in source.name
    assert len(source) == 10_000


def test_valid_files_are_not_downloaded_again_unless_forced(mirror: _Mirror, cache: Path) -> None:
    download_mnist(mirror=mirror.url, splits=["t10k"])
    download_mnist(mirror=mirror.url, splits=["t10k"])
    assert len(mirror.requests) == 2
    download_mnist(mirror=mirror.url, splits=["t10k"], force=True)
    assert len(mirror.requests) == 4


def test_a_corrupt_mirror_file_is_rejected_and_nothing_is_written(
    mirror: _Mirror, cache: Path
) -> None:
    labels = mirror.directory / "mnist" / T10K[1]
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # a plausible but wrong label
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(IDXFormatError, match="SHA-256 of the decompressed contents"):
        download_mnist(mirror=mirror.url, splits=["t10k"])
    assert [p.name for p in cache.iterdir()] == [T10K[0]], "only the verified file is kept"


def test_a_truncated_download_is_rejected(mirror: _Mirror, cache: Path) -> None:
    images = mirror.directory / "mnist" / T10K[0]
    images.write_bytes(images.read_bytes()[:50_000])
    with pytest.raises(IDXFormatError, match="corrupt or truncated gzip"):
        download_mnist(mirror=mirror.url, splits=["t10k"])
    assert not cache.exists() or not any(cache.iterdir())


def test_a_corrupted_cache_is_reported_when_loading(mirror: _Mirror, cache: Path) -> None:
    download_mnist(mirror=mirror.url, splits=["t10k"])
    (cache / T10K[1]).write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x01\x07"))
    clear_source_cache()  # as in a fresh process, which would not have the good copy in memory
    with pytest.raises(IDXFormatError, match="delete it and download again"):
        load_source()
    # Downloading again repairs it (the invalid file is replaced).
    download_mnist(mirror=mirror.url, splits=["t10k"])
    assert len(load_source()) == 10_000


def test_missing_file_on_the_mirror(mirror: _Mirror, cache: Path) -> None:
    with pytest.raises(
        OSError, match=r"cannot download http://127\.0\.0\.1:\d+/mnist/train-images"
    ):
        download_mnist(mirror=mirror.url)


def test_unreachable_mirror(cache: Path) -> None:
    with pytest.raises(OSError, match="cannot download"):
        download_mnist(mirror="http://127.0.0.1:9/", splits=["t10k"], timeout=5)


def test_mirror_from_the_environment(
    mirror: _Mirror, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NUMBER_GENERATOR_MNIST_MIRROR", mirror.url.rstrip("/"))
    download_mnist(splits=["t10k"])
    assert mirror.fetched() == sorted(T10K)


def test_download_command(
    mirror: _Mirror, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "elsewhere"
    argv = ["download", "--mirror", mirror.url, "--dir", str(target), "--split", "t10k"]
    assert module_main(argv) == 0
    assert capsys.readouterr().out.strip() == str(target)
    assert sorted(p.name for p in target.iterdir()) == sorted(T10K)


def test_download_command_errors(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert module_main(["download", "--mirror", "http://127.0.0.1:9/", "--split", "t10k"]) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("python -m number_generator download: error: cannot download")
    assert "\n" not in line
    assert module_main(["upload"]) == 2
    assert "unknown command 'upload'" in capsys.readouterr().err


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_downloaded_files_are_readable_as_the_umask_allows(
    mirror: _Mirror, cache: Path, umask: int, mode: int
) -> None:
    old = os.umask(umask)
    try:
        download_mnist(mirror=mirror.url, splits=["t10k"])
    finally:
        os.umask(old)
    for name in T10K:
        assert (cache / name).stat().st_mode & 0o777 == mode
    assert sorted(p.name for p in cache.iterdir()) == sorted(T10K), "no temporary file is left"
