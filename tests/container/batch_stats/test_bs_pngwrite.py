"""Generated PNG files: unfiltered rows in stored deflate blocks, read back exactly by Pillow."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from batch_stats.engine import (
    EngineParams,
    batch_ids,
    decode_image,
    image_names,
    synthetic_image,
    write_synthetic_run,
)
from batch_stats.engine._pngwrite import encode_rgb_png, png_rows, write_rgb_png
from PIL import Image


@pytest.mark.parametrize(("height", "width"), [(1, 1), (3, 30_000), (256, 512), (17, 5)])
def test_any_rgb_image_reads_back_exactly(height: int, width: int) -> None:
    # 30,000 pixels make rows longer than one stored deflate block (65,535 bytes).
    rows, pixels = png_rows(height, width)
    pixels[...] = np.random.default_rng(height).integers(0, 256, (height, width, 3), np.uint8)
    data = encode_rgb_png(rows)
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (width, height))
        np.testing.assert_array_equal(np.asarray(image), pixels)
    with Image.open(io.BytesIO(data)) as image:
        image.verify()  # every chunk's CRC
    # Every row unfiltered (filter type 0), stored without compression.
    (length,) = struct.unpack_from(">I", data, 33)
    raw = zlib.decompress(data[41 : 41 + length])
    assert raw == rows.tobytes()
    assert length <= len(raw) + 5 * (len(raw) // 65_535 + 1) + 6  # stored, not compressed


def test_generated_run_reads_back_as_the_synthetic_images(tmp_path: Path) -> None:
    params = EngineParams(batches=2, images_per_batch=3, image_height=200, image_width=210)
    write_synthetic_run(tmp_path / "run", 5, params=params)
    for batch_id in batch_ids(params):
        for name in image_names(params):
            path = tmp_path / "run" / batch_id / name
            expected = synthetic_image(5, batch_id, name, params=params)
            with Image.open(path) as image:
                np.testing.assert_array_equal(np.asarray(image), expected)
            decoded = decode_image(path.read_bytes(), name=name, params=params)
            np.testing.assert_array_equal(decoded, expected)


def test_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    rows, _ = png_rows(2, 2)
    (tmp_path / "x.png").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        write_rgb_png(tmp_path / "x.png", rows)
    assert (tmp_path / "x.png").read_bytes() == b"keep"


def test_only_png_rows_buffers_are_encoded() -> None:
    with pytest.raises(ValueError, match="png_rows"):
        encode_rgb_png(np.zeros((2, 6), np.uint8))
