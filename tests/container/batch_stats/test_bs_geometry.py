"""Square placement and crop: bounds, no overlap, exact uniformity, clear errors."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from batch_stats.engine import (
    EngineParams,
    UniformIntegers,
    count_valid_pairs,
    draw_crop,
    draw_squares,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare


def _overlap(a: tuple[int, int], b: tuple[int, int], size: int) -> bool:
    return abs(a[0] - b[0]) < size and abs(a[1] - b[1]) < size


def _valid_pairs(height: int, width: int, size: int) -> list[tuple[tuple[int, int], ...]]:
    corners = list(itertools.product(range(height - size + 1), range(width - size + 1)))
    return [(w, b) for w in corners for b in corners if not _overlap(w, b, size)]


@st.composite
def _shapes(draw: st.DrawFn) -> tuple[int, int, int]:
    size = draw(st.integers(1, 12))
    tight = draw(st.sampled_from(["height", "width", "both"]))
    height = draw(st.integers(2 * size if tight != "width" else size, 2 * size + 6))
    width = draw(st.integers(2 * size if tight != "height" else size, 2 * size + 6))
    return height, width, size


@settings(max_examples=200, deadline=None)
@given(shape=_shapes(), seed=st.integers(0, 2**32))
def test_squares_stay_in_bounds_and_never_overlap(shape: tuple[int, int, int], seed: int) -> None:
    height, width, size = shape
    rng = np.random.default_rng(seed)
    for _ in range(20):
        placement = draw_squares(rng, height=height, width=width, size=size)
        for row, col in (placement.white, placement.black):
            assert 0 <= row <= height - size
            assert 0 <= col <= width - size
        assert not _overlap(placement.white, placement.black, size)


@pytest.mark.parametrize(
    ("height", "width", "size"),
    [(2, 4, 2), (4, 2, 2), (3, 6, 3), (4, 5, 2), (5, 5, 2), (1, 3, 1)],
)
def test_valid_pair_count_matches_enumeration(height: int, width: int, size: int) -> None:
    assert count_valid_pairs(height=height, width=width, size=size) == len(
        _valid_pairs(height, width, size)
    )


@pytest.mark.parametrize(
    ("height", "width", "size"),
    [(4, 5, 2), (2, 5, 2), (6, 3, 3), (3, 3, 1)],
    ids=["roomy", "one-row-tight", "one-col-tight", "unit"],
)
def test_placement_is_uniform_over_all_valid_pairs(height: int, width: int, size: int) -> None:
    pairs = _valid_pairs(height, width, size)
    rng = np.random.default_rng(20261122)
    draws = 300 * len(pairs)
    seen = Counter()
    for _ in range(draws):
        placement = draw_squares(rng, height=height, width=width, size=size)
        seen[(placement.white, placement.black)] += 1
    # Every valid pair occurs (so corners reach the last valid row and column), nothing else does.
    assert set(seen) == set(pairs)
    assert max(w[0] for w, _ in seen) == height - size
    assert max(w[1] for w, _ in seen) == width - size
    assert max(b[0] for _, b in seen) == height - size
    assert max(b[1] for _, b in seen) == width - size
    result = chisquare([seen[p] for p in pairs])
    assert result.pvalue > 1e-4, result


def test_only_two_placements_when_the_image_is_exactly_two_squares_wide() -> None:
    rng = np.random.default_rng(1)
    seen = {
        (p.white, p.black)
        for p in (draw_squares(rng, height=50, width=100, size=50) for _ in range(200))
    }
    assert seen == {((0, 0), (0, 50)), ((0, 50), (0, 0))}


def test_same_generator_state_gives_the_same_placement() -> None:
    first = draw_squares(np.random.default_rng(7), height=256, width=512, size=50)
    again = draw_squares(np.random.default_rng(7), height=256, width=512, size=50)
    assert first == again


@pytest.mark.parametrize(
    ("height", "width", "size", "message"),
    [
        (40, 200, 50, "does not fit"),
        (200, 40, 50, "does not fit"),
        (99, 99, 50, "no valid placement"),
        (60, 80, 50, "no valid placement"),
    ],
)
def test_impossible_placements_raise_clear_errors(
    height: int, width: int, size: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        draw_squares(np.random.default_rng(0), height=height, width=width, size=size)


def test_crop_reaches_every_position_uniformly() -> None:
    rng = np.random.default_rng(3)
    positions = [
        draw_crop(rng, height=7, width=9, crop_height=4, crop_width=5) for _ in range(4000)
    ]
    seen = Counter(positions)
    expected = set(itertools.product(range(4), range(5)))
    assert set(seen) == expected
    assert chisquare([seen[p] for p in sorted(expected)]).pvalue > 1e-4


def test_crop_of_the_whole_image_is_at_the_origin() -> None:
    assert draw_crop(np.random.default_rng(0), height=5, width=6, crop_height=5, crop_width=6) == (
        0,
        0,
    )


@pytest.mark.parametrize(("height", "width"), [(199, 512), (256, 199), (10, 10)])
def test_image_smaller_than_the_crop_raises(height: int, width: int) -> None:
    with pytest.raises(ValueError, match=r"smaller than the 200x200 crop"):
        draw_crop(
            np.random.default_rng(0), height=height, width=width, crop_height=200, crop_width=200
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"square_size": 0}, "square_size must be a positive integer"),
        ({"batches": -1}, "batches must be a positive integer"),
        ({"images_per_batch": 2.5}, "images_per_batch must be a positive integer"),
        ({"crop_height": 300}, "crop does not fit"),
        ({"square_size": 300}, "square does not fit"),
        ({"square_size": 130, "image_width": 250}, "no valid placement"),
        ({"image_height": 20000}, "at most 16384"),
        ({"max_image_pixels": 1000}, "more pixels than max_image_pixels"),
        ({"max_image_pixels": 2**30}, "max_image_pixels must be at most"),
    ],
)
def test_invalid_params_raise_clear_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EngineParams(**options)  # type: ignore[arg-type]


def test_params_round_trip_through_json() -> None:
    params = EngineParams(square_size=10, batches=3)
    assert EngineParams.from_json(params.to_json()) == params
    with pytest.raises(ValueError, match="unknown engine parameters"):
        EngineParams.from_json('{"square": 3}')


class _ScriptedWords:
    """Stands in for a bit generator whose next raw words are known."""

    def __init__(self, words: list[int]) -> None:
        self._words = list(words)

    def random_raw(self) -> int:
        return self._words.pop(0)


def test_uniform_integers_reject_the_biased_top_words() -> None:
    # 2**64 = 3 * q + 1: the top word would make 0 one count more likely than 1 or 2.
    draws = UniformIntegers(_ScriptedWords([2**64 - 1, 2**64 - 2, 7]))  # type: ignore[arg-type]
    assert draws.below(3) == (2**64 - 2) % 3
    assert draws.words == 2
    assert draws.below(5) == 2
    assert draws.words == 3


def test_uniform_integers_match_the_bit_generator_stream() -> None:
    bit_generator = np.random.PCG64(5)
    draws = UniformIntegers(bit_generator)
    values = [draws.below(1000) for _ in range(50)]
    expected = [int(w) % 1000 for w in np.random.PCG64(5).random_raw(50)]
    assert values == expected
    assert draws.words == 50
