"""The CRNN recogniser: a short training run lowers the CTC loss, a saved model loads and
predicts the same, and the commands around it (training is a benchmark, not a test)."""

from __future__ import annotations

import json
import os
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from number_generator import DigitSource, generate_numbers_sequence, save_png

torch = pytest.importorskip("torch")

from number_generator.recognizer import (  # noqa: E402
    CRNN,
    Config,
    Recognizer,
    StripStream,
    decode,
    main,
    make_batch,
    one_cycle,
    recognize_main,
    train,
)

#: The full MNIST files (train and test), in the ``shared/`` folder beside the checkout where the
#: project's machines and CI have them; NUMBER_GENERATOR_TEST_MNIST_DIR overrides it.
FULL_MNIST = Path(
    os.environ.get(
        "NUMBER_GENERATOR_TEST_MNIST_DIR",
        Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist",
    )
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> object:
    """One intra-op thread: on a busy shared machine, spinning OpenMP threads make small
    batches many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(source: DigitSource) -> tuple[Recognizer, list[float]]:
    result = train(config=Config(augment=None), source=source, steps=30, batch_size=16, seed=1)
    return result.recognizer, result.losses


def test_a_short_training_run_lowers_the_loss(trained: tuple[Recognizer, list[float]]) -> None:
    _, losses = trained
    assert len(losses) == 30
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0


def test_a_saved_model_loads_and_predicts_the_same(
    trained: tuple[Recognizer, list[float]], source: DigitSource, tmp_path: Path
) -> None:
    recognizer, _ = trained
    images, truth = make_batch(12, recognizer.config, source, np.random.default_rng(3))
    before = recognizer.predict(images)
    path = recognizer.save(tmp_path / "model.pt")
    loaded = Recognizer.load(path)
    assert loaded.config == recognizer.config
    assert loaded.predict(images) == before
    assert all(p.isdigit() or p == "" for p in before)
    assert len(truth) == 12


def test_a_model_of_other_layers_is_refused_with_a_clear_error(
    source: DigitSource, tmp_path: Path
) -> None:
    narrow = Config(channels=(8, 16, 24, 32))
    path = Recognizer(CRNN(narrow), narrow).save(tmp_path / "model.pt")
    saved = torch.load(path, weights_only=True)
    saved["config"]["channels"] = [16, 32, 48, 64]  # config and weights no longer agree
    torch.save(saved, path)
    with pytest.raises(ValueError, match="another version of the recogniser"):
        Recognizer.load(path)


def test_the_strip_stream_gives_the_batches_the_loop_would_make(source: DigitSource) -> None:
    config = Config()
    gen = np.random.default_rng(5)
    expected = [make_batch(8, config, source, gen) for _ in range(4)]
    with StripStream(8, config, source, np.random.default_rng(5), ahead=2) as strips:
        got = [strips.next() for _ in range(4)]
    for (images, labels), (want_images, want_labels) in zip(got, expected, strict=True):
        assert labels == want_labels
        np.testing.assert_array_equal(images, want_images)
        assert images.shape == (8, 28, config.width)


def test_an_error_while_making_strips_reaches_the_training_loop(source: DigitSource) -> None:
    config = Config(width=20)  # too narrow for 10 digits of MNIST
    with (
        pytest.raises(ValueError, match="too small"),
        StripStream(4, config, source, np.random.default_rng(0)) as s,
    ):
        s.next()


def test_the_one_cycle_schedule_rises_then_falls_to_almost_nothing() -> None:
    rates = [one_cycle(f / 100, 3e-3) for f in range(101)]
    top = int(np.argmax(rates))
    assert rates[0] == pytest.approx(3e-3 / 25)
    assert rates[top] == pytest.approx(3e-3)
    assert top == 15
    assert all(a < b for a, b in pairwise(rates[: top + 1]))
    assert all(a > b for a, b in pairwise(rates[top:]))
    assert rates[-1] == pytest.approx(3e-7)
    assert one_cycle(2.0, 3e-3) == rates[-1]


def test_greedy_decoding_merges_repeats_and_drops_blanks() -> None:
    # columns: blank, 0, 0, blank, 0, 5, 5, blank -> "005"
    classes = [0, 1, 1, 0, 1, 6, 6, 0]
    log_probs = torch.full((len(classes), 1, 11), -10.0)
    for t, c in enumerate(classes):
        log_probs[t, 0, c] = 0.0
    assert decode(log_probs) == ["005"]


def test_recognize_numbers_command(
    trained: tuple[Recognizer, list[float]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recognizer, _ = trained
    model = recognizer.save(tmp_path / "model.pt")
    image = generate_numbers_sequence([0, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8], (1, 5), 280, rng=1)
    save_png(image, tmp_path / "a.png")
    assert recognize_main([str(tmp_path / "a.png"), "--model", str(model)]) == 0
    path, digits = capsys.readouterr().out.rstrip("\n").split("\t")
    assert path == str(tmp_path / "a.png")
    assert digits == recognizer.predict(image[None])[0]
    assert recognize_main([str(tmp_path / "a.png"), "--model", str(tmp_path / "none.pt")]) == 1
    assert "no model at" in capsys.readouterr().err
    (tmp_path / "bad.png").write_text("not an image")
    assert recognize_main([str(tmp_path / "bad.png"), "--model", str(model)]) == 1
    assert "recognize-numbers: error:" in capsys.readouterr().err


@pytest.mark.skipif(
    not (FULL_MNIST / "train-images-idx3-ubyte.gz").is_file(), reason="needs the full MNIST files"
)
def test_train_command_writes_model_metrics_and_preview(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--steps", "3", "--batch-size", "8", "--eval-count", "24", "--out",
            str(tmp_path), "--mnist-dir", str(FULL_MNIST), "--augment", "none",
            "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 3
    assert 0.0 <= metrics["test_exact_sequence_accuracy"] <= 1.0
    assert "t10k[5000:]" in metrics["test_digits"]
    assert (tmp_path / "predictions.png").stat().st_size > 0
    assert Recognizer.load(tmp_path / "model.pt").config.augment is None
    capsys.readouterr()


def test_preview_shows_what_a_model_reads(
    trained: tuple[Recognizer, list[float]], tmp_path: Path
) -> None:
    from PIL import Image

    from number_generator.__main__ import main as number_generator
    from number_generator._preview import ERROR_COLOUR

    model = trained[0].save(tmp_path / "model.pt")
    sheet = tmp_path / "sheet.png"
    argv = ["preview", str(sheet), "--count", "4", "--seed", "2", "--model", str(model)]
    assert number_generator(argv) == 0
    with Image.open(sheet) as image:
        pixels = np.asarray(image.convert("RGB"))
    # A model trained for 30 small batches misreads most strips: their captions are magenta
    # (text is anti-aliased, so look for the hue).
    r, g, b = (pixels[:, :, i].astype(int) for i in range(3))
    assert ERROR_COLOUR[1] < 90
    assert ((r > 120) & (g < 90) & (b > 120)).sum() > 20
