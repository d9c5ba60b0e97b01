"""Per-image processing: counts equal a brute-force reference; inputs are left untouched."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from batch_stats.engine import (
    EngineParams,
    ImagePlan,
    Placement,
    count_crop,
    count_white_black,
    decode_image,
    draw_plan,
    image_rng,
    process_image,
    synthetic_counts,
    synthetic_image,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import as_strided


def _reference(image: np.ndarray, seed: int, params: EngineParams) -> tuple[int, int]:
    """Paint the whole image, crop it, count with np.all: the straightforward way."""
    plan = draw_plan(
        np.random.default_rng(seed), height=image.shape[0], width=image.shape[1], params=params
    )
    painted = image.copy()
    s = plan.placement.size
    (wy, wx), (by, bx) = plan.placement.white, plan.placement.black
    painted[wy : wy + s, wx : wx + s] = 255
    painted[by : by + s, bx : bx + s] = 0
    cy, cx = plan.crop
    crop = painted[cy : cy + params.crop_height, cx : cx + params.crop_width]
    white = int(np.all(crop == [255, 255, 255], axis=2).sum())
    black = int(np.all(crop == [0, 0, 0], axis=2).sum())
    return white, black


@settings(max_examples=150, deadline=None)
@given(
    height=st.integers(8, 30),
    width=st.integers(8, 30),
    levels=st.sampled_from([(0, 255), (0, 1, 254, 255), tuple(range(256))]),
    seed=st.integers(0, 2**32),
)
def test_counts_equal_brute_force(
    height: int, width: int, levels: tuple[int, ...], seed: int
) -> None:
    # Few grey levels make pure white and black noise pixels (and near misses) common.
    params = EngineParams(
        square_size=4,
        crop_height=min(7, height),
        crop_width=min(9, width),
        image_height=8,
        image_width=9,
        images_per_batch=1,
        batches=1,
    )
    data_rng = np.random.default_rng(seed)
    image = np.asarray(levels, dtype=np.uint8)[
        data_rng.integers(len(levels), size=(height, width, 3))
    ]
    counts = process_image(image, rng=np.random.default_rng(seed), params=params)
    assert counts == _reference(image, seed, params)


def test_default_sizes_count_squares_and_noise() -> None:
    params = EngineParams()
    image = np.random.default_rng(5).integers(0, 2, size=(256, 512, 3), dtype=np.uint8) * 255
    for seed in range(20):
        assert process_image(image, rng=np.random.default_rng(seed), params=params) == _reference(
            image, seed, params
        )


@pytest.mark.parametrize("levels", [(0, 255), (0, 1, 254, 255), tuple(range(256))])
def test_decoded_pngs_count_as_brute_force(
    levels: tuple[int, ...], png_bytes: Callable[..., bytes]
) -> None:
    # decode_image returns a read-only view of Pillow's 4-byte pixels, counted in place.
    params = EngineParams()
    data_rng = np.random.default_rng(len(levels))
    for seed in range(8):
        image = np.asarray(levels, dtype=np.uint8)[
            data_rng.integers(len(levels), size=(256, 512, 3))
        ]
        decoded = decode_image(png_bytes(image), name="x.png", params=params)
        assert decoded.strides[1:] == (4, 1)
        assert not decoded.flags.writeable
        expected = _reference(image, seed, params)
        assert process_image(decoded, rng=np.random.default_rng(seed), params=params) == expected
        copied = np.ascontiguousarray(decoded)
        assert process_image(copied, rng=np.random.default_rng(seed), params=params) == expected


def test_four_byte_pixel_views_ignore_the_fourth_byte() -> None:
    params = EngineParams(
        square_size=3, crop_height=9, crop_width=11, image_height=12, image_width=14
    )
    data_rng = np.random.default_rng(3)
    padded = data_rng.integers(0, 2, size=(12, 14, 4), dtype=np.uint8) * 255
    padded[..., 3] = data_rng.integers(0, 256, size=(12, 14), dtype=np.uint8)
    view = padded[..., :3]
    # The same pixels in memory that ends right after the last pixel's blue byte: the fourth
    # byte of the last pixel is not part of it, so the crop is copied instead.
    short = np.frombuffer(padded.tobytes()[:-1], dtype=np.uint8)
    clipped = as_strided(short, shape=(12, 14, 3), strides=(14 * 4, 4, 1), writeable=False)
    for seed in range(40):
        expected = _reference(np.ascontiguousarray(view), seed, params)
        assert process_image(view, rng=np.random.default_rng(seed), params=params) == expected
        assert process_image(clipped, rng=np.random.default_rng(seed), params=params) == expected


def test_count_crop_with_a_plan_drawn_beforehand_equals_process_image() -> None:
    params = EngineParams()
    image = synthetic_image(2, "batch_001", "img_0001.png", params=params)
    for seed in range(10):
        plan = draw_plan(np.random.default_rng(seed), height=256, width=512, params=params)
        expected = process_image(image, rng=np.random.default_rng(seed), params=params)
        assert count_crop(image, plan=plan, params=params) == expected


def test_count_crop_refuses_a_plan_that_does_not_fit() -> None:
    params = EngineParams()
    image = np.zeros((256, 512, 3), np.uint8)
    fits = ImagePlan(Placement(white=(206, 462), black=(0, 0), size=50), crop=(56, 312))
    assert count_crop(image, plan=fits, params=params) == (50 * 50, 200 * 200 - 50 * 50)
    for plan in (
        ImagePlan(Placement(white=(0, 0), black=(100, 100), size=50), crop=(57, 0)),
        ImagePlan(Placement(white=(0, 0), black=(100, 100), size=50), crop=(0, 313)),
        ImagePlan(Placement(white=(207, 0), black=(100, 100), size=50), crop=(0, 0)),
        ImagePlan(Placement(white=(0, 0), black=(100, 463), size=50), crop=(0, 0)),
    ):
        with pytest.raises(ValueError, match="does not fit"):
            count_crop(image, plan=plan, params=params)


def test_process_image_does_not_modify_its_input() -> None:
    image = np.random.default_rng(0).integers(0, 256, size=(256, 512, 3), dtype=np.uint8)
    before = image.copy()
    process_image(image, rng=np.random.default_rng(1), params=EngineParams())
    np.testing.assert_array_equal(image, before)


def test_same_seed_gives_identical_counts() -> None:
    params = EngineParams()
    image = synthetic_image(11, "batch_001", "img_0001.png", params=params)
    first = process_image(image, rng=image_rng(11, "batch_001", "img_0001.png"), params=params)
    again = process_image(image, rng=image_rng(11, "batch_001", "img_0001.png"), params=params)
    other = [
        process_image(image, rng=image_rng(12 + i, "batch_001", "img_0001.png"), params=params)
        for i in range(5)
    ]
    assert first == again
    assert any(counts != first for counts in other)


def test_uniform_image_counts_whole_crop() -> None:
    params = EngineParams(square_size=2, crop_height=5, crop_width=5, image_height=8, image_width=8)
    white = np.full((8, 8, 3), 255, dtype=np.uint8)
    black = np.zeros((8, 8, 3), dtype=np.uint8)
    assert sum(process_image(white, rng=np.random.default_rng(0), params=params)) == 25
    assert sum(process_image(black, rng=np.random.default_rng(0), params=params)) == 25


def test_synthetic_counts_equal_processing_the_full_image() -> None:
    # 3 * 37 bytes per column is not a whole number of words: columns carry padding bytes.
    params = EngineParams(
        image_height=37, image_width=45, crop_height=20, crop_width=21, square_size=9
    )
    crops = set()
    for i in range(60):
        name = f"img_{i:04d}.png"
        full = synthetic_image(4, "batch_002", name, params=params)
        rng = image_rng(4, "batch_002", name)
        crops.add(
            draw_plan(image_rng(4, "batch_002", name), height=37, width=45, params=params).crop
        )
        expected = process_image(full, rng=rng, params=params)
        assert synthetic_counts(4, "batch_002", name, params=params) == expected
    assert len(crops) > 30  # many different crop windows were compared


def test_synthetic_images_are_uniform_random_rgb() -> None:
    params = EngineParams()
    image = synthetic_image(1, "batch_001", "img_0001.png", params=params)
    assert image.shape == (256, 512, 3)
    assert image.dtype == np.uint8
    histogram = np.bincount(image.reshape(-1), minlength=256)
    assert histogram.min() > 0.9 * image.size / 256
    assert histogram.max() < 1.1 * image.size / 256
    other = synthetic_image(1, "batch_001", "img_0002.png", params=params)
    assert np.count_nonzero(image == other) < image.size / 100


def test_count_white_black_counts_only_pure_pixels() -> None:
    image = np.array(
        [[[255, 255, 255], [255, 255, 254], [0, 0, 0]], [[0, 0, 1], [255, 0, 255], [0, 0, 0]]],
        dtype=np.uint8,
    )
    assert count_white_black(image) == (1, 2)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((256, 512), dtype=np.uint8),
        np.zeros((256, 512, 4), dtype=np.uint8),
        np.zeros((256, 512, 3), dtype=np.float64),
        [[0, 0, 0]],
    ],
    ids=["gray", "rgba", "float", "list"],
)
def test_non_rgb_arrays_are_rejected(image: object) -> None:
    with pytest.raises(ValueError, match=r"\(height, width, 3\) uint8 RGB array"):
        process_image(image, rng=np.random.default_rng(0), params=EngineParams())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((150, 512, 3), "smaller than the 200x200 crop"),
        ((256, 120, 3), "smaller than the 200x200 crop"),
    ],
)
def test_images_too_small_for_the_crop_are_rejected(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        process_image(
            np.zeros(shape, np.uint8), rng=np.random.default_rng(0), params=EngineParams()
        )


def test_image_without_room_for_the_squares_is_rejected() -> None:
    params = EngineParams(
        square_size=50, crop_height=60, crop_width=60, image_height=256, image_width=512
    )
    with pytest.raises(ValueError, match="no valid placement"):
        process_image(np.zeros((99, 99, 3), np.uint8), rng=np.random.default_rng(0), params=params)


def _column_buffer(
    image: np.ndarray, start: int, stop: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Columns start:stop of ``image`` laid out as synthetic images store them (random padding)."""
    height = image.shape[0]
    column_bytes = 8 * -(-3 * height // 8)
    data = rng.choice(np.array([0, 255, 7], np.uint8), size=(stop - start) * column_bytes + 8)
    for j, column in enumerate(range(start, stop)):
        data[j * column_bytes : j * column_bytes + 3 * height] = image[:, column].reshape(-1)
    return data, column_bytes


@pytest.mark.parametrize(
    ("shape", "injected"),
    [((37, 45), 6), ((37, 45), 400), ((256, 512), 40), ((40, 48), 0)],
    ids=["padded-columns-few", "padded-columns-many", "default-size", "nothing-pure"],
)
def test_column_counting_equals_brute_force(shape: tuple[int, int], injected: int) -> None:
    from batch_stats.engine._counting import count_columns

    height, width = shape
    params = EngineParams(
        image_height=height,
        image_width=width,
        crop_height=min(200, height - 7),
        crop_width=min(200, width - 9),
        square_size=min(50, height // 2),
    )
    rng = np.random.default_rng(height * width + injected)
    for trial in range(15):
        image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        rows = rng.integers(height, size=injected)
        cols = rng.integers(width, size=injected)
        image[rows, cols] = rng.choice([0, 255], size=(injected, 1))
        image[rows[: injected // 3], cols[: injected // 3], 1] = 1  # near misses
        seed = 1000 * trial + injected
        plan = draw_plan(np.random.default_rng(seed), height=height, width=width, params=params)
        cx = plan.crop[1]
        data, column_bytes = _column_buffer(image, cx, cx + params.crop_width, rng)
        counts = count_columns(data, column_bytes=column_bytes, plan=plan, params=params)
        assert counts == _reference(image, seed, params)
