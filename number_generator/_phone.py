"""Unique, realistic Japanese phone numbers, drawn without replacement from explicit formats.

Every format is a fixed prefix (including the trunk ``0``) and a subscriber number whose first digit
comes from an allowed set (real Japanese subscriber numbers do not start with ``0``, and in many
areas not with ``1``); the remaining subscriber digits are free. A format therefore holds
``len(first_digits) * 10 ** (length - 1)`` numbers, every one of them valid for ``phonenumbers``
(region JP), which the tests check over large samples and at every format's boundaries.

Uniqueness: the requested count is split across formats by weight (capped at each format's size),
then each format draws distinct indices from its own space; formats have distinct prefixes, so no
two numbers can be equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from number_generator._sequence import ArgumentTypeError, generator

__all__ = [
    "JAPANESE_FORMATS",
    "MAX_LIST_COUNT",
    "PhoneFormat",
    "PhoneNumber",
    "generate_phone_numbers",
    "iter_phone_numbers",
]

#: The most numbers :func:`generate_phone_numbers` returns as one list (about 2 GB of Python
#: objects); :func:`iter_phone_numbers` yields any count the formats hold in bounded memory.
MAX_LIST_COUNT: Final = 10_000_000
#: Populations up to this size may be materialised (8 bytes each) when sampling.
_SMALL_POPULATION: Final = 1 << 22


@dataclass(frozen=True)
class PhoneFormat:
    """One family of numbers: ``prefix`` then subscriber groups, e.g. ``090-XXXX-XXXX``."""

    name: str
    prefix: str
    groups: tuple[int, ...]
    first_digits: str
    weight: float

    def __post_init__(self) -> None:
        if not (self.prefix.isdigit() and self.prefix.startswith("0")):
            raise ValueError(f"{self.name}: prefix must be digits starting with 0: {self.prefix!r}")
        if not self.groups or min(self.groups) < 1:
            raise ValueError(f"{self.name}: groups must be positive lengths: {self.groups}")
        digits = self.first_digits
        if not digits or not digits.isdigit() or len(set(digits)) != len(digits):
            raise ValueError(f"{self.name}: first_digits must be distinct digits: {digits!r}")
        if not self.weight > 0:
            raise ValueError(f"{self.name}: weight must be positive, got {self.weight}")

    @property
    def subscriber_length(self) -> int:
        return sum(self.groups)

    @property
    def length(self) -> int:
        """Number of digits, trunk prefix included."""
        return len(self.prefix) + self.subscriber_length

    @property
    def size(self) -> int:
        """How many distinct numbers the format holds."""
        return len(self.first_digits) * int(10 ** (self.subscriber_length - 1))

    @property
    def pattern(self) -> str:
        """The format as people write it, e.g. ``090-XXXX-XXXX``."""
        return "-".join([self.prefix, *("X" * g for g in self.groups)])

    def number(self, index: int) -> str:
        """The ``index``-th number of the format (``0 <= index < size``) as a digit string."""
        if not 0 <= index < self.size:
            raise IndexError(f"{self.name}: index {index} outside 0..{self.size - 1}")
        block = 10 ** (self.subscriber_length - 1)
        first = self.first_digits[index // block]
        return f"{self.prefix}{first}{index % block:0{self.subscriber_length - 1}d}"

    def formatted(self, digits: str) -> str:
        """Insert the hyphens: ``09012345678`` -> ``090-1234-5678``."""
        parts = [digits[: len(self.prefix)]]
        at = len(self.prefix)
        for g in self.groups:
            parts.append(digits[at : at + g])
            at += g
        return "-".join(parts)


#: The default formats and their weights (shares of the generated numbers; they sum to 1).
JAPANESE_FORMATS: Final[tuple[PhoneFormat, ...]] = (
    PhoneFormat("mobile 090", "090", (4, 4), "123456789", 0.25),
    PhoneFormat("mobile 080", "080", (4, 4), "123456789", 0.20),
    PhoneFormat("mobile 070", "070", (4, 4), "123456789", 0.10),
    PhoneFormat("Tokyo 03", "03", (4, 4), "23456789", 0.12),
    PhoneFormat("Osaka 06", "06", (4, 4), "23456789", 0.06),
    PhoneFormat("Yokohama 045", "045", (3, 4), "23456789", 0.03),
    PhoneFormat("Saitama 048", "048", (3, 4), "23456789", 0.03),
    PhoneFormat("Nagoya 052", "052", (3, 4), "23456789", 0.03),
    PhoneFormat("Kyoto 075", "075", (3, 4), "23456789", 0.03),
    PhoneFormat("Kobe 078", "078", (3, 4), "23456789", 0.03),
    PhoneFormat("Sapporo 011", "011", (3, 4), "235678", 0.03),
    PhoneFormat("Fukuoka 092", "092", (3, 4), "23456789", 0.03),
    PhoneFormat("toll-free 0120", "0120", (3, 3), "123456789", 0.04),
    PhoneFormat("IP phone 050", "050", (4, 4), "123456789", 0.02),
)


class PhoneNumber(NamedTuple):
    """A generated number: its digits (what the image shows) and its usual written form."""

    digits: str
    formatted: str


def capacity(formats: tuple[PhoneFormat, ...] = JAPANESE_FORMATS) -> int:
    """How many distinct numbers ``formats`` hold together."""
    return sum(f.size for f in formats)


def generate_phone_numbers(
    count: int,
    *,
    rng: np.random.Generator | int | None = None,
    formats: tuple[PhoneFormat, ...] = JAPANESE_FORMATS,
) -> list[PhoneNumber]:
    """``count`` distinct phone numbers in random order, split across ``formats`` by weight.

    Raises ValueError when ``count`` is not positive or exceeds what the formats hold.
    """
    _check_request(count, formats)
    if count > MAX_LIST_COUNT:
        raise ValueError(
            f"generate_phone_numbers returns a list, at most {MAX_LIST_COUNT:,} numbers; for "
            f"{count:,} use iter_phone_numbers, which yields them chunk by chunk in bounded memory"
        )
    gen = generator(rng)
    shares = _split(int(count), formats, gen)
    numbers: list[PhoneNumber] = []
    for fmt, k in zip(formats, shares, strict=True):
        if k == 0:
            continue
        block = 10 ** (fmt.subscriber_length - 1)
        width = fmt.subscriber_length - 1
        for index in sample_without_replacement(fmt.size, k, gen).tolist():
            digits = f"{fmt.prefix}{fmt.first_digits[index // block]}{index % block:0{width}d}"
            numbers.append(PhoneNumber(digits, fmt.formatted(digits)))
    order = gen.permutation(len(numbers))
    return [numbers[i] for i in order.tolist()]


def _check_request(count: int, formats: tuple[PhoneFormat, ...]) -> None:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise ArgumentTypeError(f"count must be an integer, got {count!r}")
    if count <= 0:
        raise ValueError(f"count must be a positive number of phone numbers, got {count}")
    if not formats:
        raise ValueError("formats is empty: give at least one PhoneFormat")
    prefixes = [f.prefix for f in formats]
    for a in prefixes:
        for b in prefixes:
            if a is not b and b.startswith(a) and len(a) < len(b):
                raise ValueError(f"format prefixes {a!r} and {b!r} overlap; numbers could repeat")
    if len(set(prefixes)) != len(prefixes):
        raise ValueError("format prefixes must be distinct; numbers could repeat")
    total = capacity(formats)
    if count > total:
        raise ValueError(
            f"cannot generate {count:,} unique phone numbers: the formats hold only {total:,}"
        )


def iter_phone_numbers(
    count: int,
    *,
    rng: np.random.Generator | int | None = None,
    formats: tuple[PhoneFormat, ...] = JAPANESE_FORMATS,
    chunk_size: int = 100_000,
) -> PhoneChunks:
    """``count`` distinct phone numbers in random order, as lists of up to ``chunk_size``.

    Memory stays O(``chunk_size``) whatever the count (up to everything the formats hold): the
    count is split across formats by weight as in :func:`generate_phone_numbers`; format ``f``
    then contributes the numbers at positions ``0, 1, ...`` of its own keyed pseudo-random
    permutation of its index space (a Feistel network with cycle-walking: a bijection, so
    numbers never repeat, without remembering the ones already drawn); each chunk takes its
    share of every format by a multivariate hypergeometric draw on what remains (a uniformly
    random interleaving) and is shuffled.
    """
    _check_request(count, formats)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return PhoneChunks(int(count), formats, generator(rng), chunk_size)


class PhoneChunks:
    """The chunks of :func:`iter_phone_numbers` (an iterator of lists of numbers).

    :meth:`skip` moves past the next chunk without building its numbers: the generator advances
    exactly as if the chunk had been drawn, so the chunks after it are the same (how a dataset
    writer renders only a part of a dataset, quickly, with the numbers still unique).
    """

    def __init__(
        self, count: int, formats: tuple[PhoneFormat, ...], gen: np.random.Generator, size: int
    ) -> None:
        self._count = count
        self._formats = formats
        self._gen = gen
        self._size = size
        self._left = count
        # Drawn on the first chunk (after whatever the caller draws from gen in between).
        self._remaining: npt.NDArray[np.int64] | None = None
        self._perms: list[_Permutation] = []
        self._done = np.zeros(len(formats), dtype=np.int64)

    def __iter__(self) -> PhoneChunks:
        return self

    def __next__(self) -> list[PhoneNumber]:
        chunk = self._draw(build=True)
        assert chunk is not None
        return chunk

    def skip(self) -> int:
        """Move past the next chunk; return how many numbers it held (StopIteration at the end)."""
        take = min(self._size, self._left)
        self._draw(build=False)
        return take

    def _draw(self, *, build: bool) -> list[PhoneNumber] | None:
        if not self._left:
            raise StopIteration
        gen, formats = self._gen, self._formats
        if self._remaining is None:
            self._remaining = np.array(_split(self._count, formats, gen), dtype=np.int64)
            self._perms = [_Permutation(f.size, gen) for f in formats]
        take = min(self._size, self._left)
        shares = gen.multivariate_hypergeometric(self._remaining, take)
        chunk: list[PhoneNumber] = []
        for f, (fmt, k) in enumerate(zip(formats, shares.tolist(), strict=True)):
            if k == 0 or not build:
                continue
            start = self._done[f]
            indices = self._perms[f](np.arange(start, start + k, dtype=np.uint64))
            block = 10 ** (fmt.subscriber_length - 1)
            width = fmt.subscriber_length - 1
            for index in indices.tolist():
                digits = f"{fmt.prefix}{fmt.first_digits[index // block]}{index % block:0{width}d}"
                chunk.append(PhoneNumber(digits, fmt.formatted(digits)))
        self._done += shares
        self._remaining -= shares
        self._left -= take
        order = gen.permutation(take)
        return [chunk[i] for i in order.tolist()] if build else None


class _Permutation:
    """A keyed pseudo-random bijection of ``range(size)`` (vectorised over uint64 arrays).

    A balanced Feistel network on ``2 * half`` bits (``4 ** half >= size``, so fewer than 4 of
    its outputs per valid one fall outside the range) with six rounds of a multiply-xorshift
    round function; outputs outside ``range(size)`` walk the cycle until they land inside, which
    keeps it a bijection of ``range(size)``.
    """

    _ROUNDS: Final = 6

    def __init__(self, size: int, gen: np.random.Generator) -> None:
        self.size = size
        half = max(1, ((size - 1).bit_length() + 1) // 2)
        self.half = np.uint64(half)
        self.mask = np.uint64((1 << half) - 1)
        self.keys = gen.integers(0, 2**63, size=self._ROUNDS, dtype=np.uint64)

    def _round(self, right: npt.NDArray[np.uint64], key: np.uint64) -> npt.NDArray[np.uint64]:
        x = (right ^ key) * np.uint64(0x9E3779B97F4A7C15)
        x ^= x >> np.uint64(29)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(32)
        return x & self.mask

    def _encrypt(self, values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
        left = values >> self.half
        right = values & self.mask
        for key in self.keys:
            left, right = right, left ^ self._round(right, key)
        out: npt.NDArray[np.uint64] = (left << self.half) | right
        return out

    def __call__(self, positions: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
        values = self._encrypt(positions)
        outside = np.flatnonzero(values >= np.uint64(self.size))
        while outside.size:
            values[outside] = self._encrypt(values[outside])
            outside = outside[values[outside] >= np.uint64(self.size)]
        return values


def _split(count: int, formats: tuple[PhoneFormat, ...], gen: np.random.Generator) -> list[int]:
    """A multinomial split of ``count`` by weight, excess over a format's size moved elsewhere."""
    sizes = np.array([f.size for f in formats], dtype=np.int64)
    weights = np.array([f.weight for f in formats], dtype=np.float64)
    alloc = gen.multinomial(count, weights / weights.sum()).astype(np.int64)
    while (excess := int(np.maximum(alloc - sizes, 0).sum())) > 0:
        alloc = np.minimum(alloc, sizes)
        room = np.where(alloc < sizes, weights, 0.0)
        alloc += gen.multinomial(excess, room / room.sum())
    return [int(a) for a in alloc]


