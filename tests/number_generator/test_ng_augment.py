"""Augmentation: seeded, within [0, 1], each operation doing what it says, boxes following the
augmented ink, and wired into the batch API, the dataset writer and both commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from number_generator import (
    DigitSource,
    generate_numbers_batch,
    generate_numbers_sequence,
)
from number_generator.augment import (
    PRESETS,
    Affine,
    Augment,
    Background,
    Elastic,
    GaussianNoise,
    SaltPepper,
    Stroke,
    resolve,
)
from number_generator.cli import phone_main, sequence_main

OFF = Augment(elastic=None, affine=None, stroke=None, blur=None, noise=None, salt_pepper=None,
              background=None, occlusion=None)  # fmt: skip
DIGITS = np.random.default_rng(7).integers(0, 10, size=(64, 8))


def _only(**ops: Any) -> Augment:
    return Augment(**{**{f: None for f in OFF.__dataclass_fields__}, **ops})


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_give_float32_in_range_and_are_seeded(preset: str) -> None:
    a = generate_numbers_batch(DIGITS, (1, 6), 240, rng=3, augment=preset)
    b = generate_numbers_batch(DIGITS, (1, 6), 240, rng=3, augment=preset)
    c = generate_numbers_batch(DIGITS, (1, 6), 240, rng=4, augment=preset)
    assert a.dtype == np.float32
    assert a.shape == (64, 28, 240)
    assert a.min() >= 0.0
    assert a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    plain = generate_numbers_batch(DIGITS, (1, 6), 240, rng=3)
    assert not np.array_equal(a, plain)


def test_with_everything_off_the_pixels_are_the_mnist_glyphs(
    source: DigitSource, decoder: Any
) -> None:
    images = generate_numbers_batch(DIGITS[:20], (1, 4), 240, rng=1, augment=OFF, align="left")
    for image, digits in zip(images, DIGITS[:20].tolist(), strict=True):
        exact = np.rint(image * 255) / np.float32(255)
        decoder.decode(exact.astype(np.float32), digits, source)  # every glyph, pixel for pixel


def _ink_bbox(mask: npt.NDArray[np.bool_]) -> list[int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_boxes_follow_the_augmented_ink(preset: str) -> None:
    geometry = PRESETS[preset]
    aug = _only(elastic=geometry.elastic, affine=geometry.affine, stroke=geometry.stroke)
    result = generate_numbers_batch(
        DIGITS, (1, 6), 260, rng=5, augment=aug, align="random", with_boxes=True
    )
    for image, boxes in zip(result.images, result.boxes, strict=True):
        ink = image < 1.0
        outside = np.ones(image.shape[1], dtype=bool)
        for x0, y0, x1, y1 in boxes.tolist():
            assert 0 <= x0 < x1 <= 260
            assert 0 <= y0 < y1 <= 28
            alone = np.zeros_like(ink)
            alone[:, x0:x1] = ink[:, x0:x1]  # gaps >= 1: these columns hold only this digit
            assert _ink_bbox(alone) == [x0, y0, x1, y1]
            outside[x0:x1] = False
        assert not ink[:, outside].any(), "no ink outside the boxes"
        assert (np.diff(boxes[:, [0, 2]].reshape(-1)) >= 0).all(), "boxes left to right"
        assert (boxes[1:, 0] - boxes[:-1, 2] >= 1).all(), "the gaps are between augmented ink"


def test_single_call_and_photometric_boxes() -> None:
    result = generate_numbers_sequence(
        [0, 4, 5, 1], (2, 6), 140, rng=2, augment="heavy", with_boxes=True
    )
    assert result.image.shape == (28, 140)
    assert result.boxes.shape == (4, 4)
    # Paper and noise change pixels, not the boxes: ink is darker inside them on average.
    inside = np.zeros(result.image.shape, dtype=bool)
    for x0, y0, x1, y1 in result.boxes.tolist():
        inside[y0:y1, x0:x1] = True
    assert result.image[inside].mean() < result.image[~inside].mean() - 0.1


def test_stroke_width_thickens_and_thins() -> None:
    ink = {}
    for amount in (-1.0, 0.0, 1.0):
        aug = _only(stroke=Stroke(p=1.0, amount=(amount, amount)))
        images = generate_numbers_batch(DIGITS, (2, 4), 260, rng=9, augment=aug)
        ink[amount] = float((1.0 - images).sum())
    assert ink[-1.0] < 0.8 * ink[0.0]
    assert ink[1.0] > 1.3 * ink[0.0]


def test_elastic_and_affine_move_the_ink_but_keep_its_amount() -> None:
    plain = generate_numbers_batch(DIGITS, (2, 4), 260, rng=9, augment=OFF)
    for aug in (_only(elastic=Elastic(p=1.0, alpha=(34.0, 34.0))), _only(affine=Affine(p=1.0))):
        moved = generate_numbers_batch(DIGITS, (2, 4), 260, rng=9, augment=aug)
        assert not np.array_equal(moved, plain)
        ratio = float((1 - moved).sum() / (1 - plain).sum())
        assert 0.75 < ratio < 1.3, ratio  # resampling, not erasing or smearing


def test_noise_and_salt_and_pepper_have_the_stated_strength() -> None:
    paper = Background(p=1.0, paper=(0.8, 0.8), texture=(0.0, 0.0), ink=(0.0, 0.0))
    noisy = generate_numbers_batch(
        DIGITS, (2, 4), 260, rng=2, augment=_only(background=paper,
                                                  noise=GaussianNoise(p=1.0, sigma=(0.05, 0.05))),
        with_boxes=True,
    )  # fmt: skip
    columns = _blank_columns(noisy.boxes, 260)
    background = noisy.images[:, :, columns]
    assert abs(float(background.mean()) - 0.8) < 0.005
    assert abs(float(background.std()) - 0.05) < 0.005
    sp = generate_numbers_batch(
        DIGITS, (2, 4), 260, rng=2,
        augment=_only(background=paper, salt_pepper=SaltPepper(p=1.0, amount=(0.02, 0.02))),
        with_boxes=True,
    )  # fmt: skip
    back = sp.images[:, :, _blank_columns(sp.boxes, 260)]
    assert abs(float((back == 0.0).mean()) - 0.01) < 0.003
    assert abs(float((back == 1.0).mean()) - 0.01) < 0.003


def _blank_columns(boxes: npt.NDArray[np.int32], width: int) -> npt.NDArray[np.intp]:
    used = np.zeros(width, dtype=bool)
    for row in boxes:
        for x0, _, x1, _ in row.tolist():
            used[max(0, x0 - 2) : x1 + 2] = True
    return np.flatnonzero(~used)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Elastic(p=1.5), r"elastic.p must be a probability in \[0, 1\]"),
        (lambda: Affine(rotation=(-90.0, 0.0)), r"affine.rotation must be a range .* -45"),
        (lambda: Stroke(amount=(0.5, -0.5)), "stroke.amount must be a range"),
        (lambda: resolve("extreme"), "augment must be one of light, medium, heavy"),
        (lambda: Augment(noise=GaussianNoise(sigma=(0.0, 0.9))), "noise.sigma"),
    ],
)
def test_bad_parameters_say_what_is_allowed(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_commands_and_dataset_take_a_preset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sequence_main(["0451", "2", "6", "140", str(tmp_path / "a.png"), "--seed", "1",
                          "--augment", "heavy", "--boxes"]) == 0  # fmt: skip
    with Image.open(tmp_path / "a.png") as png:
        assert png.size == (140, 28)
    one = tmp_path / "one"
    argv = ["2", "5", "260", "40", str(one), "--seed", "3", "--augment", "medium", "--quiet"]
    assert phone_main([*argv, "--workers", "1"]) == 0
    two = tmp_path / "two"
    argv[4] = str(two)
    assert phone_main([*argv, "--workers", "2"]) == 0
    assert (one / "labels.csv").read_text() == (two / "labels.csv").read_text()
    assert (one / "SHA256SUMS").read_text() == (two / "SHA256SUMS").read_text()
    manifest = json.loads((one / "manifest.json").read_text())
    assert manifest["parameters"]["augment"]["elastic"]["alpha"] == [0.0, 34.0]
    with pytest.raises(SystemExit):
        phone_main(["2", "5", "260", "4", str(tmp_path / "x"), "--augment", "wild"])
    assert "invalid choice" in capsys.readouterr().err
