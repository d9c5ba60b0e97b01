"""Console-script entry points for the parts that need an extra (``batch-stats``, ``photo-mosaic``,
``recognize-numbers``).

``pip install imgpipe`` installs every command but only the core dependencies. Run without its
extra, a command would die in an import with a ``ModuleNotFoundError`` traceback; these wrappers
say instead, in one line, which extra to install (exit status 1).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Final

__all__ = ["batch_stats", "photo_mosaic", "recognize_numbers", "run"]

#: Top-level modules that only an extra provides, and the extra that provides them.
EXTRA_MODULES: Final[dict[str, str]] = {
    "pyarrow": "worker",
    "pandas": "worker",
    "boto3": "worker",
    "botocore": "worker",
    "psycopg": "worker",
    "dask": "mosaic",
    "h5py": "mosaic",
    "scipy": "mosaic",
    "numba": "mosaic",
    "ot": "mosaic",
    "moto": "demo",
    "pgserver": "demo",
    "matplotlib": "demo",
    "aws_lambda_powertools": "lambda",
    "torch": "train",
}


def run(command: str, target: str, extra: str) -> int:
    """Import ``target`` (``module:function``) and call it; a missing extra is one clear line."""
    module_name, _, function = target.partition(":")
    try:
        main: Callable[[], int | None] = getattr(importlib.import_module(module_name), function)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in EXTRA_MODULES:
            raise
        needed = EXTRA_MODULES[top]
        hint = needed if needed == extra else f"{extra},{needed}"
        print(
            f"{command}: error: this command needs the '{extra}' extra (missing module "
            f"{top!r}): pip install 'imgpipe[{hint}]'",
            file=sys.stderr,
        )
        return 1
    return main() or 0


def batch_stats() -> int:
    """``batch-stats``: the batch statistics engine, worker and local mode (extra ``worker``;
    ``demo`` for the local run)."""
    return run("batch-stats", "batch_stats.cli:main", "worker")


def photo_mosaic() -> int:
    """``photo-mosaic``: photo mosaics (extra ``mosaic``)."""
    return run("photo-mosaic", "photo_mosaic.cli:main", "mosaic")


def recognize_numbers() -> int:
    """``recognize-numbers``: read digit strips with the trained recogniser (extra ``train``)."""
    return run("recognize-numbers", "number_generator.recognizer:recognize_main", "train")
