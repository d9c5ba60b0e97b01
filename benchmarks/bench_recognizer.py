"""Where a training step of the digit recogniser spends its CPU time, against the earlier layout.

A step is: make a batch of phone-number strips (``make_batch``, ``light`` augmentation), then
the CRNN's forward and backward pass with CTC and an AdamW update. The baseline is the same CRNN
in the earlier layout (each block convolution -> batch norm -> ReLU -> max pooling, default
NCHW maps), measured in the same run. Both use one torch thread (``--threads``) and CPU time of
this process (the machine may be shared), best of ``--repeats`` runs of ``--steps`` steps.

Usage: ``.venv/bin/python benchmarks/bench_recognizer.py [--quick] [--threads N]``
(needs the ``train`` extra).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from number_generator import load_source
from number_generator.recognizer import BLANK, CRNN, Config, make_batch


class EarlierCRNN(CRNN):
    """The earlier layout: pooling after batch norm and ReLU, NCHW maps."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        c1, c2, c3, c4 = config.channels
        layers: list[nn.Module] = []
        for cin, cout, pool in (
            (1, c1, (2, 2)),
            (c1, c2, (2, 2)),
            (c2, c3, (2, 1)),
            (c3, c4, None),
        ):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)]
            layers.append(nn.ReLU(inplace=True))
            if pool is not None:
                layers.append(nn.MaxPool2d(pool))
        self.features = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features(1.0 - images)
        b, c, h, t = x.shape
        x = x.permute(0, 3, 1, 2).reshape(b, t, c * h)
        x = torch.relu(self.project(x))
        x, _ = self.rnn(x)
        scores: torch.Tensor = self.classify(x).log_softmax(dim=2)
        return scores.permute(1, 0, 2)


def cpu_ms_per_call(work: Callable[[], object], calls: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(calls):
            work()
        best = min(best, (time.process_time() - start) / calls * 1000)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps, repeats = (4, 2) if args.quick else (10, 3)
    config, source = Config(), load_source()
    gen = np.random.default_rng(0)
    batches = [make_batch(args.batch_size, config, source, gen) for _ in range(4)]
    ctc = nn.CTCLoss(blank=BLANK, zero_infinity=True)

    def stepper(model: CRNN) -> Callable[[], object]:
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
        state = {"i": 0}

        def step() -> object:
            images, labels = batches[state["i"] % len(batches)]
            state["i"] += 1
            targets = torch.tensor([int(c) + 1 for text in labels for c in text])
            lengths = torch.tensor([len(text) for text in labels])
            log_probs = model(torch.from_numpy(images).unsqueeze(1))
            inputs = torch.full((len(labels),), log_probs.shape[0], dtype=torch.long)
            loss = ctc(log_probs, targets, inputs, lengths)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            return loss

        step()  # warm-up (oneDNN picks its kernels)
        return step

    torch.manual_seed(0)
    ours = cpu_ms_per_call(stepper(CRNN(config)), steps, repeats)
    torch.manual_seed(0)
    base = cpu_ms_per_call(stepper(EarlierCRNN(config)), steps, repeats)
    strips = cpu_ms_per_call(
        lambda: make_batch(args.batch_size, config, source, gen), steps, repeats
    )
    print(f"batch {args.batch_size}, {torch.get_num_threads()} torch thread(s), CPU ms per step")
    print(f"  forward+backward+update   {ours:7.0f} ms | earlier layout {base:7.0f} ms  "
          f"x{base / ours:4.1f} less CPU")  # fmt: skip
    print(f"  making the strips (light) {strips:7.0f} ms (in a background thread while training)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
