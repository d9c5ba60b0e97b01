"""Digit-sequence images: one at a time (:func:`generate_numbers_sequence`) or many at once.

Layout of one image (28 rows, ``image_width`` columns, float32, 0.0 ink on 1.0 white)::

    | leading pad | glyph | gap | glyph | gap | ... | glyph | trailing pad |

Each glyph is a random MNIST image of its digit with its empty side columns removed; each gap is a
uniform integer in ``[min, max]`` (the distance between the ink of neighbouring digits). Gaps are
never stretched to fill the width: the leftover width becomes padding, placed by ``align``.
"""

from __future__ import annotations

import operator
import os
import threading
import warnings
from collections.abc import Iterable, Mapping, Set
from typing import Final, Literal, NamedTuple, overload

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

from number_generator._source import HEIGHT, DigitSource, SourceLike, load_source, to_float
from number_generator.augment import (
    Augment,
    AugmentLike,
    augment_glyphs,
    augment_strips,
    crop_glyphs,
    resolve,
    source_alpha,
)

__all__ = [
    "MAX_BATCH_PIXELS",
    "MAX_IMAGE_WIDTH",
    "Align",
    "ArgumentTypeError",
    "LabelledBatch",
    "LabelledImage",
    "Overflow",
    "RNGLike",
    "SpacingBiasWarning",
    "generate_numbers_batch",
    "generate_numbers_sequence",
    "generator",
]

Align = Literal["left", "center", "right", "random"]
Overflow = Literal["resample", "raise"]
RNGLike = np.random.Generator | np.random.BitGenerator | np.random.SeedSequence | int | None

