"""Decoding uploaded files: the mode policy and clear rejections, on real PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from batch_stats.engine import EngineParams, ImageRejected, decode_image
from PIL import Image

HEIGHT, WIDTH = 16, 24


@pytest.fixture
def rgb() -> np.ndarray:
    image = np.random.default_rng(9).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[0, 0] = 255
    image[0, 1] = 0
    return image


def _reject(data: bytes, params: EngineParams, reason: str) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        decode_image(data, name="batch_001/img_0001.png", params=params)
    assert caught.value.reason == reason
    assert str(caught.value).startswith("batch_001/img_0001.png: ")
    assert isinstance(caught.value, ValueError)
    return caught.value


def test_rgb_png_decodes_exactly(
    rgb: np.ndarray, png_bytes: Callable[..., bytes], small_params: EngineParams
) -> None:
    for level in (0, 9):
        decoded = decode_image(png_bytes(rgb, compress_level=level), name="x", params=small_params)
        assert decoded.dtype == np.uint8
        assert not decoded.flags.writeable  # a view of the decoded pixels, not a copy
        np.testing.assert_array_equal(decoded, rgb)


def test_bytes_after_the_end_chunk_are_ignored(
    rgb: np.ndarray, png_bytes: Callable[..., bytes], small_params: EngineParams
) -> None:
    data = png_bytes(rgb) + b"trailing bytes"
    np.testing.assert_array_equal(decode_image(data, name="x", params=small_params), rgb)


def test_image_larger_than_one_allocator_block_decodes_exactly(
    png_bytes: Callable[..., bytes],
) -> None:
    # 2304 x 2048 pixels of 4 bytes in Pillow's memory: more than one 16 MiB block, so the
    # pixels cannot be exported as one array and are copied out instead.
    height, width = 2304, 2048
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[::7, :, 0] = 255
    image[:, ::5, 1] = 128
    image[-1, -1] = (1, 2, 3)
    decoded = decode_image(png_bytes(image, compress_level=1), name="x", params=EngineParams())
    np.testing.assert_array_equal(decoded, image)


def test_grayscale_becomes_gray_rgb(
    png_bytes: Callable[..., bytes], small_params: EngineParams
) -> None:
    gray = np.random.default_rng(1).integers(0, 256, size=(HEIGHT, WIDTH), dtype=np.uint8)
    decoded = decode_image(png_bytes(Image.fromarray(gray, "L")), name="x", params=small_params)
    np.testing.assert_array_equal(decoded, np.repeat(gray[..., None], 3, axis=2))


def test_one_bit_images_map_to_black_and_white(
    png_bytes: Callable[..., bytes], small_params: EngineParams
) -> None:
    bits = np.random.default_rng(2).integers(0, 2, size=(HEIGHT, WIDTH)).astype(bool)
    decoded = decode_image(png_bytes(Image.fromarray(bits)), name="x", params=small_params)
    np.testing.assert_array_equal(decoded, np.repeat(bits[..., None], 3, axis=2) * 255)


def test_palette_becomes_its_colours(
    rgb: np.ndarray, png_bytes: Callable[..., bytes], small_params: EngineParams
) -> None:
    palette_image = Image.fromarray(rgb).quantize(colors=16)
    expected = np.asarray(palette_image.convert("RGB"))
    decoded = decode_image(png_bytes(palette_image), name="x", params=small_params)
    np.testing.assert_array_equal(decoded, expected)


def test_opaque_rgba_drops_alpha(
    rgb: np.ndarray, png_bytes: Callable[..., bytes], small_params: EngineParams
) -> None:
    rgba = np.dstack([rgb, np.full((HEIGHT, WIDTH), 255, np.uint8)])
    np.testing.assert_array_equal(decode_image(png_bytes(rgba), name="x", params=small_params), rgb)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_are_rejected(
    mode: str, rgb: np.ndarray, png_bytes: Callable[..., bytes], small_params: EngineParams
) -> None:
    rgba = np.dstack([rgb, np.full((HEIGHT, WIDTH), 255, np.uint8)])
    rgba[3, 4, 3] = 254
    image = Image.fromarray(rgba).convert(mode)
    error = _reject(png_bytes(image), small_params, "transparent")
    assert "transparent pixels" in str(error)


def test_palette_with_a_transparent_entry_in_use_is_rejected(
    png_bytes: Callable[..., bytes], small_params: EngineParams
) -> None:
    image = Image.new("P", (WIDTH, HEIGHT), 0)
    image.putpalette([0, 0, 0, 255, 255, 255])
    image.putpixel((2, 2), 1)
    _reject(png_bytes(image, transparency=1), small_params, "transparent")


def test_sixteen_bit_grayscale_is_rejected(
    png_bytes: Callable[..., bytes], small_params: EngineParams
) -> None:
    image = Image.fromarray(np.full((HEIGHT, WIDTH), 65535, np.uint16))
    error = _reject(png_bytes(image), small_params, "unsupported_mode")
    assert "16-bit" in str(error)
    assert "allowed" in str(error)


def test_sixteen_bit_rgb_is_rejected(
    raw_png: Callable[..., bytes], small_params: EngineParams
) -> None:
    rows = b"".join(b"\x00" + b"\xff" * (6 * WIDTH) for _ in range(HEIGHT))
    data = raw_png(width=WIDTH, height=HEIGHT, depth=16, colour=2, rows=rows)
    # Pillow alone would silently reduce this image to 8 bits.
    assert Image.open(io.BytesIO(data)).mode == "RGB"
    _reject(data, small_params, "unsupported_mode")


def test_animated_png_is_rejected(
    rgb: np.ndarray, png_bytes: Callable[..., bytes], small_params: EngineParams
) -> None:
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    data = png_bytes(frames[0], save_all=True, append_images=frames[1:])
    _reject(data, small_params, "animated")


@pytest.mark.parametrize("fmt", ["JPEG", "GIF", "BMP"])
def test_other_formats_are_rejected(fmt: str, rgb: np.ndarray, small_params: EngineParams) -> None:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt)
    error = _reject(buffer.getvalue(), small_params, "not_png")
    assert "only PNG images are accepted" in str(error)


def test_empty_file_is_rejected(small_params: EngineParams) -> None:
    _reject(b"", small_params, "empty")


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_png_is_rejected(
    keep: float, rgb: np.ndarray, png_bytes: Callable[..., bytes], small_params: EngineParams
) -> None:
    data = png_bytes(rgb)
    _reject(data[: int(len(data) * keep)], small_params, "truncated")


def test_cut_inside_the_header_is_corrupt(
    rgb: np.ndarray, png_bytes: Callable[..., bytes], small_params: EngineParams
) -> None:
    _reject(png_bytes(rgb)[:20], small_params, "corrupt")


def test_damaged_image_data_is_corrupt(
    rgb: np.ndarray, png_bytes: Callable[..., bytes], small_params: EngineParams
) -> None:
    data = bytearray(png_bytes(rgb, compress_level=9))
    start = data.index(b"IDAT") + 4
    data[start : start + 20] = bytes(20)
    _reject(bytes(data), small_params, "corrupt")


def test_header_checksum_is_verified(
    rgb: np.ndarray, png_bytes: Callable[..., bytes], small_params: EngineParams
) -> None:
    data = bytearray(png_bytes(rgb))
    data[17] ^= 1  # width, without fixing the CRC
    _reject(bytes(data), small_params, "corrupt")


def test_decompression_bomb_is_rejected_before_decoding(
    raw_png: Callable[..., bytes], small_params: EngineParams
) -> None:
    # The header claims 100000 x 100000 pixels and there is no image data at all: the size alone
    # must be enough to reject it.
    data = raw_png(width=100_000, height=100_000, depth=8, colour=2, idat=False)
    error = _reject(data, small_params, "decompression_bomb")
    assert "10000000000 pixels" in str(error)


def test_overlong_side_is_rejected_before_decoding(
    raw_png: Callable[..., bytes], small_params: EngineParams
) -> None:
    data = raw_png(width=20_000, height=16, depth=8, colour=2, idat=False)
    error = _reject(data, small_params, "too_large")
    assert "at most 16384" in str(error)


def test_file_over_the_byte_limit_is_rejected(
    rgb: np.ndarray, png_bytes: Callable[..., bytes]
) -> None:
    params = EngineParams(
        square_size=4,
        crop_height=10,
        crop_width=12,
        image_height=16,
        image_width=24,
        max_file_bytes=100,
    )
    _reject(png_bytes(rgb), params, "too_large")


@pytest.mark.parametrize(
    ("shape", "message"),
    [((9, 24), "smaller than the 10x12 crop"), ((16, 11), "smaller than the 10x12 crop")],
)
def test_image_smaller_than_the_crop_is_rejected(
    shape: tuple[int, int],
    message: str,
    png_bytes: Callable[..., bytes],
    small_params: EngineParams,
) -> None:
    error = _reject(png_bytes(np.zeros((*shape, 3), np.uint8)), small_params, "too_small")
    assert message in str(error)


def test_image_without_room_for_two_squares_is_rejected(png_bytes: Callable[..., bytes]) -> None:
    params = EngineParams(
        square_size=8, crop_height=10, crop_width=10, image_height=16, image_width=24
    )
    error = _reject(png_bytes(np.zeros((15, 15, 3), np.uint8)), params, "too_small")
    assert "no valid placement" in str(error)


@pytest.mark.parametrize("depth", [2, 4])
def test_low_bit_depth_grayscale_scales_to_full_range(
    depth: int, raw_png: Callable[..., bytes], small_params: EngineParams
) -> None:
    top = 2**depth - 1
    levels = np.random.default_rng(depth).integers(0, top + 1, size=(HEIGHT, WIDTH))
    levels[0, :2] = [0, top]
    per_byte = 8 // depth
    rows = b""
    for row in levels:
        packed = bytearray()
        for start in range(0, WIDTH, per_byte):
            value = 0
            for level in row[start : start + per_byte]:
                value = (value << depth) | int(level)
            packed.append(value)
        rows += b"\x00" + bytes(packed)
    data = raw_png(width=WIDTH, height=HEIGHT, depth=depth, colour=0, rows=rows)
    decoded = decode_image(data, name="x", params=small_params)
    expected = (levels * (255 // top)).astype(np.uint8)
    np.testing.assert_array_equal(decoded, np.repeat(expected[..., None], 3, axis=2))
    assert decoded[0, 1].tolist() == [255, 255, 255]
