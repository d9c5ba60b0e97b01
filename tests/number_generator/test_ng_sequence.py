"""generate_numbers_sequence and generate_numbers_batch: the contract, read back from the pixels."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import stats

from number_generator import (
    DigitSource,
    generate_numbers_batch,
    generate_numbers_sequence,
    save_png,
)

DIGITS = [0, 9, 0, 1, 2, 3, 4, 5, 6, 7]


def test_dtype_shape_and_range(source: DigitSource) -> None:
    image = generate_numbers_sequence(DIGITS, (2, 8), 300, rng=0)
    assert image.dtype == np.float32
    assert image.shape == (28, 300)
    assert image.flags.c_contiguous
    assert image.min() == 0.0  # MNIST's darkest ink, inverted
    assert image.max() == 1.0
    # Every value is an exact 8-bit level k / 255.
    levels = image * 255
    np.testing.assert_array_equal(levels, np.rint(levels))


def test_black_ink_on_white(source: DigitSource) -> None:
    image = generate_numbers_sequence([8], (0, 0), 60, rng=1, align="left")
    width = int((image < 1).any(axis=0).sum())
    assert (image[:, 30:] == 1.0).all(), "the background is white"
    assert (image[0] == 1.0).all(), "MNIST's empty top row stays white"
    assert (image[-1] == 1.0).all(), "MNIST's empty bottom row stays white"
    assert (image < 0.5).sum() > 20, "the strokes are dark"
    assert width >= 8


def test_the_pixels_are_real_mnist_glyphs_with_the_drawn_gaps(
    source: DigitSource, decoder: Any
) -> None:
    rng = np.random.default_rng(2)
    for _ in range(30):
        image = generate_numbers_sequence(DIGITS, (1, 9), 300, rng=rng, align="random")
        decoded = decoder.decode(image, DIGITS, source)
        assert [
            int(np.searchsorted(source.starts, g, side="right") - 1) for g in decoded.glyphs
        ] == DIGITS
        assert all(1 <= gap <= 9 for gap in decoded.gaps)


def test_gaps_are_uniform_over_the_range(source: DigitSource, decoder: Any) -> None:
    lo, hi = 1, 6
    digits = [4, 0, 7, 3, 2]
    gaps: Counter[int] = Counter()
    batch = generate_numbers_batch(np.tile(digits, (400, 1)), (lo, hi), 140, rng=3, align="left")
    for image in batch:
        gaps.update(decoder.decode(image, digits, source).gaps)
    observed = [gaps[g] for g in range(lo, hi + 1)]
    assert sum(observed) == 400 * (len(digits) - 1)
    assert set(gaps) <= set(range(lo, hi + 1))
    assert stats.chisquare(observed).pvalue > 1e-3, observed


def test_single_calls_draw_uniform_gaps_too(source: DigitSource, decoder: Any) -> None:
    rng = np.random.default_rng(4)
    gaps: Counter[int] = Counter()
    for _ in range(300):
        image = generate_numbers_sequence([1, 1, 1, 1], (2, 5), 120, rng=rng, align="left")
        gaps.update(decoder.decode(image, [1, 1, 1, 1], source).gaps)
    observed = [gaps[g] for g in range(2, 6)]
    assert sum(observed) == 900
    assert stats.chisquare(observed).pvalue > 1e-3, observed


@pytest.mark.slow
def test_every_mnist_image_of_each_digit_can_be_drawn(source: DigitSource) -> None:
    # Single-digit renders at align="left" are the glyph itself; after enough draws every
    # distinct glyph of the digit has appeared (coupon collector: ~n ln n draws).
    rng = np.random.default_rng(5)
    for digit in range(10):
        count = int(source.counts[digit])
        lo = int(source.starts[digit])
        expected = {source.glyphs[k].tobytes() for k in range(lo, lo + count)}
        seen: set[bytes] = set()
        for _ in range(6):
            batch = generate_numbers_batch(
                np.full((3000, 1), digit), (0, 0), 20, rng=rng, align="left"
            )
            pixels = np.rint(batch * 255).astype(np.uint8)
            seen.update(p.tobytes() for p in pixels)
            if seen >= expected:
                break
        assert seen == expected, f"digit {digit}: {len(expected - seen)} glyphs never drawn"


def test_glyph_choice_is_uniform(source: DigitSource) -> None:
    batch = generate_numbers_batch(np.full((20_000, 1), 6), (0, 0), 20, rng=6, align="left")
    # Identify the glyph by its pixels; compare the draw counts with a uniform distribution.
    keys = {
        source.glyphs[k].tobytes(): k for k in range(int(source.starts[6]), int(source.starts[7]))
    }
    drawn = Counter(keys[p.tobytes()] for p in np.rint(batch * 255).astype(np.uint8))
    observed = [drawn[k] for k in sorted(set(keys.values()))]
    assert stats.chisquare(observed).pvalue > 1e-4


def test_leading_zeros_are_kept(source: DigitSource, decoder: Any) -> None:
    image = generate_numbers_sequence([0, 0, 7], (3, 3), 100, rng=7, align="left")
    decoded = decoder.decode(image, [0, 0, 7], source)
    assert decoded.starts[0] == 0
    assert all(g < source.counts[0] for g in decoded.glyphs[:2])


@pytest.mark.parametrize("align", ["left", "center", "right", "random"])
def test_leftover_width_is_padding_never_stretched_gaps(source: DigitSource, align: str) -> None:
    image = generate_numbers_sequence([5, 5], (4, 4), 200, rng=8, align=align)
    ink = np.flatnonzero((image < 1).any(axis=0))
    left, right = int(ink[0]), 199 - int(ink[-1])
    assert ink[-1] - ink[0] + 1 <= 2 * 20 + 4
    if align == "left":
        assert left == 0
    elif align == "right":
        assert right == 0
    elif align == "center":
        assert left in (right, right - 1)


def test_random_alignment_covers_every_offset(source: DigitSource) -> None:
    batch = generate_numbers_batch(np.full((3000, 1), 1), (0, 0), 40, rng=9, align="random")
    firsts = np.argmax((batch < 1).any(axis=1), axis=1)
    widths = (batch < 1).any(axis=1).sum(axis=1)
    # pad is uniform on 0..leftover, so the last offset is reachable for the widest glyphs.
    assert firsts.min() == 0
    assert (firsts + widths).max() == 40


def test_seed_reproduces_and_generator_advances() -> None:
    a = generate_numbers_sequence(DIGITS, (2, 8), 300, rng=11)
    b = generate_numbers_sequence(DIGITS, (2, 8), 300, rng=11)
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(11)
    c = generate_numbers_sequence(DIGITS, (2, 8), 300, rng=rng)
    d = generate_numbers_sequence(DIGITS, (2, 8), 300, rng=rng)
    assert not np.array_equal(c, d)


def test_batch_rows_are_independent_contiguous_float32() -> None:
    digits = np.array([DIGITS, DIGITS[::-1], [3] * 10])
    batch = generate_numbers_batch(digits, (2, 8), 300, rng=12)
    assert batch.shape == (3, 28, 300)
    assert batch.dtype == np.float32
    assert batch.flags.c_contiguous
    assert batch.min() == 0.0
    assert batch.max() == 1.0
    assert not np.array_equal(batch[0], batch[1])
    assert generate_numbers_batch(np.zeros((0, 4), int), (1, 2), 90).shape == (0, 28, 90)


def test_custom_source_and_iterables() -> None:
    images = np.zeros((10, 28, 28), dtype=np.uint8)
    images[:, 4:24, 10:13] = 255  # every digit: a solid bar three columns wide
    bars = DigitSource.from_arrays(images, np.arange(10), name="bars")
    image = generate_numbers_sequence(iter(range(10)), (2, 2), 50, rng=0, source=bars, align="left")
    ink = (image < 1).any(axis=0)
    assert "".join("#" if c else "." for c in ink[:48]) == "###.." * 9 + "###"
    assert image[4:24, 0].tolist() == [0.0] * 20
    assert generate_numbers_sequence(np.array([3, 4]), (0, 0), 6, source=bars).shape == (28, 6)


def test_png_round_trip_is_lossless(tmp_path: Path) -> None:
    image = generate_numbers_sequence(DIGITS, (2, 8), 300, rng=13)
    path = save_png(image, tmp_path / "x.png")
    with Image.open(path) as png:
        assert png.mode == "L"
        back = np.asarray(png)
    np.testing.assert_array_equal(back.astype(np.float32) / np.float32(255), image)


# --- overflow: never stretch, never crop -------------------------------------------------


def test_width_too_small_even_at_minimum_spacing(source: DigitSource) -> None:
    narrow = sum(source.min_widths[d] for d in DIGITS) + 9 * 2
    with pytest.raises(ValueError, match=rf"too small .* need {narrow} pixels"):
        generate_numbers_sequence(DIGITS, (2, 8), narrow - 1)
    with pytest.raises(ValueError, match="too small"):
        generate_numbers_batch([DIGITS], (2, 8), narrow - 1)


def test_overflow_raise_requires_every_draw_to_fit(source: DigitSource) -> None:
    wide = sum(source.max_widths[d] for d in DIGITS) + 9 * 8
    with pytest.raises(ValueError, match=rf"need {wide} pixels; use image_width >= {wide}"):
        generate_numbers_sequence(DIGITS, (2, 8), wide - 1, overflow="raise")
    assert generate_numbers_sequence(DIGITS, (2, 8), wide, overflow="raise").shape == (28, wide)


def test_resample_fits_tight_widths(source: DigitSource) -> None:
    width = 200  # 10-digit draws at spacing 2-8 need 101 to 272 pixels, about 205 on average
    batch = generate_numbers_batch(np.tile(DIGITS, (200, 1)), (2, 8), width, rng=14, align="left")
    assert batch.shape == (200, 28, width)
    single = generate_numbers_sequence(DIGITS, (2, 8), width, rng=14, align="left")
    assert single.shape == (28, width)


def test_hopelessly_tight_width_reports_instead_of_looping(source: DigitSource) -> None:
    narrow = 12 * source.min_widths[0]  # only if all twelve zeros are the narrowest one
    with pytest.raises(ValueError, match=r"too tight .* no draw fitted in 1000 attempts"):
        generate_numbers_sequence([0] * 12, (0, 0), narrow, rng=15)


# --- bad arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("digits", "spacing", "width", "error", "message"),
    [
        ([1, 10], (1, 2), 100, ValueError, "digits must be integers 0-9; position 1 is 10"),
        ([-1], (1, 2), 100, ValueError, "position 0 is -1"),
        ([1, 2.0], (1, 2), 100, TypeError, "position 1 is 2.0"),
        ([True], (1, 2), 100, TypeError, "position 0 is True"),
        ("123", (1, 2), 100, TypeError, "not a string"),
        ([], (1, 2), 100, ValueError, "digits is empty"),
        ([1], (3, 2), 100, ValueError, r"min \(3\) must not exceed max \(2\)"),
        ([1], (-1, 2), 100, ValueError, "min must be >= 0"),
        ([1], (1,), 100, TypeError, "pair"),
        ([1], (1.5, 2), 100, TypeError, "spacing_range min must be an integer"),
        ([1], (1, 2), 0, ValueError, "image_width must be a positive"),
        ([1], (1, 2), -5, ValueError, "image_width must be a positive"),
        ([1], (1, 2), 10.0, TypeError, "image_width must be an integer"),
    ],
)
def test_bad_arguments(
    digits: Any, spacing: Any, width: Any, error: type[Exception], message: str
) -> None:
    # Every bad argument is a ValueError (the contract); wrong types are also TypeErrors.
    with pytest.raises(ValueError, match=message) as info:
        generate_numbers_sequence(digits, spacing, width)
    assert isinstance(info.value, error)


@pytest.mark.parametrize(
    ("digits", "error", "message"),
    [
        ([1, 2, 3], ValueError, "must be 2-D"),
        ([[1, 2], [3, 12]], ValueError, "row 1, position 1 is 12"),
        ([[0.5, 1.0]], TypeError, "integers 0-9, got an array of float64"),
        (np.zeros((3, 0), int), ValueError, "empty rows"),
    ],
)
def test_bad_batch_arguments(digits: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        generate_numbers_batch(digits, (1, 2), 100)


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="align must be one of left, center, right, random"):
        generate_numbers_sequence([1], (1, 2), 50, align="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="overflow must be one of"):
        generate_numbers_sequence([1], (1, 2), 50, overflow="crop")  # type: ignore[arg-type]


# --- any arguments: a valid image or a clear error ------------------------------------------


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    digits=st.lists(st.integers(0, 9), min_size=1, max_size=12),
    lo=st.integers(1, 6),
    extra=st.integers(0, 6),
    width=st.integers(1, 360),
    align=st.sampled_from(["left", "center", "right", "random"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_arguments_give_a_faithful_image_or_a_clear_error(
    source: DigitSource,
    decoder: Any,
    digits: list[int],
    lo: int,
    extra: int,
    width: int,
    align: Any,
    seed: int,
) -> None:
    hi = lo + extra
    narrow = sum(source.min_widths[d] for d in digits) + (len(digits) - 1) * lo
    if narrow > width:
        with pytest.raises(ValueError, match="too small"):
            generate_numbers_sequence(digits, (lo, hi), width, rng=seed, align=align)
        return
    message = ""
    try:
        image = generate_numbers_sequence(digits, (lo, hi), width, rng=seed, align=align)
    except ValueError as exc:  # only when almost no draw fits
        message = str(exc)
    if message:
        assert "too tight" in message
        return
    assert image.shape == (28, width)
    decoded = decoder.decode(image, digits, source)
    assert all(lo <= gap <= hi for gap in decoded.gaps)


@pytest.mark.slow
def test_single_calls_reach_every_image_of_a_digit(source: DigitSource) -> None:
    lo, count = int(source.starts[5]), int(source.counts[5])
    expected = {source.glyphs[k].tobytes() for k in range(lo, lo + count)}
    rng = np.random.default_rng(16)
    seen = set()
    for _ in range(15_000):
        image = generate_numbers_sequence([5], (0, 0), 20, rng=rng, align="left")
        seen.add(np.rint(image * 255).astype(np.uint8).tobytes())
    assert seen == expected