_ALIGNS: Final = ("left", "center", "right", "random")


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a float digit, a string instead of a list of ints...).

    A TypeError, as Python convention has it, and also a ValueError, because the contract promises
    a ValueError for every bad argument: ``except ValueError`` catches all of them.
    """


class SpacingBiasWarning(UserWarning):
    """``overflow="resample"`` at a width where some draws do not fit: the redrawn sequences
    favour narrower digits and smaller gaps. The message gives the effect measured on the spot."""


#: The widest image accepted (pixels): 28 MB of uint8, 112 MB as float32.
MAX_IMAGE_WIDTH: Final = 1_000_000
#: The most pixels one batch call renders (rows x 28 x width): about 2.7 GB with its float32 copy.
MAX_BATCH_PIXELS: Final = 1 << 29
#: Glyphs augmented at a time (their working arrays stay within the CPU caches).
_AUGMENT_BLOCK: Final = 128
#: Strip pixels augmented at a time (likewise).
_STRIP_BLOCK_PIXELS: Final = 1 << 18
#: Draws simulated to measure the bias of resampling at a tight width.
BIAS_DRAWS: Final = 10_000
#: Redrawn fraction from which the bias is reported (below it, means move by well under 0.1%).
BIAS_THRESHOLD: Final = 0.001

_OVERFLOWS: Final = ("resample", "raise")
#: Redraws allowed (per sequence) before a too-tight width is reported instead of looping on.
MAX_ATTEMPTS: Final = 1000


class LabelledImage(NamedTuple):
    """An image with its digits and their ink boxes."""

    #: float32 (28, width), 0.0 ink on 1.0 white.
    image: npt.NDArray[np.float32]
    #: The digits, left to right.
    digits: tuple[int, ...]
    #: int32 (digits, 4): ``x0, y0, x1, y1`` of each digit's ink; x1 and y1 are exclusive, so the
    #: ink of digit ``j`` lies in ``image[y0:y1, x0:x1]``.
    boxes: npt.NDArray[np.int32]


class LabelledBatch(NamedTuple):
    """Images with their digits and ink boxes (see :class:`LabelledImage`)."""

    #: float32 (rows, 28, width).
    images: npt.NDArray[np.float32]
    #: uint8 (rows, digits).
    digits: npt.NDArray[np.uint8]
    #: int32 (rows, digits, 4): ``x0, y0, x1, y1``, x1 and y1 exclusive.
    boxes: npt.NDArray[np.int32]


@overload
def generate_numbers_sequence(
    digits: Iterable[int],
    spacing_range: tuple[int, int],
    image_width: int,
    *,
    rng: RNGLike = ...,
    source: SourceLike = ...,
    align: Align = ...,
    overflow: Overflow = ...,
    augment: AugmentLike = ...,
    with_boxes: Literal[False] = ...,
) -> npt.NDArray[np.float32]: ...


@overload
def generate_numbers_sequence(
    digits: Iterable[int],
    spacing_range: tuple[int, int],
    image_width: int,
    *,
    rng: RNGLike = ...,
    source: SourceLike = ...,
    align: Align = ...,
    overflow: Overflow = ...,
    augment: AugmentLike = ...,
    with_boxes: Literal[True],
) -> LabelledImage: ...


def generate_numbers_sequence(
    digits: Iterable[int],
    spacing_range: tuple[int, int],
    image_width: int,
    *,
    rng: RNGLike = None,
    source: SourceLike = None,
    align: Align = "center",
    overflow: Overflow = "resample",
    augment: AugmentLike = None,
    with_boxes: bool = False,
) -> npt.NDArray[np.float32] | LabelledImage:
    """Render ``digits`` side by side from random MNIST images of each digit.

    Parameters
    ----------
    digits
        The digits to draw, integers 0-9 (for example ``[0, 9, 0]``; leading zeros are kept).
    spacing_range
        ``(min, max)``: every gap between the ink of consecutive digits is drawn uniformly from
        the integers in ``[min, max]`` (``0 <= min <= max``).
    image_width
        Width of the returned image in pixels.
    rng
        A :class:`numpy.random.Generator` or a seed for one. Pass a Generator when calling in a
        loop: creating a fresh one from OS entropy on every call costs more than the rendering.
    source
        Where the digits come from: a :class:`DigitSource`, a directory of MNIST IDX files, or
        ``None`` for the default (see :func:`number_generator.load_source`).
    align
        Where the leftover width goes: ``"left"`` (digits start at column 0), ``"center"``
        (split, the odd column on the right), ``"right"``, or ``"random"`` (uniform offset).
    overflow
        What to do when a draw may be wider than ``image_width``. ``"resample"`` redraws the
        sequence until it fits (exact distributions whenever the widest glyphs at the maximum
        spacing fit, else conditioned on fitting); ``"raise"`` raises a ValueError unless every
        possible draw fits.

    augment
        ``"light"``, ``"medium"``, ``"heavy"`` or an :class:`~number_generator.augment.Augment`:
        elastic distortion, affine, stroke width per digit and blur, noise, paper and occlusion
        per strip (see :mod:`number_generator.augment`), drawn from ``rng``. ``None`` (the
        default): the MNIST pixels unchanged.
    with_boxes
        Also return the digits and the box of each digit's ink (a :class:`LabelledImage`).

    Returns
    -------
    numpy.ndarray
        float32, shape ``(28, image_width)``, 0.0 is black ink and 1.0 white background (or a
        :class:`LabelledImage` holding it, with ``with_boxes=True``).

    Raises
    ------
    ValueError
        Digits outside 0-9, an empty sequence, a bad spacing range or width, or a width too small
        for the sequence (even the narrowest glyphs at the minimum spacing do not fit).
    TypeError
        Digits, spacings or the width are not integers.
    """
    seq = _digit_list(digits)
    lo, hi = _spacing(spacing_range)
    width = _width(image_width)
    _check_options(align, overflow)
    src = load_source(source)
    gen = rng if type(rng) is np.random.Generator else generator(rng)
    if augment is not None:
        images, boxes = render_batch_float(
            [seq], (lo, hi), width, rng=gen, source=src, align=align, overflow=overflow,
            augment=augment,
        )  # fmt: skip
        first: npt.NDArray[np.float32] = images[0]
        if with_boxes:
            return LabelledImage(first, tuple(seq), boxes[0])
        return first
    n = len(seq)
    key = (tuple(seq), lo, hi)
    bounds = src.fit_cache.get(key)
    if bounds is None:
        bounds = (
            sum([src.min_widths[d] for d in seq]) + (n - 1) * lo,
            sum([src.max_widths[d] for d in seq]) + (n - 1) * hi,
        )
        if len(src.fit_cache) >= 4096:
            src.fit_cache.clear()
        src.fit_cache[key] = bounds
    narrow, wide = bounds
    exact = wide <= width
    if narrow > width or (not exact and overflow == "raise"):
        _check_fit(np.array([seq], dtype=np.intp), lo, hi, width, src, overflow)  # raises
    if not exact:
        warn_if_biased(seq, lo, hi, width, src, stacklevel=3)

    # Uniform integers as floor(u * count) from one vector of 53-bit uniforms: one Generator call
    # per attempt instead of two, and plain-Python arithmetic for a handful of digits.
    starts = src.starts_list
    counts = src.counts_list
    widths = src.widths_list
    span = hi - lo + 1
    for _ in range(MAX_ATTEMPTS):
        u = gen.random(2 * n).tolist()
        picks = [starts[d] + int(u[i] * counts[d]) for i, d in enumerate(seq)]
        steps = [widths[k] for k in picks]
        total = sum(steps)
        for i in range(n - 1):
            gap = lo + int(u[n + i] * span)
            steps[i] += gap
            total += gap
        if exact or total <= width:
            break
    else:
        raise _too_tight(seq, lo, hi, width, src)

    leftover = width - total
    x = _pad(align, leftover, u[-1])
    canvas = np.full((HEIGHT, width), 255, dtype=np.uint8)
    glyphs = src.glyphs
    if with_boxes:
        boxes = np.empty((n, 4), dtype=np.int32)
        for i in range(n):
            k = picks[i]
            w = widths[k]
            canvas[:, x : x + w] = glyphs[k, :, :w]
            boxes[i] = (x, src.tops[k], x + w, src.bottoms[k])
            x += steps[i]
        return LabelledImage(to_float(canvas), tuple(seq), boxes)
    for i in range(n):
        k = picks[i]
        w = widths[k]
        canvas[:, x : x + w] = glyphs[k, :, :w]
        x += steps[i]
    return to_float(canvas)


@overload
def generate_numbers_batch(
    digits: npt.ArrayLike,
    spacing_range: tuple[int, int],
    image_width: int,
    *,
    rng: RNGLike = ...,
    source: SourceLike = ...,
    align: Align = ...,
    overflow: Overflow = ...,
    augment: AugmentLike = ...,
    with_boxes: Literal[False] = ...,
) -> npt.NDArray[np.float32]: ...


@overload
def generate_numbers_batch(
    digits: npt.ArrayLike,
    spacing_range: tuple[int, int],
    image_width: int,
    *,
    rng: RNGLike = ...,
    source: SourceLike = ...,
    align: Align = ...,
    overflow: Overflow = ...,
    augment: AugmentLike = ...,
    with_boxes: Literal[True],
) -> LabelledBatch: ...


def generate_numbers_batch(
    digits: npt.ArrayLike,
    spacing_range: tuple[int, int],
    image_width: int,
    *,
    rng: RNGLike = None,
    source: SourceLike = None,
    align: Align = "center",
    overflow: Overflow = "resample",
    augment: AugmentLike = None,
    with_boxes: bool = False,
) -> npt.NDArray[np.float32] | LabelledBatch:
    """Render many digit sequences of the same length at once (vectorised).

    ``digits`` is a 2-D integer array-like, one sequence of digits 0-9 per row, for example
    ``np.array([[0, 9, 0], [1, 2, 3]])``. Every row is drawn exactly as
    :func:`generate_numbers_sequence` would draw it (same options), independently of the others.
    Returns float32 of shape ``(rows, 28, image_width)``; with ``with_boxes=True`` a
    :class:`LabelledBatch` (the images, the digits and every digit's ink box).
    """
    out, boxes = render_batch_float(
        digits, spacing_range, image_width, rng=rng, source=source, align=align,
        overflow=overflow, augment=augment,
    )  # fmt: skip
    if with_boxes:
        labels = _digit_matrix(digits).astype(np.uint8)
        return LabelledBatch(out, labels, boxes)
    return out


def render_batch_float(
    digits: npt.ArrayLike,
    spacing_range: tuple[int, int],
    image_width: int,
    *,
    rng: RNGLike = None,
    source: SourceLike = None,
    align: Align = "center",
    overflow: Overflow = "resample",
    augment: AugmentLike = None,
    warn_bias: bool = True,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]:
    """Images (float32, rows x 28 x width) and ink boxes, augmented or not."""
    aug = resolve(augment)
    if aug is not None:
        return _render_augmented(
            digits, spacing_range, image_width, rng=rng, source=source, align=align,
            overflow=overflow, aug=aug, warn_bias=warn_bias,
        )  # fmt: skip
    pixels, boxes = render_batch_boxes_u8(
        digits, spacing_range, image_width, rng=rng, source=source, align=align,
        overflow=overflow, warn_bias=warn_bias,
    )  # fmt: skip
    out = np.empty(pixels.shape, dtype=np.float32)
    np.divide(pixels, np.float32(255.0), out=out, dtype=np.float32)
    return out, boxes


def _render_augmented(
    digits: npt.ArrayLike,
    spacing_range: tuple[int, int],
    image_width: int,
    *,
    rng: RNGLike,
    source: SourceLike,
    align: Align,
    overflow: Overflow,
    aug: Augment,
    warn_bias: bool,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]:
    """Per-digit augmentation, layout on the augmented ink widths (rows that do not fit are
    redrawn, glyphs and augmentation both), then per-strip effects."""
    d2 = _digit_matrix(digits)
    lo, hi = _spacing(spacing_range)
    width = _width(image_width)
    _check_options(align, overflow)
    src = load_source(source)
    gen = generator(rng)
    rows, n = d2.shape
    if rows * HEIGHT * width > MAX_BATCH_PIXELS // 4:
        raise ValueError(
            f"{rows:,} augmented images of 28 x {width:,} pixels exceed the batch limit of "
            f"{MAX_BATCH_PIXELS // 4:,} pixels; render them in smaller batches"
        )
    if rows == 0:
        return np.ones((0, HEIGHT, width), np.float32), np.zeros((0, n, 4), np.int32)
    exact = _check_fit(d2, lo, hi, width, src, overflow)
    if not exact and warn_bias:
        wide = np.asarray(src.max_widths)[d2].sum(axis=1)
        warn_if_biased(d2[int(np.argmax(wide))].tolist(), lo, hi, width, src, stacklevel=5)
    blocks = np.empty((0, n, HEIGHT, HEIGHT), dtype=np.float32)
    w = np.zeros((rows, n), dtype=np.int64)
    tops = np.zeros((rows, n), dtype=np.int64)
    bottoms = np.zeros((rows, n), dtype=np.int64)
    gaps = np.zeros((rows, max(n - 1, 0)), dtype=np.int64)
    redo = np.arange(rows)
    for _ in range(MAX_ATTEMPTS):
        k = redo.size
        sub = d2[redo]
        g = src.starts[sub] + (gen.random((k, n)) * src.counts[sub]).astype(np.int64)
        flat_g = g.reshape(-1)
        cropped = np.empty((flat_g.size, HEIGHT, HEIGHT), dtype=np.float32)
        cw = np.empty(flat_g.size, dtype=np.int64)
        ct = np.empty(flat_g.size, dtype=np.int64)
        cb = np.empty(flat_g.size, dtype=np.int64)
        # Blocks of glyphs small enough for the CPU caches (the work is memory-bound).
        for a in range(0, flat_g.size, _AUGMENT_BLOCK):
            part = slice(a, a + _AUGMENT_BLOCK)
            alpha = augment_glyphs(source_alpha(src, flat_g[part]), aug, gen)
            cropped[part], cw[part], ct[part], cb[part] = crop_glyphs(alpha)
        if k == rows:  # the first attempt: no copy through an index
            blocks = cropped.reshape(rows, n, HEIGHT, HEIGHT)
        else:
            blocks[redo] = cropped.reshape(k, n, HEIGHT, HEIGHT)
        w[redo] = cw.reshape(k, n)
        tops[redo] = ct.reshape(k, n)
        bottoms[redo] = cb.reshape(k, n)
        gaps[redo] = gen.integers(lo, hi + 1, size=(k, max(n - 1, 0)))
        total = w[redo].sum(axis=1) + gaps[redo].sum(axis=1)
        redo = redo[total > width]
        if redo.size == 0:
            break
    else:
        raise _too_tight(d2[redo[0]].tolist(), lo, hi, width, src)
    leftover = width - (w.sum(axis=1) + gaps.sum(axis=1))
    if align == "left":
        pad = np.zeros(rows, dtype=np.int64)
    elif align == "center":
        pad = leftover // 2
    elif align == "right":
        pad = leftover
    else:
        pad = (gen.random(rows) * (leftover + 1)).astype(np.int64)
    steps = np.empty((rows, n), dtype=np.int64)
    steps[:, 0] = pad
    np.add(w[:, :-1], gaps, out=steps[:, 1:])
    x = np.cumsum(steps, axis=1)
    boxes = np.stack([x, tops, x + w, bottoms], axis=-1).astype(np.int32)
    out = np.empty((rows, HEIGHT, width), dtype=np.float32)
    step = max(1, _STRIP_BLOCK_PIXELS // (HEIGHT * width))
    for a in range(0, rows, step):
        b = min(rows, a + step)
        canvas = np.zeros((b - a, HEIGHT, width + HEIGHT), dtype=np.float32)
        s0, s1, s2 = canvas.strides
        windows = as_strided(
            canvas, shape=(b - a, width + 1, HEIGHT, HEIGHT), strides=(s0, s2, s1, s2),
            writeable=True,
        )  # fmt: skip
        r = np.arange(b - a)
        for j in range(n):
            windows[r, x[a:b, j]] = blocks[a:b, j]
        out[a:b] = augment_strips(canvas[:, :, :width], aug, gen)
    return out, boxes


def render_batch_u8(
    digits: npt.ArrayLike,
    spacing_range: tuple[int, int],
    image_width: int,
    *,
    rng: RNGLike = None,
    source: SourceLike = None,
    align: Align = "center",
    overflow: Overflow = "resample",
    warn_bias: bool = True,
) -> npt.NDArray[np.uint8]:
    """:func:`generate_numbers_batch` as 8-bit pixels (0 ink, 255 white), for writing PNGs.

    Returns a (rows, 28, image_width) view into a slightly wider canvas (not C-contiguous).
    ``warn_bias=False`` leaves the tight-width warning to the caller.
    """
    pixels, _ = render_batch_boxes_u8(
        digits, spacing_range, image_width, rng=rng, source=source, align=align,
        overflow=overflow, warn_bias=warn_bias,
    )  # fmt: skip
    return pixels


def render_batch_boxes_u8(
    digits: npt.ArrayLike,
    spacing_range: tuple[int, int],
    image_width: int,
    *,
    rng: RNGLike = None,
    source: SourceLike = None,
    align: Align = "center",
    overflow: Overflow = "resample",
    warn_bias: bool = True,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32]]:
    """:func:`render_batch_u8` and the (rows, digits, 4) ink boxes of every digit."""
    d2 = _digit_matrix(digits)
    lo, hi = _spacing(spacing_range)
    width = _width(image_width)
    _check_options(align, overflow)
    src = load_source(source)
    gen = generator(rng)
    rows, n = d2.shape
    if rows * HEIGHT * width > MAX_BATCH_PIXELS:
        raise ValueError(
            f"{rows:,} images of 28 x {width:,} pixels exceed the batch limit of "
            f"{MAX_BATCH_PIXELS:,} pixels; render them in smaller batches"
        )
    if rows == 0:
        return np.full((0, HEIGHT, width), 255, np.uint8), np.zeros((0, n, 4), np.int32)
    exact = _check_fit(d2, lo, hi, width, src, overflow)
    if not exact and warn_bias:
        wide = np.asarray(src.max_widths)[d2].sum(axis=1)
        warn_if_biased(d2[int(np.argmax(wide))].tolist(), lo, hi, width, src, stacklevel=4)

    span = hi - lo + 1
    counts = src.counts[d2]
    u = gen.random((rows, 2 * n))
    g = src.starts[d2] + (u[:, :n] * counts).astype(np.int64)
    w = src.widths[g]
    gaps = lo + (u[:, n : 2 * n - 1] * span).astype(np.int64)
    total = w.sum(axis=1) + gaps.sum(axis=1)
    if not exact:
        redo = np.flatnonzero(total > width)
        for _ in range(MAX_ATTEMPTS):
            if redo.size == 0:
                break
            ur = gen.random((redo.size, 2 * n))
            u[redo] = ur
            g[redo] = src.starts[d2[redo]] + (ur[:, :n] * counts[redo]).astype(np.int64)
            w[redo] = src.widths[g[redo]]
            gaps[redo] = lo + (ur[:, n : 2 * n - 1] * span).astype(np.int64)
            total[redo] = w[redo].sum(axis=1) + gaps[redo].sum(axis=1)
            redo = redo[total[redo] > width]
        else:
            if redo.size:
                raise _too_tight(d2[redo[0]].tolist(), lo, hi, width, src)

    leftover = width - total
    if align == "left":
        pad = np.zeros(rows, dtype=np.int64)
    elif align == "center":
        pad = leftover // 2
    elif align == "right":
        pad = leftover
    else:
        pad = (u[:, -1] * (leftover + 1)).astype(np.int64)
    steps = np.empty((rows, n), dtype=np.int64)
    steps[:, 0] = pad
    np.add(w[:, :-1], gaps, out=steps[:, 1:])
    x = np.cumsum(steps, axis=1)  # x[r, j]: first column of glyph j in row r

    # Paste whole white-padded glyph blocks through a sliding-window view of a canvas with
    # `block` spare columns: window (r, c) is canvas[r, :, c : c + block]. Glyphs go left to
    # right, so each block's white padding is overwritten by the next glyph where they overlap.
    glyphs = src.glyphs
    block = glyphs.shape[2]
    canvas = np.empty((rows, HEIGHT, width + block), dtype=np.uint8)
    canvas.fill(255)
    s0, s1, s2 = canvas.strides
    windows = as_strided(
        canvas, shape=(rows, width + 1, HEIGHT, block), strides=(s0, s2, s1, s2), writeable=True
    )
    r = np.arange(rows)
    for j in range(n):
        windows[r, x[:, j]] = glyphs[g[:, j]]
    return canvas[:, :, :width], _boxes(x, w, g, src)


def _boxes(
    x: npt.NDArray[np.int64], w: npt.NDArray[np.int64], g: npt.NDArray[np.int64], src: DigitSource
) -> npt.NDArray[np.int32]:
    """(rows, digits, 4) boxes ``x0, y0, x1, y1`` of each pasted glyph's ink (x1, y1 exclusive)."""
    return np.stack([x, src.tops[g], x + w, src.bottoms[g]], axis=-1).astype(np.int32)


# The generator used when the caller passes no `rng`: created from OS entropy on first use in each
# process (about 30 microseconds, more than rendering a sequence, so not on every call) and
# forgotten in a forked child, so worker processes never repeat each other's (or the parent's)
# draws. A fresh interpreter (spawn, forkserver) starts without one anyway.
_process_generator: list[np.random.Generator] = []
_process_generator_lock = threading.Lock()


def _forget_process_generator() -> None:
    _process_generator.clear()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_forget_process_generator)


