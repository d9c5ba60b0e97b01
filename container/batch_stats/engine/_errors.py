"""The engine's rejection of an uploaded file."""

from __future__ import annotations

__all__ = ["ImageRejected"]


class ImageRejected(ValueError):  # noqa: N818 - the name is part of the engine contract
    """An uploaded file that the engine does not process.

    ``reason`` is a short stable code (``empty``, ``too_large``, ``not_png``, ``truncated``,
    ``corrupt``, ``decompression_bomb``, ``unsupported_mode``, ``transparent``, ``animated``,
    ``too_small``, ``unreadable``); the message says what was wrong and what is allowed.
    """

    def __init__(self, name: str, reason: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.reason = reason
        self.detail = detail
