"""Damaged and lying PNGs: exactly the intact pixels, or a rejection with a reason, never others.

Real PNG files written by Pillow (and interlaced ones written here, which Pillow cannot write),
then cut, flipped, shortened or given a header that lies, with and without fixed checksums.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from batch_stats.engine import EngineParams, ImageRejected, decode_image, draw_plan, process_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

PARAMS = EngineParams(
    square_size=4, crop_height=10, crop_width=12, image_height=16, image_width=24, batches=1
)
REASONS = {"empty", "truncated", "corrupt", "unsupported_mode", "too_small", "decompression_bomb",
           "too_large", "transparent", "animated", "not_png"}  # fmt: skip
SIGNATURE = b"\x89PNG\r\n\x1a\n"
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2))  # fmt: skip


def chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    found, position = [], 8
    while position < len(data):
        (length,) = struct.unpack_from(">I", data, position)
        kind = data[position + 4 : position + 8]
        found.append((kind, data[position + 8 : position + 8 + length]))
        position += 12 + length
        if kind == b"IEND":
            break
    return found


def assemble(parts: list[tuple[bytes, bytes]]) -> bytes:
    return SIGNATURE + b"".join(chunk(kind, payload) for kind, payload in parts)


def interlaced_rgb(pixels: np.ndarray, *, level: int = 6) -> bytes:
    """An Adam7-interlaced 8-bit RGB PNG, rows unfiltered."""
    height, width = pixels.shape[:2]
    raw = b""
    for x0, y0, dx, dy in ADAM7:
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            rows = sub.reshape(sub.shape[0], -1)
            raw += np.hstack([np.zeros((len(rows), 1), np.uint8), rows]).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return assemble([(b"IHDR", header), (b"IDAT", zlib.compress(raw, level)), (b"IEND", b"")])


def pillow_png(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def counts(pixels: np.ndarray) -> tuple[int, int]:
    height, width = pixels.shape[:2]
    rng = np.random.default_rng(7)
    draw_plan(rng, height=height, width=width, params=PARAMS)  # the plan must be drawable
    return process_image(pixels, rng=np.random.default_rng(7), params=PARAMS)


@st.composite
def intact_pngs(draw: st.DrawFn) -> bytes:
    """Small images with large white and black areas (so that changed pixels change counts)."""
    height = draw(st.integers(16, 40))
    width = draw(st.integers(24, 48))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pixels = rng.choice(np.array([0, 255, 7], np.uint8), size=(height, width, 1), p=[0.4, 0.4, 0.2])
    pixels = np.repeat(pixels, 3, axis=2)
    kind = draw(st.sampled_from(["rgb", "rgb-interlaced", "gray", "palette", "rgba"]))
    level = draw(st.integers(0, 9))
    if kind == "rgb-interlaced":
        return interlaced_rgb(pixels, level=level)
    image = Image.fromarray(pixels)
    if kind == "gray":
        image = image.convert("L")
    elif kind == "palette":
        image = image.convert("P")
    elif kind == "rgba":
        image = image.convert("RGBA")
    return pillow_png(image, compress_level=level)


def recompress_rows(data: bytes, *, delta_bytes: int) -> bytes:
    """A consistent file whose zlib stream holds ``delta_bytes`` fewer (or more) row bytes."""
    parts = chunks(data)
    raw = zlib.decompress(b"".join(p for k, p in parts if k == b"IDAT"))
    raw = raw[:delta_bytes] if delta_bytes < 0 else raw + raw[:delta_bytes]
    idat = zlib.compress(raw)
    rebuilt = [(k, p) for k, p in parts if k not in (b"IDAT", b"IEND")]
    return assemble([*rebuilt, (b"IDAT", idat), (b"IEND", b"")])


@st.composite
def damaged(draw: st.DrawFn) -> tuple[bytes, bytes, str]:
    data = draw(intact_pngs())
    how = draw(st.sampled_from(["cut", "flip", "shorten_idat", "header_lie", "rows"]))
    if how == "cut":
        return data, data[: draw(st.integers(0, len(data) - 1))], how
    if how == "flip":
        changed = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            position = draw(st.integers(0, len(data) - 1))
            changed[position] = (changed[position] + draw(st.integers(1, 255))) % 256
        return data, bytes(changed), how
    parts = chunks(data)
    if how == "shorten_idat":
        index = draw(st.sampled_from([i for i, (k, _) in enumerate(parts) if k == b"IDAT"]))
        payload = parts[index][1]
        keep = draw(st.integers(0, max(len(payload) - 1, 0)))
        cut_from_end = draw(st.booleans())
        parts[index] = (b"IDAT", payload[:keep] if cut_from_end else payload[len(payload) - keep :])
        return data, assemble(parts), how
    if how == "header_lie":
        header = bytearray(parts[0][1])
        field = draw(st.sampled_from(["width", "height", "depth", "colour", "interlace"]))
        if field in ("width", "height"):
            offset = 0 if field == "width" else 4
            (value,) = struct.unpack_from(">I", header, offset)
            struct.pack_into(">I", header, offset, max(1, value + draw(st.integers(-8, 8))))
        else:
            offset = {"depth": 8, "colour": 9, "interlace": 12}[field]
            header[offset] = draw(st.sampled_from([0, 1, 2, 3, 4, 6, 8, 16]))
        parts[0] = (b"IHDR", bytes(header))
        lied = assemble(parts)
        if not draw(st.booleans()):  # leave the checksum stale as well
            lied = lied[:29] + data[29:33] + lied[33:]
        return data, lied, f"{how}:{field}"
    delta = draw(st.integers(-200, 200).filter(bool))
    return data, recompress_rows(data, delta_bytes=delta), how


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_damaged_pngs_give_the_intact_pixels_or_a_reasoned_rejection(
    case: tuple[bytes, bytes, str],
) -> None:
    intact, data, how = case
    expected = decode_image(intact, name="x.png", params=PARAMS)
    rejection: ImageRejected | None = None
    try:
        pixels = decode_image(data, name="x.png", params=PARAMS)
    except ImageRejected as error:
        rejection = error
    if rejection is not None:
        assert rejection.reason in REASONS, (how, rejection)
        assert str(rejection).startswith("x.png: "), how
        assert rejection.detail, how
        return
    # Accepted: the very pixels of the intact image, so the very same counts.
    assert pixels.shape == expected.shape, how
    np.testing.assert_array_equal(pixels, expected, err_msg=how)
    assert counts(pixels) == counts(expected)


def rgb_image(height: int = 16, width: int = 24) -> np.ndarray:
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 2] = 255
    pixels[:, ::5] = (10, 20, 30)
    return pixels


@pytest.mark.parametrize("missing_rows", [1, 5, 15])
def test_fewer_rows_than_the_header_declares_is_truncated(missing_rows: int) -> None:
    # A complete, valid zlib stream with fewer rows: Pillow fills the rest with black silently.
    data = pillow_png(Image.fromarray(rgb_image()))
    short = recompress_rows(data, delta_bytes=-(1 + 24 * 3) * missing_rows)
    with pytest.raises(ImageRejected) as caught:
        decode_image(short, name="b/x.png", params=PARAMS)
    assert caught.value.reason == "truncated"
    assert f"holds {16 - missing_rows} of the 16 rows" in str(caught.value)


def test_more_rows_than_the_header_declares_is_corrupt() -> None:
    data = pillow_png(Image.fromarray(rgb_image()))
    with pytest.raises(ImageRejected, match="more than the 16 rows") as caught:
        decode_image(recompress_rows(data, delta_bytes=73), name="x.png", params=PARAMS)
    assert caught.value.reason == "corrupt"


def test_a_wrong_zlib_checksum_is_corrupt() -> None:
    parts = chunks(pillow_png(Image.fromarray(rgb_image())))
    idat = b"".join(p for k, p in parts if k == b"IDAT")
    idat = idat[:-4] + bytes(b ^ 0xFF for b in idat[-4:])
    bad = assemble([parts[0], (b"IDAT", idat), (b"IEND", b"")])
    with pytest.raises(ImageRejected, match=r"broken data stream|incorrect data check") as caught:
        decode_image(bad, name="x.png", params=PARAMS)
    assert caught.value.reason == "corrupt"


def test_a_stream_without_its_end_is_truncated() -> None:
    parts = chunks(pillow_png(Image.fromarray(rgb_image()), compress_level=0))
    idat = b"".join(p for k, p in parts if k == b"IDAT")[:-4]  # the checksum is gone
    bad = assemble([parts[0], (b"IDAT", idat), (b"IEND", b"")])
    with pytest.raises(ImageRejected, match="ends before the end of its compressed stream"):
        decode_image(bad, name="x.png", params=PARAMS)


def test_checksum_in_its_own_chunk_is_still_verified() -> None:
    # The last rows and the stream's end in different IDAT chunks: both orders of arrival work.
    parts = chunks(pillow_png(Image.fromarray(rgb_image()), compress_level=0))
    idat = b"".join(p for k, p in parts if k == b"IDAT")
    split = [(b"IDAT", idat[:-4]), (b"IDAT", idat[-4:])]
    good = assemble([parts[0], *split, (b"IEND", b"")])
    np.testing.assert_array_equal(decode_image(good, name="x", params=PARAMS), rgb_image())
    wrong = [(b"IDAT", idat[:-4]), (b"IDAT", bytes(4))]
    with pytest.raises(ImageRejected, match=r"broken data stream|incorrect data check"):
        decode_image(assemble([parts[0], *wrong, (b"IEND", b"")]), name="x", params=PARAMS)


@pytest.mark.parametrize("interlaced", [False, True])
def test_fewer_rows_are_caught_on_every_path(interlaced: bool) -> None:
    # Grayscale goes through the checked slow path; interlaced RGB as well.
    if interlaced:
        data = interlaced_rgb(rgb_image())
    else:
        data = pillow_png(Image.fromarray(rgb_image()).convert("L"))
    with pytest.raises(ImageRejected) as caught:
        decode_image(recompress_rows(data, delta_bytes=-30), name="x.png", params=PARAMS)
    assert caught.value.reason == "truncated"


def test_interlaced_png_decodes_exactly() -> None:
    pixels = rgb_image(33, 41)
    pixels[-1, -1] = (1, 2, 3)
    np.testing.assert_array_equal(
        decode_image(interlaced_rgb(pixels), name="x.png", params=PARAMS), pixels
    )


def test_opaque_palette_with_transparency_chunk_decodes() -> None:
    pixels = rgb_image()
    image = Image.fromarray(pixels).convert("P")
    # A tRNS chunk whose transparent entry no pixel uses: every pixel stays opaque.
    used = set(np.unique(np.asarray(image)).tolist())
    unused = next(i for i in range(256) if i not in used)
    data = pillow_png(image, transparency=unused)
    assert b"tRNS" in data
    expected = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(decode_image(data, name="x.png", params=PARAMS), expected)


def test_trailing_data_after_the_end_chunk_still_decodes() -> None:
    data = pillow_png(Image.fromarray(rgb_image())) + b"\x00" * 100 + b"IEND more"
    np.testing.assert_array_equal(decode_image(data, name="x.png", params=PARAMS), rgb_image())