def _distinct(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Sorted distinct values (sort-based: far faster here than ``np.unique`` on large arrays)."""
    ordered = np.sort(values)
    keep = np.empty(ordered.size, dtype=np.bool_)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def sample_without_replacement(
    population: int, k: int, gen: np.random.Generator
) -> npt.NDArray[np.int64]:
    """``k`` distinct integers from ``range(population)``, uniformly, in random order.

    Memory is O(k) for huge populations: numpy's ``choice`` (Floyd's algorithm) when ``k`` is
    small against the population, else i.i.d. draws de-duplicated and topped up, which is uniform
    over k-subsets by symmetry. Only small populations are materialised.
    """
    if not 0 <= k <= population:
        raise ValueError(f"cannot draw {k} distinct values from {population}")
    if population <= _SMALL_POPULATION or k <= population // 50 or 2 * k > population:
        return gen.choice(population, size=k, replace=False).astype(np.int64, copy=False)
    picked = _distinct(gen.integers(0, population, size=k + k // 8 + 64))
    while picked.size < k:
        more = gen.integers(0, population, size=2 * (k - picked.size) + 64)
        picked = _distinct(np.concatenate([picked, more]))
    # A uniform k-subset of a uniform random subset is a uniform k-subset; then shuffle it.
    chosen = gen.choice(picked, size=k, replace=False, shuffle=True)
    return np.asarray(chosen, dtype=np.int64)
