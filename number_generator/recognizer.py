"""A small CRNN with CTC that reads digit strips: trained on generated phone-number strips built
from MNIST training digits, evaluated on strips built only from MNIST test digits (other writers).

Needs the ``train`` extra (CPU-only PyTorch): ``pip install 'imgpipe[train]'``. Entry points:
``make train-digits`` / ``python -m number_generator.recognizer train`` and
``recognize-numbers IMAGE...``.

Architecture: four 3 x 3 convolutions (16, 32, 48, 64 channels; max pooling 2 x 2, 2 x 2, 2 x 1
right after the first three; batch norm and ReLU), channels-last, turn a 28 x W strip into W/4
columns of 3 x 64 features, a bidirectional GRU (64 per direction) reads them, and a linear
layer scores blank + the ten digits per column; CTC aligns them with the label. Training:
AdamW, a one-cycle learning rate over the steps or the time budget, strips made ahead in a
background thread.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

try:
    import torch
    from torch import nn
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    raise ModuleNotFoundError(
        "number_generator.recognizer needs PyTorch: pip install 'imgpipe[train]' (CPU-only "
        "wheel; see the README)",
        name=exc.name,
    ) from exc

from number_generator._phone import iter_phone_numbers
from number_generator._sequence import render_batch_float
from number_generator._source import HEIGHT, DigitSource, split_sources
from number_generator.augment import PresetName

__all__ = ["CRNN", "Config", "Recognizer", "evaluate", "main", "recognize_main", "train"]

BLANK = 0  # class 0 is CTC's blank; digit d is class d + 1


@dataclass(frozen=True)
class Config:
    """What the model and its training data are (saved with the model)."""

    width: int = 280
    spacing: tuple[int, int] = (1, 5)
    augment: PresetName | None = "light"
    channels: tuple[int, int, int, int] = (16, 32, 48, 64)
    hidden: int = 64


class CRNN(nn.Module):
    """Convolutions, a bidirectional GRU over the columns, per-column class scores."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        c1, c2, c3, c4 = config.channels

        def block(cin: int, cout: int, pool: tuple[int, int] | None) -> list[nn.Module]:
            # Pooling straight after the convolution: batch norm and ReLU then run on a quarter
            # of the values (the first block's full-size maps dominated a step's time).
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False)]
            if pool is not None:
                layers.append(nn.MaxPool2d(pool))
            layers += [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return layers

        self.features = nn.Sequential(
            *block(1, c1, (2, 2)), *block(c1, c2, (2, 2)), *block(c2, c3, (2, 1)),
            *block(c3, c4, None),
        )  # fmt: skip
        self.project = nn.Linear(c4 * 3, 96)
        self.rnn = nn.GRU(96, config.hidden, batch_first=True, bidirectional=True)
        self.classify = nn.Linear(2 * config.hidden, 11)
        for layer in self.features:  # channels-last weights, as the maps in forward()
            if isinstance(layer, nn.Conv2d):
                layer.weight.data = layer.weight.data.contiguous(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, W) ink-on-white in [0, 1] -> (T, B, 11) log-probabilities, T = W // 4."""
        # ink as signal, white as zero; channels-last maps make oneDNN's convolutions and the
        # pooling about 1.7 times faster on CPU than the default layout
        x = (1.0 - images).contiguous(memory_format=torch.channels_last)
        x = self.features(x)
        b, c, h, t = x.shape
        x = x.permute(0, 3, 1, 2).reshape(b, t, c * h)
        x = torch.relu(self.project(x))
        x, _ = self.rnn(x)
        scores: torch.Tensor = self.classify(x).log_softmax(dim=2)
        return scores.permute(1, 0, 2)


def decode(log_probs: torch.Tensor) -> list[str]:
    """Greedy CTC decoding: best class per column, repeats merged, blanks dropped."""
    best = log_probs.argmax(dim=2).permute(1, 0).cpu().numpy()  # (B, T)
    out = []
    for row in best:
        keep = np.concatenate([[True], row[1:] != row[:-1]]) & (row != BLANK)
        out.append("".join(str(int(c) - 1) for c in row[keep]))
    return out


def make_batch(
    count: int, config: Config, source: DigitSource, gen: np.random.Generator
) -> tuple[npt.NDArray[np.float32], list[str]]:
    """``count`` phone-number strips (10 and 11 digits) and their digits."""
    numbers = next(iter_phone_numbers(count, rng=gen, chunk_size=count))
    by_length: dict[int, list[int]] = {}
    for i, n in enumerate(numbers):
        by_length.setdefault(len(n.digits), []).append(i)
    images = np.empty((count, HEIGHT, config.width), dtype=np.float32)
    for index in by_length.values():
        rows = np.array([[int(c) for c in numbers[i].digits] for i in index], dtype=np.intp)
        images[index], _ = render_batch_float(
            rows, config.spacing, config.width, rng=gen, source=source,
            augment=config.augment, warn_bias=False,
        )  # fmt: skip
    return images, [n.digits for n in numbers]


class StripStream:
    """Batches of :func:`make_batch` made ahead in a background thread, so that generating
    strips (numpy, SciPy's filters and Pillow, which release the GIL for most of their work)
    overlaps the model's step instead of adding to it. One producer draws from ``gen`` in order,
    so the batches are the same as made in the loop; an error in the producer is raised by
    :meth:`next`. Use as a context manager (the thread stops on exit)."""

    def __init__(
        self, batch_size: int, config: Config, source: DigitSource, gen: np.random.Generator,
        *, ahead: int = 3,
    ) -> None:  # fmt: skip
        self._queue: queue.Queue[tuple[npt.NDArray[np.float32], list[str]] | BaseException] = (
            queue.Queue(maxsize=ahead)
        )
        self._stop = threading.Event()
        self._args = (batch_size, config, source, gen)
        self._thread = threading.Thread(target=self._produce, name="strips", daemon=True)

    def _produce(self) -> None:
        item: tuple[npt.NDArray[np.float32], list[str]] | BaseException
        while not self._stop.is_set():
            try:
                item = make_batch(*self._args)
            except BaseException as exc:  # handed to the consumer, which raises it
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def next(self) -> tuple[npt.NDArray[np.float32], list[str]]:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def __enter__(self) -> StripStream:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def one_cycle(fraction: float, peak: float, *, warm_up: float = 0.15) -> float:
    """The learning rate at ``fraction`` (0-1) of training: PyTorch's ``OneCycleLR`` shape
    (cosine rise from peak / 25 over ``warm_up``, cosine fall to peak / 10,000), driven by
    the elapsed fraction of a time budget, which ``OneCycleLR`` (counting steps) cannot be."""
    f = min(max(fraction, 0.0), 1.0)
    if f < warm_up:
        low, high, t = peak / 25, peak, f / warm_up
    else:
        low, high, t = peak, peak / 1e4, (f - warm_up) / (1 - warm_up)
    return high + (low - high) * (1 + math.cos(math.pi * t)) / 2


def _targets(labels: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    flat = torch.tensor([int(c) + 1 for text in labels for c in text], dtype=torch.long)
    lengths = torch.tensor([len(text) for text in labels], dtype=torch.long)
    return flat, lengths


class Recognizer:
    """A trained model and its configuration: ``predict`` reads images, ``save``/``load``."""

    def __init__(self, model: CRNN, config: Config) -> None:
        self.model = model
        self.config = config

    @torch.no_grad()
    def predict(self, images: npt.ArrayLike, batch_size: int = 256) -> list[str]:
        """Digits read from (N, 28, W) float images in [0, 1], ink dark."""
        arr = np.asarray(images, dtype=np.float32)
        if arr.ndim != 3 or arr.shape[1] != HEIGHT:
            raise ValueError(f"images must be (N, 28, width) floats, got shape {arr.shape}")
        self.model.eval()
        out: list[str] = []
        for a in range(0, arr.shape[0], batch_size):
            batch = torch.from_numpy(arr[a : a + batch_size]).unsqueeze(1)
            out.extend(decode(self.model(batch)))
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"config": asdict(self.config), "state": self.model.state_dict()}, target)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recognizer:
        try:
            saved = torch.load(Path(path), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no model at {path}: train one with `make train-digits`"
            ) from None
        except (RuntimeError, OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a saved recogniser ({exc})") from exc
        raw = dict(saved["config"])
        config = Config(
            width=int(raw["width"]), spacing=(int(raw["spacing"][0]), int(raw["spacing"][1])),
            augment=raw["augment"], channels=_four(raw["channels"]),
            hidden=int(raw["hidden"]),
        )  # fmt: skip
        model = CRNN(config)
        try:
            model.load_state_dict(saved["state"])
        except RuntimeError as exc:  # layers that do not match this version's CRNN
            raise ValueError(
                f"{path} was saved by another version of the recogniser; retrain it with "
                f"`make train-digits` ({str(exc).splitlines()[0]})"
            ) from exc
        model.eval()
        return cls(model, config)


def _four(values: Sequence[object]) -> tuple[int, int, int, int]:
    a, b, c, d = (int(v) for v in values)  # type: ignore[call-overload]
    return a, b, c, d


@dataclass
class TrainResult:
    recognizer: Recognizer
    losses: list[float]
    steps: int
    samples: int
    seconds: float


def train(
    *,
    config: Config = Config(),
    source: DigitSource,
    steps: int | None = None,
    minutes: float | None = None,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    seed: int = 0,
    log_every: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> TrainResult:
    """Train a :class:`CRNN` on freshly generated strips (never the same twice) from ``source``
    until ``steps`` batches or ``minutes`` of training, whichever is given (both: the first).

    The learning rate follows :func:`one_cycle` up to ``learning_rate`` over the run (its
    fraction of ``steps``, or of ``minutes`` by ``clock``: wall time by default;
    ``time.process_time`` compares settings at equal CPU time). Strips are made ahead in a
    background thread (:class:`StripStream`)."""
    if steps is None and minutes is None:
        raise ValueError("give steps or minutes (or both)")
    if (steps is not None and steps < 1) or (minutes is not None and minutes <= 0):
        raise ValueError(f"steps must be >= 1 and minutes > 0, got {steps} and {minutes}")
    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    model = CRNN(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    ctc = nn.CTCLoss(blank=BLANK, zero_infinity=True)
    losses: list[float] = []
    wall = time.perf_counter()
    start = clock()
    budget = minutes * 60 if minutes is not None else float("inf")
    total_steps = steps if steps is not None else 10**9
    step = 0
    model.train()
    with StripStream(batch_size, config, source, gen) as strips:
        while step < total_steps and (elapsed := clock() - start) < budget:
            fraction = max(step / total_steps, elapsed / budget)
            for group in optimiser.param_groups:
                group["lr"] = one_cycle(fraction, learning_rate)
            images, labels = strips.next()
            targets, target_lengths = _targets(labels)
            log_probs = model(torch.from_numpy(images).unsqueeze(1))
            input_lengths = torch.full((batch_size,), log_probs.shape[0], dtype=torch.long)
            loss = ctc(log_probs, targets, input_lengths, target_lengths)
            optimiser.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
            losses.append(float(loss.item()))
            step += 1
            if log_every and step % log_every == 0:
                recent = float(np.mean(losses[-log_every:]))
                print(f"step {step}: loss {recent:.4f} ({time.perf_counter() - wall:.0f} s)",
                      flush=True)  # fmt: skip
    model.eval()
    return TrainResult(
        Recognizer(model, config), losses, step, step * batch_size, time.perf_counter() - wall
    )


def evaluate(
    recognizer: Recognizer, source: DigitSource, count: int, seed: int = 1
) -> tuple[float, float, npt.NDArray[np.float32], list[str], list[str]]:
    """Exact-sequence accuracy and digit accuracy (1 - edit distance / length) on ``count``
    fresh strips from ``source``, without augmentation; also the images, truths and guesses."""
    config = Config(
        width=recognizer.config.width, spacing=recognizer.config.spacing, augment=None,
        channels=recognizer.config.channels, hidden=recognizer.config.hidden,
    )  # fmt: skip
    images, truth = make_batch(count, config, source, np.random.default_rng(seed))
    guesses = recognizer.predict(images)
    exact = float(np.mean([g == t for g, t in zip(guesses, truth, strict=True)]))
    errors = sum(_edit_distance(g, t) for g, t in zip(guesses, truth, strict=True))
    digits = 1.0 - errors / sum(len(t) for t in truth)
    return exact, digits, images, truth, guesses


def _edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m number_generator.recognizer train``: train, evaluate, save."""
    parser = argparse.ArgumentParser(
        prog="python -m number_generator.recognizer train",
        description="Train the CRNN on strips of MNIST training digits, evaluate it on strips "
        "of MNIST test digits (other writers), save model.pt, metrics.json and predictions.png.",
    )
    parser.add_argument("command", choices=("train",))
    parser.add_argument("--out", type=Path, default=Path("out/recognizer"))
    parser.add_argument("--minutes", type=float, default=30.0, help="training time (default 30)")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many batches")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--learning-rate", type=float, default=3e-3, help="one-cycle peak (default 3e-3)"
    )
    parser.add_argument("--augment", default="light", choices=("none", "light", "medium", "heavy"))
    parser.add_argument("--eval-count", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mnist-dir", type=Path, default=None, help="full MNIST files")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        sources = split_sources(args.mnist_dir)
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"train-digits: error: {exc}", file=sys.stderr)
        return 1
    augment: PresetName | None = None if args.augment == "none" else args.augment
    config = Config(augment=augment)
    load = os.getloadavg()
    cpu_start = time.process_time()
    result = train(
        config=config, source=sources["train"], steps=args.steps, minutes=args.minutes,
        batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed,
        log_every=50,
    )  # fmt: skip
    cpu_seconds = time.process_time() - cpu_start
    load_end = os.getloadavg()
    exact, digit_acc, images, truth, guesses = evaluate(
        result.recognizer, sources["test"], args.eval_count
    )
    val_count = min(1000, args.eval_count)
    val_exact, _, _, _, _ = evaluate(result.recognizer, sources["validation"], val_count, seed=2)
    args.out.mkdir(parents=True, exist_ok=True)
    result.recognizer.save(args.out / "model.pt")
    metrics: dict[str, Any] = {
        "test_exact_sequence_accuracy": exact,
        "test_digit_accuracy": digit_acc,
        "test_strips": args.eval_count,
        "test_digits": "MNIST t10k[5000:] (NIST SD-1 writers, none in training)",
        "validation_exact_sequence_accuracy": val_exact,
        "validation_strips": val_count,
        "train_digits": "MNIST train (60,000)",
        "training_seconds": result.seconds,
        "training_cpu_seconds": cpu_seconds,
        "batch_size": args.batch_size,
        "peak_learning_rate": args.learning_rate,
        "steps": result.steps,
        "samples": result.samples,
        "final_loss": float(np.mean(result.losses[-50:])),
        "config": asdict(config),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_at_start": load,
        "load_average_at_end": load_end,
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", "utf-8")
    from number_generator._preview import save_preview

    wrong = [i for i, (g, t) in enumerate(zip(guesses, truth, strict=True)) if g != t]
    shown = (wrong[:12] + [i for i in range(len(truth)) if i not in wrong])[:24]
    save_preview(
        args.out / "predictions.png", images[shown], [truth[i] for i in shown], None,
        predictions=[guesses[i] for i in shown], scale=2, columns=2,
    )  # fmt: skip
    print(json.dumps(metrics, indent=2))
    return 0


def recognize_main(argv: Sequence[str] | None = None) -> int:
    """``recognize-numbers IMAGE...``: print each image's path and the digits read."""
    parser = argparse.ArgumentParser(
        prog="recognize-numbers",
        description="Read digit strips (PNG or any Pillow format; scaled to 28 pixels high) "
        "with a trained recogniser; prints '<path><TAB><digits>' per image.",
    )
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--model", type=Path, default=Path("out/recognizer/model.pt"))
    args = parser.parse_args(argv)
    from PIL import Image, UnidentifiedImageError

    try:
        recognizer = Recognizer.load(args.model)
    except (FileNotFoundError, ValueError) as exc:
        print(f"recognize-numbers: error: {exc}", file=sys.stderr)
        return 1
    status = 0
    for path in args.images:
        try:
            with Image.open(path) as img:
                gray = img.convert("L")
                if gray.height != HEIGHT:
                    width = max(4, round(gray.width * HEIGHT / gray.height))
                    gray = gray.resize((width, HEIGHT), Image.Resampling.BILINEAR)
                pixels = np.asarray(gray, dtype=np.float32) / np.float32(255)
        except (OSError, UnidentifiedImageError) as exc:
            print(f"recognize-numbers: error: {path}: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"{path}\t{recognizer.predict(pixels[None])[0]}")
    return status


if __name__ == "__main__":
    sys.exit(main())
