"""Opening pictures as a viewer shows them: EXIF orientation applied, 8-bit RGB, size-checked."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["display_name", "open_picture", "to_rgb"]

# Greyscale modes with more than 8 bits per sample: Pillow's convert("RGB") clips them at 255
# (a mid-grey 32768 became white), so they are scaled to 8 bits here instead.
_WIDE_GREY = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB of any Pillow image; 16-bit greyscale is scaled (0..65535 -> 0..255), not clipped.

    Raises:
        ValueError: 32-bit integer greyscale with values outside 0..65535, or floating-point
            images (their range is not defined by the file).
    """
    if im.mode == "RGB":
        return im
    if im.mode in _WIDE_GREY:
        arr = np.asarray(im).astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(
                f"32-bit greyscale values must be within 0..65535 (16-bit), got "
                f"{arr.min()}..{arr.max()}"
            )
        grey = ((arr * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if im.mode == "F":
        raise ValueError(
            "floating-point images are not supported (their value range is undefined): "
            "save the picture as 8- or 16-bit JPEG or PNG"
        )
    return im.convert("RGB")


def open_picture(path: str | os.PathLike[str], *, what: str = "image") -> Image.Image:
    """Read a picture fully: EXIF orientation applied, 8-bit RGB, Pillow's pixel limit enforced.

    Raises:
        ValueError: a missing, unreadable, damaged or oversized file (a decompression bomb: more
            than ``Image.MAX_IMAGE_PIXELS`` x 2 pixels), naming the file and the reason.
    """
    name = display_name(os.fspath(path))
    try:
        with Image.open(path) as im:
            im.load()
            upright = ImageOps.exif_transpose(im)
            return to_rgb(upright)
    except Image.DecompressionBombError as exc:
        raise ValueError(
            f"the {what} {name!r} is too large to decode safely ({exc}); the limit is "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ValueError(f"cannot read the {what} {name!r}: not an image Pillow can read") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"cannot read the {what} {name!r}: {reason}") from exc


def display_name(name: str) -> str:
    """A file name safe to print: bytes that are not UTF-8 shown as ``\\xNN`` escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
