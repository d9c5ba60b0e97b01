"""Japanese phone numbers: valid for phonenumbers, unique at scale, formats and weights."""

from __future__ import annotations

from collections import Counter

import numpy as np
import phonenumbers
import pytest

from number_generator import JAPANESE_FORMATS, PhoneFormat, generate_phone_numbers
from number_generator._phone import capacity, sample_without_replacement


def _national(digits: str) -> tuple[bool, str]:
    parsed = phonenumbers.parse(digits, "JP")
    formatted = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    return phonenumbers.is_valid_number(parsed), formatted


@pytest.mark.parametrize("fmt", JAPANESE_FORMATS, ids=lambda f: f.name)
def test_every_boundary_of_every_format_is_valid(fmt: PhoneFormat) -> None:
    # phonenumbers decides validity on the leading subscriber digits: check the first and last
    # number of every block of 10**(L-3) (all three-digit subscriber prefixes) and the ends.
    step = 10 ** (fmt.subscriber_length - 3)
    indices = sorted({0, fmt.size - 1, *range(0, fmt.size, step), *range(step - 1, fmt.size, step)})
    for index in indices:
        digits = fmt.number(index)
        valid, formatted = _national(digits)
        assert valid, digits
        assert formatted == fmt.formatted(digits), (digits, formatted)
        assert formatted.replace("-", "") == digits
    assert len(fmt.number(fmt.size - 1)) == fmt.length
    with pytest.raises(IndexError):
        fmt.number(fmt.size)


def test_the_digit_space_ends_where_validity_ends() -> None:
    # The excluded leading subscriber digits really are unassigned for phonenumbers: the formats
    # could not simply be widened.
    assert not _national("09001234567")[0]  # mobile subscriber starting with 0
    assert not _national("0300123456")[0]  # Tokyo subscriber starting with 0
    assert not _national("0114123456")[0]  # Sapporo 011-4xx is not a valid subscriber range


@pytest.mark.slow
def test_100000_numbers_are_unique_and_all_valid() -> None:
    numbers = generate_phone_numbers(100_000, rng=0)
    assert len(numbers) == 100_000
    assert len({n.digits for n in numbers}) == 100_000
    for n in numbers:
        assert phonenumbers.is_valid_number(phonenumbers.parse(n.digits, "JP")), n
    for n in numbers[::10]:  # the written form, on a tenth of them
        assert _national(n.digits)[1] == n.formatted
    by_prefix = Counter(_format_of(n.digits).name for n in numbers)
    for fmt in JAPANESE_FORMATS:
        share = by_prefix[fmt.name] / 100_000
        assert abs(share - fmt.weight) < 0.01, (fmt.name, share)


def _format_of(digits: str) -> PhoneFormat:
    matches = [
        f for f in JAPANESE_FORMATS if digits.startswith(f.prefix) and len(digits) == f.length
    ]
    assert len(matches) == 1, digits
    return matches[0]


def test_weights_sum_to_one_and_prefixes_are_distinct() -> None:
    assert sum(f.weight for f in JAPANESE_FORMATS) == pytest.approx(1.0)
    assert len({f.prefix for f in JAPANESE_FORMATS}) == len(JAPANESE_FORMATS)


def test_seed_reproduces_the_numbers_and_their_order() -> None:
    assert generate_phone_numbers(50, rng=3) == generate_phone_numbers(50, rng=3)
    assert generate_phone_numbers(50, rng=3) != generate_phone_numbers(50, rng=4)


def test_a_small_format_is_exhausted_then_the_rest_spill_over() -> None:
    tiny = PhoneFormat("tiny", "0120", (3, 3), "1", 0.9)  # 100,000 numbers
    big = PhoneFormat("mobile", "090", (4, 4), "123456789", 0.1)
    numbers = generate_phone_numbers(150_000, rng=5, formats=(tiny, big))
    tiny_count = sum(n.digits.startswith("0120") for n in numbers)
    assert tiny_count == 100_000, "the full space of the small format is used"
    assert len({n.digits for n in numbers}) == 150_000


def test_asking_for_more_than_exist_is_a_clear_error() -> None:
    tiny = PhoneFormat("tiny", "0120", (1, 1), "12", 1.0)  # 20 numbers
    assert len(set(generate_phone_numbers(20, formats=(tiny,)))) == 20
    with pytest.raises(
        ValueError, match="cannot generate 21 unique phone numbers: the formats hold only 20"
    ):
        generate_phone_numbers(21, formats=(tiny,))
    with pytest.raises(ValueError, match=f"only {capacity():,}"):
        generate_phone_numbers(capacity() + 1)


@pytest.mark.parametrize(("count", "error"), [(0, ValueError), (-3, ValueError), (2.5, TypeError)])
def test_bad_counts(count: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="count must be"):
        generate_phone_numbers(count)  # type: ignore[arg-type]


def test_overlapping_formats_are_refused() -> None:
    a = PhoneFormat("a", "012", (3, 3), "1", 1.0)
    b = PhoneFormat("b", "0120", (3, 2), "1", 1.0)
    with pytest.raises(ValueError, match="overlap"):
        generate_phone_numbers(5, formats=(a, b))


@pytest.mark.parametrize(
    ("population", "k"),
    [(10, 10), (1000, 7), (90_000_000, 5), (90_000_000, 2_000_000), (5_000_000, 3_000_000)],
)
def test_sampling_without_replacement_is_distinct_and_in_range(population: int, k: int) -> None:
    drawn = sample_without_replacement(population, k, np.random.default_rng(6))
    assert drawn.shape == (k,)
    ordered = np.sort(drawn)
    assert (ordered[1:] != ordered[:-1]).all(), "no value is drawn twice"
    assert drawn.min() >= 0
    assert drawn.max() < population


def test_sampling_without_replacement_is_uniform() -> None:
    # The de-duplicate-and-top-up path (large population, k above population / 50): every value
    # should be drawn about equally often across repetitions.
    rng = np.random.default_rng(7)
    population, k = 5_000_000, 200_000
    hits = np.zeros(50, dtype=np.int64)
    for _ in range(5):
        drawn = sample_without_replacement(population, k, rng)
        hits += np.bincount(drawn // (population // 50), minlength=50)
    expected = 5 * k / 50
    assert np.abs(hits - expected).max() < 6 * np.sqrt(expected)
