"""``number-generator`` (also ``python -m number_generator``): ``download`` fills the MNIST cache,
``preview`` writes a sheet of samples with their boxes (see ``--help`` of each)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from number_generator.cli import download_main, preview_main

_USAGE = (
    "usage: number-generator download [--mirror URL] [--dir DIR] [--force]\n"
    "       number-generator preview OUTPUT.png [--dataset DIR] [--count N] ...\n"
    "The image generators are the commands generate-numbers-sequence and generate-phone-numbers."
)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "download":
        return download_main(args[1:])
    if args and args[0] == "preview":
        return preview_main(args[1:])
    if args and args[0] in ("-h", "--help"):
        print(_USAGE)
        return 0
    command = repr(args[0]) if args else "none"
    print(
        f"number-generator: error: unknown command {command}; use 'download' or 'preview'",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
