"""Fill the user cache with the full MNIST set (70,000 digits) from a configurable mirror."""

from __future__ import annotations

import gzip
import os
import secrets
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from number_generator._idx import IDXFormatError
from number_generator._source import (
    _check_sha256,
    cache_dir,
    clear_source_cache,
)

__all__ = ["DEFAULT_MIRROR", "MIRROR_ENV", "download_mnist"]

MIRROR_ENV: Final = "NUMBER_GENERATOR_MNIST_MIRROR"
#: A long-lived public copy of the original files (the one torchvision uses).
DEFAULT_MIRROR: Final = "https://ossci-datasets.s3.amazonaws.com/mnist/"
SPLITS: Final = ("train", "t10k")


def download_mnist(
    *,
    mirror: str | None = None,
    directory: str | os.PathLike[str] | None = None,
    splits: Iterable[str] = SPLITS,
    force: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download MNIST's gzip files into ``directory`` (default: :func:`cache_dir`).

    ``mirror`` (default ``NUMBER_GENERATOR_MNIST_MIRROR``, else :data:`DEFAULT_MIRROR`) is a base
    URL holding ``<split>-images-idx3-ubyte.gz`` and ``<split>-labels-idx1-ubyte.gz``. Every file's
    decompressed contents must match the official SHA-256 before it is moved into place
    (atomically: a temporary file in the same directory, then a rename). Files already present and
    valid are kept unless ``force``. Returns the directory.
    """
    base_url = mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
    if not base_url.endswith("/"):
        base_url += "/"
    wanted = list(splits)
    unknown = [s for s in wanted if s not in SPLITS]
    if unknown or not wanted:
        raise ValueError(f"splits must be a non-empty selection of {SPLITS}, got {wanted}")
    target_dir = Path(directory).expanduser() if directory is not None else cache_dir()
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the MNIST cache {target_dir}: {exc.strerror}") from exc
    for split in wanted:
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{split}-{kind}-ubyte"
            target = target_dir / f"{name}.gz"
            if not force and target.is_file() and _valid(target.read_bytes(), name, str(target)):
                continue
            url = base_url + f"{name}.gz"
            data = _fetch(url, timeout)
            _valid(data, name, url, strict=True)  # raises IDXFormatError on a bad download
            _atomic_write(target, data)
    clear_source_cache()  # the cache is the default source from now on
    return target_dir


def _fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data: bytes = response.read()
            return data
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OSError(f"cannot download {url}: {reason}") from exc


def _valid(data: bytes, name: str, where: str, *, strict: bool = False) -> bool:
    """Whether ``data`` (gzip or raw) decompresses to the official contents of ``name``."""
    try:
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        _check_sha256(raw, name, where)
    except (OSError, EOFError, zlib.error, IDXFormatError) as exc:
        if strict:
            if isinstance(exc, IDXFormatError):
                raise
            raise IDXFormatError(f"{where}: corrupt or truncated gzip data ({exc})") from exc
        return False
    return True


def _atomic_write(target: Path, data: bytes) -> None:
    # Created with mode 0666 less the umask, like any file the user writes (mkstemp's 0600 would
    # hide a shared cache from the other users the directory lets in).
    tmp = target.parent / f".{target.name}.{secrets.token_hex(8)}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
