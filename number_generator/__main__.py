"""``python -m number_generator download``: fill the MNIST cache (see ``--help``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from number_generator.cli import download_main

_USAGE = (
    "usage: python -m number_generator download [--mirror URL] [--dir DIR] [--force]\n"
    "The image generators are the commands generate-numbers-sequence and generate-phone-numbers."
)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "download":
        return download_main(args[1:])
    if args and args[0] in ("-h", "--help"):
        print(_USAGE)
        return 0
    command = repr(args[0]) if args else "none"
    print(
        f"python -m number_generator: error: unknown command {command}; use 'download'",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