def generator(rng: RNGLike = None) -> np.random.Generator:
    """The :class:`numpy.random.Generator` that ``rng`` stands for.

    A Generator is used as it is; a non-negative int seed, a SeedSequence or a BitGenerator makes a
    new one; ``None`` gives this process's own generator, seeded once from OS entropy (fresh in
    every process, forked children included). Anything else is an :class:`ArgumentTypeError`.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        if _process_generator:
            return _process_generator[0]
        with _process_generator_lock:
            if not _process_generator:
                _process_generator.append(np.random.default_rng())
            return _process_generator[0]
    if isinstance(rng, (np.random.BitGenerator, np.random.SeedSequence)):
        return np.random.default_rng(rng)
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, (int, np.integer)):
        raise ArgumentTypeError(
            f"rng must be a numpy Generator, a non-negative integer seed, a SeedSequence, a "
            f"BitGenerator or None; got {rng!r} ({type(rng).__name__})"
        )
    if rng < 0:
        raise ValueError(f"rng seed must be a non-negative integer, got {rng}")
    return np.random.default_rng(int(rng))


def _digit_list(digits: Iterable[int]) -> list[int]:
    if type(digits) is list or type(digits) is tuple:  # fast path: plain ints 0-9
        fast = list(digits)
        if fast and all([type(d) is int for d in fast]) and min(fast) >= 0 and max(fast) <= 9:
            return fast
    if isinstance(digits, (Set, Mapping)):
        raise ArgumentTypeError(
            f"digits must be an ordered sequence of integers 0-9 (a list, tuple or 1-D array), "
            f"not a {type(digits).__name__}: it has no order, so the image would not be defined"
        )
    if not isinstance(digits, Iterable):
        hint = ""
        if isinstance(digits, int) and not isinstance(digits, bool):
            hint = "; for a number give its digits, e.g. [int(c) for c in '0451'] (keeps zeros)"
        raise ArgumentTypeError(
            f"digits must be a sequence of integers 0-9 such as [0, 9, 0], got {digits!r} "
            f"({type(digits).__name__}){hint}"
        )
    if isinstance(digits, (str, bytes)):
        raise ArgumentTypeError(
            f"digits must be integers 0-9, not a string ({digits!r}); "
            "convert it first, e.g. [int(c) for c in text]"
        )
    if isinstance(digits, np.ndarray) and (
        digits.ndim != 1 or not np.issubdtype(digits.dtype, np.integer)
    ):
        raise ArgumentTypeError(
            f"digits must be a 1-D sequence of integers 0-9, got an array of {digits.dtype} "
            f"with shape {digits.shape}"
        )
    seq: list[int] = []
    for position, d in enumerate(digits):
        if type(d) is not int:
            if isinstance(d, (bool, np.bool_)) or not hasattr(d, "__index__"):
                raise ArgumentTypeError(
                    f"digits must be integers 0-9; position {position} is {d!r} "
                    f"({type(d).__name__})"
                )
            d = operator.index(d)
        if not 0 <= d <= 9:
            raise ValueError(f"digits must be integers 0-9; position {position} is {d}")
        seq.append(d)
    if not seq:
        raise ValueError("digits is empty: give at least one digit 0-9")
    return seq


def _digit_matrix(digits: npt.ArrayLike) -> npt.NDArray[np.intp]:
    arr = np.asarray(digits)
    if arr.ndim != 2:
        raise ValueError(
            f"digits must be 2-D (one sequence per row, all the same length), got shape "
            f"{arr.shape}; for a single sequence use generate_numbers_sequence"
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ArgumentTypeError(f"digits must be integers 0-9, got an array of {arr.dtype}")
    if arr.shape[1] == 0:
        raise ValueError("digits has empty rows: every sequence needs at least one digit 0-9")
    if arr.size and (arr.min() < 0 or arr.max() > 9):
        bad = np.argwhere((arr < 0) | (arr > 9))[0]
        raise ValueError(
            f"digits must be integers 0-9; row {bad[0]}, position {bad[1]} is {arr[bad[0], bad[1]]}"
        )
    return arr.astype(np.intp, copy=False)


def _int(value: object, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not hasattr(value, "__index__"):
        raise ArgumentTypeError(
            f"{what} must be an integer, got {value!r} ({type(value).__name__})"
        )
    return operator.index(value)


def _spacing(spacing_range: tuple[int, int]) -> tuple[int, int]:
    if type(spacing_range) is tuple and len(spacing_range) == 2:  # fast path
        lo, hi = spacing_range
        if type(lo) is int and type(hi) is int and 0 <= lo <= hi:
            return lo, hi
    try:
        lo_raw, hi_raw = spacing_range
    except (TypeError, ValueError):
        raise ArgumentTypeError(
            f"spacing_range must be a pair (min, max) of integers, got {spacing_range!r}"
        ) from None
    lo = _int(lo_raw, "spacing_range min")
    hi = _int(hi_raw, "spacing_range max")
    if lo < 0:
        raise ValueError(f"spacing_range min must be >= 0 pixels, got {lo}")
    if lo > hi:
        raise ValueError(f"spacing_range min ({lo}) must not exceed max ({hi})")
    return lo, hi


def _width(image_width: int) -> int:
    if type(image_width) is int and 0 < image_width <= MAX_IMAGE_WIDTH:  # fast path
        return image_width
    width = _int(image_width, "image_width")
    if width <= 0:
        raise ValueError(f"image_width must be a positive number of pixels, got {width}")
    if width > MAX_IMAGE_WIDTH:
        raise ValueError(
            f"image_width {width:,} exceeds the limit of {MAX_IMAGE_WIDTH:,} pixels "
            "(MAX_IMAGE_WIDTH); digits are never stretched, so wider images are only padding"
        )
    return width


def _check_options(align: str, overflow: str) -> None:
    if align not in _ALIGNS:
        raise ValueError(f"align must be one of {', '.join(_ALIGNS)}; got {align!r}")
    if overflow not in _OVERFLOWS:
        raise ValueError(f"overflow must be one of {', '.join(_OVERFLOWS)}; got {overflow!r}")


def _check_fit(
    rows: npt.NDArray[np.intp],
    lo: int,
    hi: int,
    width: int,
    src: DigitSource,
    overflow: str,
) -> bool:
    """Raise if a sequence (a row of ``rows``) can never fit; True when every draw fits."""
    gaps = rows.shape[1] - 1
    narrow = np.asarray(src.min_widths)[rows].sum(axis=1) + gaps * lo
    wide = np.asarray(src.max_widths)[rows].sum(axis=1) + gaps * hi
    worst = int(np.argmax(narrow))
    if narrow[worst] > width:
        raise ValueError(
            f"image_width {width} is too small for the {rows.shape[1]} digits "
            f"{_text(rows[worst])}: even the narrowest glyphs at the minimum spacing {lo} need "
            f"{narrow[worst]} pixels (up to {wide[worst]} with the widest glyphs at spacing {hi})"
        )
    worst = int(np.argmax(wide))
    if wide[worst] <= width:
        return True
    if overflow == "raise":
        raise ValueError(
            f"image_width {width} may be too small for the {rows.shape[1]} digits "
            f"{_text(rows[worst])}: the widest glyphs at the maximum spacing {hi} need "
            f"{wide[worst]} pixels; use image_width >= {wide[worst]}, a smaller spacing, "
            "or overflow='resample'"
        )
    return False


#: (source, digits, min gap, max gap, width) -> the warning's text ("" when the bias is negligible).
_bias_messages: dict[tuple[str, tuple[int, ...], int, int, int], str] = {}


def measure_bias(
    seq: list[int], lo: int, hi: int, width: int, src: DigitSource, *, draws: int = BIAS_DRAWS
) -> tuple[float, float, float, float, float]:
    """Simulate ``draws`` unconditioned draws of ``seq``: (fraction that does not fit, mean gap
    of all draws, of the fitting ones, mean glyph width of all draws, of the fitting ones)."""
    gen = np.random.default_rng(0)
    d = np.asarray(seq, dtype=np.intp)
    picks = src.starts[d] + (gen.random((draws, d.size)) * src.counts[d]).astype(np.int64)
    widths = src.widths[picks]
    gaps = gen.integers(lo, hi + 1, size=(draws, max(d.size - 1, 1)))
    if d.size == 1:
        gaps[:] = 0
    fits = widths.sum(axis=1) + gaps.sum(axis=1) <= width
    if not fits.any():
        return 1.0, float(gaps.mean()), float("nan"), float(widths.mean()), float("nan")
    return (
        1.0 - float(fits.mean()),
        float(gaps.mean()),
        float(gaps[fits].mean()),
        float(widths.mean()),
        float(widths[fits].mean()),
    )


def warn_if_biased(
    seq: list[int], lo: int, hi: int, width: int, src: DigitSource, *, stacklevel: int = 2
) -> None:
    """Warn when resampling changes the distributions, with the effect measured once per
    sequence, spacing and width (Python's warning filters decide how often it is shown)."""
    key = (src.name, tuple(seq), lo, hi, width)
    message = _bias_messages.get(key)
    if message is None:
        if len(_bias_messages) >= 4096:
            _bias_messages.clear()
        message = _bias_message(seq, lo, hi, width, src)
        _bias_messages[key] = message
    if message:
        warnings.warn(message, SpacingBiasWarning, stacklevel=stacklevel)


def _bias_message(seq: list[int], lo: int, hi: int, width: int, src: DigitSource) -> str:
    rejected, gap_all, gap_fit, width_all, width_fit = measure_bias(seq, lo, hi, width, src)
    if rejected < BIAS_THRESHOLD:
        return ""
    wide = sum(src.max_widths[d] for d in seq) + (len(seq) - 1) * hi
    return (
        f"image_width {width} is tight for the {len(seq)} digits {_text(seq)} at spacing "
        f"{lo}-{hi}: {rejected:.1%} of draws do not fit and are redrawn, so the images favour "
        f"smaller gaps and narrower digits (mean gap {gap_fit:.2f} px instead of {gap_all:.2f}, "
        f"mean digit width {width_fit:.2f} px instead of {width_all:.2f}; measured over "
        f"{BIAS_DRAWS:,} draws). Use image_width >= {wide} for the exact distributions, or "
        "overflow='raise' to refuse such widths"
    )


def _text(seq: Iterable[int]) -> str:
    return "".join(str(int(d)) for d in seq)


def _too_tight(seq: list[int], lo: int, hi: int, width: int, src: DigitSource) -> ValueError:
    narrow = sum(src.min_widths[d] for d in seq) + (len(seq) - 1) * lo
    wide = sum(src.max_widths[d] for d in seq) + (len(seq) - 1) * hi
    return ValueError(
        f"image_width {width} is too tight for the {len(seq)} digits {_text(seq)}: no draw "
        f"fitted in {MAX_ATTEMPTS} attempts (they need {narrow} to {wide} pixels); widen the "
        "image or reduce the spacing"
    )


def _pad(align: str, leftover: int, u: float) -> int:
    if align == "center":
        return leftover // 2
    if align == "left":
        return 0
    if align == "right":
        return leftover
    return int(u * (leftover + 1))
