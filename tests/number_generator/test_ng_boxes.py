"""Per-digit ink boxes: from the API, in the dataset's boxes.jsonl, and drawn on a preview."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from number_generator import (
    DigitSource,
    LabelledBatch,
    LabelledImage,
    generate_numbers_batch,
    generate_numbers_sequence,
    write_phone_dataset,
)
from number_generator._preview import BOX_COLOUR, save_preview


def _ink_box(image: npt.NDArray[np.float32]) -> list[int]:
    rows = np.flatnonzero((image < 1.0).any(axis=1))
    cols = np.flatnonzero((image < 1.0).any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def _alone(source: DigitSource, glyph: int, start: int, width: int) -> npt.NDArray[np.float32]:
    """The glyph rendered alone on a white strip at column ``start``."""
    canvas = np.ones((28, width), dtype=np.float32)
    w = int(source.widths[glyph])
    canvas[:, start : start + w] = source.glyphs[glyph, :, :w] / np.float32(255)
    return canvas


def _check_boxes(
    image: npt.NDArray[np.float32],
    digits: list[int],
    boxes: npt.NDArray[np.int32],
    source: DigitSource,
    decoder: Any,
) -> None:
    decoded = decoder.decode(image, digits, source)
    assert boxes.shape == (len(digits), 4)
    outside = np.ones(image.shape[1], dtype=bool)
    for j, (glyph, start) in enumerate(zip(decoded.glyphs, decoded.starts, strict=True)):
        alone = _alone(source, glyph, start, image.shape[1])
        assert boxes[j].tolist() == _ink_box(alone), f"digit {j}"
        x0, y0, x1, y1 = boxes[j].tolist()
        np.testing.assert_array_equal(image[y0:y1, x0:x1], alone[y0:y1, x0:x1])
        outside[x0:x1] = False
    assert (image[:, outside] == 1.0).all(), "no ink outside the boxes"


def test_batch_boxes_are_the_ink_of_each_digit_rendered_alone(
    source: DigitSource, decoder: Any
) -> None:
    digits = np.random.default_rng(1).integers(0, 10, size=(40, 7))
    result = generate_numbers_batch(digits, (1, 6), 200, rng=2, align="random", with_boxes=True)
    assert isinstance(result, LabelledBatch)
    assert result.images.shape == (40, 28, 200)
    np.testing.assert_array_equal(result.digits, digits)
    for image, row, boxes in zip(result.images, digits.tolist(), result.boxes, strict=True):
        _check_boxes(image, row, boxes, source, decoder)


def test_single_call_boxes(source: DigitSource, decoder: Any) -> None:
    for seed in range(20):
        result = generate_numbers_sequence([0, 4, 5, 1, 1], (1, 5), 130, rng=seed, with_boxes=True)
        assert isinstance(result, LabelledImage)
        assert result.digits == (0, 4, 5, 1, 1)
        _check_boxes(result.image, [0, 4, 5, 1, 1], result.boxes, source, decoder)
    plain = generate_numbers_sequence([0, 4, 5], (1, 5), 130, rng=3)
    boxed = generate_numbers_sequence([0, 4, 5], (1, 5), 130, rng=3, with_boxes=True)
    np.testing.assert_array_equal(plain, boxed.image)  # the boxes change nothing else


def test_preview_draws_each_box_on_the_enlarged_image(tmp_path: Path) -> None:
    result = generate_numbers_batch([[0, 9, 0], [7, 7, 1]], (2, 4), 100, rng=5, with_boxes=True)
    scale = 3
    path = save_preview(
        tmp_path / "preview.png",
        result.images,
        result.digits.tolist(),
        list(result.boxes),
        scale=scale,
        columns=1,
    )
    with Image.open(path) as sheet:
        pixels = np.asarray(sheet.convert("RGB"))
    red = (pixels == BOX_COLOUR).all(axis=2)
    cell_h = 14 + 28 * scale + 14 + 8
    for i, boxes in enumerate(result.boxes):
        top = i * cell_h + 4 + 14
        for x0, y0, x1, y1 in boxes.tolist():
            corners = [
                (top + y0 * scale, 4 + x0 * scale),
                (top + y1 * scale - 1, 4 + x1 * scale - 1),
            ]
            for y, x in corners:
                assert red[y, x], (i, y, x)
    # Outside the outlines and labels the enlarged digits are still grey levels.
    assert red.sum() < 0.2 * red.size


def test_dataset_writes_boxes_in_label_order(
    tmp_path: Path, source: DigitSource, decoder: Any
) -> None:
    write_phone_dataset(tmp_path / "d", 60, (1, 3), 260, rng=3, workers=2, chunk_size=25)
    with (tmp_path / "d" / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    lines = (tmp_path / "d" / "boxes.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["file"] for r in records] == [r["file"] for r in rows]
    assert [r["digits"] for r in records] == [r["digits"] for r in rows]
    for record in records[:15]:
        with Image.open(tmp_path / "d" / record["file"]) as png:
            image = np.asarray(png).astype(np.float32) / np.float32(255)
        digits = [int(c) for c in record["digits"]]
        boxes = np.array(record["boxes"], dtype=np.int32)
        _check_boxes(image, digits, boxes, source, decoder)


@pytest.mark.parametrize("columns", [1, 3])
def test_preview_rejects_mismatched_inputs(tmp_path: Path, columns: int) -> None:
    images = np.ones((2, 28, 50), dtype=np.float32)
    with pytest.raises(ValueError, match="same length"):
        save_preview(tmp_path / "p.png", images, [[1]], None, columns=columns)


def test_sequence_cli_writes_the_boxes_beside_the_png(
    tmp_path: Path, source: DigitSource, decoder: Any
) -> None:
    from number_generator.cli import sequence_main

    assert sequence_main(["0451", "1", "5", "120", str(tmp_path / "s.png"), "--boxes"]) == 0
    record = json.loads((tmp_path / "s.json").read_text())
    assert record["file"] == "s.png"
    assert record["digits"] == "0451"
    with Image.open(tmp_path / "s.png") as png:
        image = np.asarray(png).astype(np.float32) / np.float32(255)
    _check_boxes(image, [0, 4, 5, 1], np.array(record["boxes"], np.int32), source, decoder)
    assert sequence_main(["0451", "1", "5", "120", str(tmp_path / "t.png")]) == 0
    assert not (tmp_path / "t.json").exists()


def test_preview_command_fresh_and_from_a_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from number_generator.__main__ import main

    fresh = tmp_path / "fresh.png"
    assert main(["preview", str(fresh), "--count", "4", "--columns", "2", "--seed", "1"]) == 0
    write_phone_dataset(tmp_path / "d", 6, (1, 4), 260, rng=1, workers=1)
    shown = tmp_path / "shown.png"
    assert main(["preview", str(shown), "--dataset", str(tmp_path / "d"), "--count", "3",
                 "--columns", "1", "--scale", "2"]) == 0  # fmt: skip
    with Image.open(fresh) as a, Image.open(shown) as b:
        assert a.size == (2 * (280 * 3 + 8), 2 * (14 + 28 * 3 + 14 + 8))
        assert b.size == (260 * 2 + 8, 3 * (14 + 28 * 2 + 14 + 8))
        red = (np.asarray(b.convert("RGB")) == BOX_COLOUR).all(axis=2)
    # Each box's top-left corner on the first row of the sheet, from boxes.jsonl.
    first = json.loads((tmp_path / "d" / "boxes.jsonl").read_text().splitlines()[0])
    for x0, y0, _, _ in first["boxes"]:
        assert red[4 + 14 + 2 * y0, 4 + 2 * x0]
    capsys.readouterr()
    assert main(["preview", str(tmp_path / "x.png"), "--dataset", str(tmp_path)]) == 1
    assert "not a dataset folder" in capsys.readouterr().err
