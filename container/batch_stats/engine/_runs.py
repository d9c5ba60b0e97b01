"""Whole runs, streamed batch by batch: synthetic (in memory or as PNG folders) and from folders."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from ._counting import process_image, synthetic_batch_counts
from ._decode import ImageRejected, decode_image
from ._params import EngineParams
from ._pngwrite import write_rgb_png
from ._seeding import image_rng, validate_seed
from ._stats import BatchStats, summarize_batch
from ._synthetic import batch_ids, image_names, synthetic_image, synthetic_png_rows

__all__ = [
    "FolderRun",
    "Progress",
    "iter_folder_stats",
    "iter_synthetic_stats",
    "scan_run_folder",
    "utf8_name",
    "write_synthetic_run",
]

#: Called with the number of images just finished (for progress bars).
Progress = Callable[[int], object]


def _tick(progress: Progress | None) -> None:
    if progress is not None:
        progress(1)


def iter_synthetic_stats(
    seed: int,
    *,
    params: EngineParams,
    materialize: bool = False,
    progress: Progress | None = None,
) -> Iterator[BatchStats]:
    """Generate and process a run in memory, one batch at a time.

    By default only the crop's columns of each image are produced (see ``_synthetic``);
    ``materialize=True`` produces every full image first. Both give identical statistics, equal to
    those of :func:`iter_folder_stats` on the folder :func:`write_synthetic_run` writes.
    """
    validate_seed(seed)
    names = list(image_names(params))
    for batch_id in batch_ids(params):
        if materialize:
            counts = []
            for name in names:
                image = synthetic_image(seed, batch_id, name, params=params)
                rng = image_rng(seed, batch_id, name)
                counts.append(process_image(image, rng=rng, params=params))
                _tick(progress)
        else:
            counts = synthetic_batch_counts(seed, batch_id, names, params=params)
            if progress is not None:
                progress(len(names))
        yield summarize_batch(batch_id, counts)


def write_synthetic_run(
    root: str | Path,
    seed: int,
    *,
    params: EngineParams,
    progress: Progress | None = None,
) -> list[Path]:
    """Write a generated run as ``root/<batch_id>/<image_name>`` PNGs; return the batch folders.

    Raises:
        FileExistsError: a batch folder already exists under ``root`` (runs are never mixed).
    """
    validate_seed(seed)
    root = Path(root)
    folders = [root / batch_id for batch_id in batch_ids(params)]
    existing = [str(f) for f in folders if f.exists()]
    if existing:
        raise FileExistsError(f"batch folders already exist: {', '.join(existing[:3])}")
    root.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        folder.mkdir()
        for name in image_names(params):
            write_rgb_png(folder / name, synthetic_png_rows(seed, folder.name, name, params=params))
            _tick(progress)
    return folders


class FolderRun:
    """A run on disk: ``root/<batch_id>/<image>.png``, batch folders and images sorted by name.

    Entries whose names start with ``.`` and plain files directly under ``root`` (such as the
    Parquet output) are ignored; every other entry of a batch folder must be a regular file (or
    a symbolic link to one), which is then processed as a PNG image.
    """

    def __init__(self, root: Path, batches: dict[str, list[Path]]) -> None:
        self.root = root
        self.batches = batches

    @property
    def image_count(self) -> int:
        return sum(len(files) for files in self.batches.values())


def utf8_name(path: Path, what: str) -> str:
    """``path.name``, which must be valid UTF-8 (it is stored in Parquet and PostgreSQL).

    Raises:
        ValueError: the name is not valid UTF-8 (the message shows its bytes).
    """
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(path.name)
        raise ValueError(
            f"{what} name {raw!r} in {_shown(path.parent)!r} is not valid "
            f"UTF-8; rename it (names are stored as UTF-8 text)"
        ) from None
    return path.name


def _shown(path: Path) -> str:
    """A path for messages: bytes that are not UTF-8 shown as escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _not_a_file(path: Path) -> str | None:
    """Why a batch folder entry cannot be read as an image file, or None if it can."""
    try:
        mode = path.stat().st_mode  # follows symbolic links
    except FileNotFoundError:
        return "a broken symbolic link" if path.is_symlink() else "gone while the folder was read"
    except OSError as error:  # a symbolic link loop (ELOOP), no permission to look, ...
        return f"not readable ({error.strerror or error})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder (batch folders hold only image files)"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    return "not a regular file (a socket or device)"


def scan_run_folder(root: str | Path) -> FolderRun:
    """List a run folder's batches and images without reading them.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        ValueError: it has no batch folders, a batch folder has no files, a name is not UTF-8,
            or a batch folder holds entries that are not files (sub-folders, broken symbolic
            links, link loops, FIFOs, ...): all of those are listed, so that a batch's image
            count never changes silently.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"run folder not found: {root}")
    batches: dict[str, list[Path]] = {}
    problems: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        batch_id = utf8_name(folder, "batch folder")
        files = []
        for entry in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
            why = _not_a_file(entry)
            if why is not None:
                problems.append(
                    f"{batch_id}/{os.fsencode(entry.name).decode('utf-8', 'replace')}: {why}"
                )
                continue
            utf8_name(entry, "file")
            files.append(entry)
        if not files and not problems:
            raise ValueError(f"batch folder {folder} has no images")
        batches[batch_id] = files
    if problems:
        shown = "; ".join(problems[:10]) + (
            f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        )
        raise ValueError(
            f"{len(problems)} entries of {_shown(root)} are not image files: {shown} (a batch "
            "folder may hold only PNG files, or links to them; names starting with '.' are "
            "ignored)"
        )
    if not batches:
        raise ValueError(f"{root} has no batch folders; expected {root}/<batch_id>/<name>.png")
    return FolderRun(root, batches)


def _read_image_file(path: Path, name: str, params: EngineParams) -> bytes:
    """The file's bytes, at most ``params.max_file_bytes`` of them.

    Raises:
        ImageRejected: ``unreadable`` (permissions, I/O error, gone) or ``too_large``.
    """
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > params.max_file_bytes:
                raise ImageRejected(
                    name,
                    "too_large",
                    f"the file has {size} bytes; at most {params.max_file_bytes} are allowed",
                )
            return file.read()
    except OSError as error:
        raise ImageRejected(
            name, "unreadable", f"the file cannot be read ({error.strerror or error})"
        ) from None


def iter_folder_stats(
    run: FolderRun,
    seed: int,
    *,
    params: EngineParams,
    progress: Progress | None = None,
) -> Iterator[BatchStats]:
    """Decode and process a run folder, one image in memory at a time, one batch at a time.

    Raises:
        ImageRejected: a file is not an acceptable PNG (the message names the file).
    """
    validate_seed(seed)
    for batch_id, files in run.batches.items():
        counts = []
        for path in files:
            name = f"{batch_id}/{path.name}"
            image = decode_image(_read_image_file(path, name, params), name=name, params=params)
            rng = image_rng(seed, batch_id, path.name)
            counts.append(process_image(image, rng=rng, params=params))
            _tick(progress)
        yield summarize_batch(batch_id, counts)
