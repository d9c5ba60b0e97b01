"""Preview sheets: images enlarged, with each digit's box and label drawn on them (Pillow)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

__all__ = ["BOX_COLOUR", "ERROR_COLOUR", "preview_sheet", "save_preview"]

BOX_COLOUR = (230, 40, 40)
ERROR_COLOUR = (200, 0, 200)
_TEXT = (20, 20, 20)
_LINE = 14  # pixels per caption line


def preview_sheet(
    images: npt.ArrayLike,
    digits: Sequence[Sequence[int] | str],
    boxes: Sequence[npt.ArrayLike] | None = None,
    *,
    predictions: Sequence[str] | None = None,
    scale: int = 3,
    columns: int = 1,
) -> Image.Image:
    """A grid of ``images`` (float in [0, 1] or uint8, each 2-D), enlarged ``scale`` times.

    Each digit's box (``x0, y0, x1, y1`` in image pixels, x1 and y1 exclusive) is outlined in
    red with its label above it; the sequence is written under the image. With ``predictions``,
    a second caption line shows what a model read, in magenta when it differs from the digits.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive integer, got {columns!r}")
    pictures = [_as_uint8(image) for image in images]  # type: ignore[union-attr]
    if not pictures:
        raise ValueError("no images to preview")
    if len(digits) != len(pictures) or (boxes is not None and len(boxes) != len(pictures)):
        raise ValueError("images, digits and boxes must have the same length")
    if predictions is not None and len(predictions) != len(pictures):
        raise ValueError("predictions must have one entry per image")
    height = max(p.shape[0] for p in pictures) * scale
    width = max(p.shape[1] for p in pictures) * scale
    captions = 2 if predictions is not None else 1
    cell_w, cell_h = width + 8, _LINE + height + captions * _LINE + 8
    rows = -(-len(pictures) // columns)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, picture in enumerate(pictures):
        left = (i % columns) * cell_w + 4
        top = (i // columns) * cell_h + 4 + _LINE
        enlarged = Image.fromarray(picture, mode="L").resize(
            (picture.shape[1] * scale, picture.shape[0] * scale), Image.Resampling.NEAREST
        )
        sheet.paste(enlarged.convert("RGB"), (left, top))
        label = "".join(str(d) for d in digits[i])
        if boxes is not None:
            for j, box in enumerate(np.asarray(boxes[i]).reshape(-1, 4).tolist()):
                x0, y0, x1, y1 = (int(v) * scale for v in box)
                draw.rectangle(
                    (left + x0, top + y0, left + x1 - 1, top + y1 - 1), outline=BOX_COLOUR
                )
                if j < len(label):
                    draw.text((left + x0, top - _LINE + 1), label[j], fill=BOX_COLOUR)
        below = top + height + 2
        draw.text((left, below), label, fill=_TEXT)
        if predictions is not None:
            guess = predictions[i]
            draw.text(
                (left, below + _LINE),
                f"read: {guess}",
                fill=_TEXT if guess == label else ERROR_COLOUR,
            )
    return sheet


def save_preview(path: str | os.PathLike[str], *args: object, **kwargs: object) -> Path:
    """:func:`preview_sheet` saved as a PNG at ``path`` (its folder is created)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    preview_sheet(*args, **kwargs).save(target, format="PNG")  # type: ignore[arg-type]
    return target


def _as_uint8(image: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"each image must be 2-D (height, width), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    out: npt.NDArray[np.uint8] = np.rint(np.clip(arr, 0.0, 1.0) * 255).astype(np.uint8)
    return out
