"""number_generator speed against a naive baseline measured in the same run.

The baseline is what a straightforward implementation does: on every call it re-indexes MNIST
(finds the images of each digit), crops and inverts the chosen images, and concatenates them;
images are saved one at a time with Pillow's default settings, in one process.

Measured (best of a few repeats; the machine may be shared, so the spread is printed too):

1. single ``generate_numbers_sequence`` calls for a 10-digit sequence at width 300 (target
   >= 15,000 calls/s), with a Generator passed in and without an ``rng`` (the process's own
   generator; its baseline is a fresh ``default_rng()`` per call, what the default used to do);
2. ``generate_numbers_batch`` sequences per second (target >= 50,000);
3. the phone-number dataset (``write_phone_dataset``), PNG images per second on every CPU
   available (target >= 8,000 on 2 cores);
4. augmented strips per second against albumentations 2.0.x in the same run (target: 3x; the
   albumentations baseline only augments strips already rendered, ours renders them too).

Usage: ``.venv/bin/python benchmarks/bench_number_generator.py [--quick] [--out-dir DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from number_generator import (
    DigitSource,
    generate_numbers_batch,
    generate_numbers_sequence,
    generate_phone_numbers,
    load_source,
    write_phone_dataset,
)
from number_generator._dataset import default_workers

DIGITS = [0, 9, 0, 1, 2, 3, 4, 5, 6, 7]
SPACING = (2, 8)
WIDTH = 300


def naive_sequence(
    digits: list[int],
    spacing: tuple[int, int],
    width: int,
    images: npt.NDArray[np.uint8],
    labels: npt.NDArray[np.uint8],
    rng: np.random.Generator,
) -> npt.NDArray[np.float32]:
    """The baseline: re-index MNIST, crop and invert on every call, then concatenate."""
    parts: list[npt.NDArray[np.float32]] = []
    for j, digit in enumerate(digits):
        candidates = np.flatnonzero(labels == digit)
        image = images[rng.choice(candidates)].astype(np.float32) / 255.0
        columns = np.flatnonzero(image.max(axis=0) > 0)
        parts.append(1.0 - image[:, columns[0] : columns[-1] + 1])
        if j < len(digits) - 1:
            parts.append(np.ones((28, int(rng.integers(spacing[0], spacing[1] + 1))), np.float32))
    row = np.concatenate(parts, axis=1)
    if row.shape[1] > width:
        raise ValueError("does not fit")
    pad = width - row.shape[1]
    left = np.ones((28, pad // 2), np.float32)
    right = np.ones((28, pad - pad // 2), np.float32)
    return np.concatenate([left, row, right], axis=1).astype(np.float32)


def _cpu_seconds() -> float:
    """CPU time of this process (fine-grained) and of its finished children (the workers)."""
    children = os.times()
    return time.process_time() + children.children_user + children.children_system


def best_rate(
    work: Callable[[], int],
    repeats: int,
    cleanup: Callable[[], None] = lambda: None,
    cores: int = 1,
) -> tuple[float, float, float]:
    """Items per second over ``repeats`` runs of ``work`` (which returns its item count):
    (best wall-clock rate, worst wall-clock rate, best rate per CPU-second times ``cores``).

    The last is what ``cores`` otherwise idle cores would give: on a shared machine the
    wall-clock rate drops with other people's load, the CPU-time rate much less.
    ``cleanup`` runs after each repeat, untimed.
    """
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), _cpu_seconds()
        items = work()
        wall.append(items / (time.perf_counter() - start))
        cpu.append(items * cores / max(_cpu_seconds() - start_cpu, 1e-9))
        cleanup()
    return max(wall), min(wall), max(cpu)


def report(
    name: str, ours: tuple[float, float, float], base: tuple[float, float, float], target: float
) -> None:
    verdict = "meets" if ours[0] >= target else "below"
    cpu_verdict = "meets" if ours[2] >= target else "below"
    print(
        f"{name:<32} {ours[0]:>9,.0f}/s (worst {ours[1]:>8,.0f}) | idle-core estimate "
        f"{ours[2]:>9,.0f}/s | baseline {base[0]:>7,.0f}/s  x{ours[0] / base[0]:>5.1f} | "
        f"target {target:>6,.0f}: {verdict} (estimate: {cpu_verdict})"
    )


def bench_augmentation(quick: bool, repeats: int) -> None:
    """Augmented 10-digit strips (width 300) per second: ``number_generator.augment`` against
    albumentations 2.0.x (``Compose`` of ElasticTransform + Affine + GaussNoise, p=1 each, one
    strip per call as it is used) in the same run. albumentations is the ``bench`` extra."""
    try:
        import albumentations as alb
    except ModuleNotFoundError:
        print("augmentation: albumentations is not installed (pip install -e '.[bench]'); skipped")
        return
    from number_generator.augment import (
        Affine,
        Augment,
        AugmentLike,
        Elastic,
        GaussianNoise,
    )

    strips = 500 if quick else 2_000
    digits = np.random.default_rng(0).integers(0, 10, size=(strips, 10))
    rng = np.random.default_rng(1)
    plain = generate_numbers_batch(digits, SPACING, WIDTH, rng=rng)
    same_ops = Augment(
        elastic=Elastic(p=1.0), affine=Affine(p=1.0), stroke=None, blur=None,
        noise=GaussianNoise(p=1.0), salt_pepper=None, background=None, occlusion=None,
    )  # fmt: skip
    compose = alb.Compose([
        alb.ElasticTransform(p=1.0),
        alb.Affine(rotate=(-10, 10), shear=(-15, 15), scale=(0.85, 1.1), p=1.0),
        alb.GaussNoise(p=1.0),
    ])  # fmt: skip
    compose(image=plain[0])

    def theirs() -> int:
        for image in plain:
            compose(image=image)
        return strips

    def ours(augment: AugmentLike) -> Callable[[], int]:
        def run() -> int:
            generate_numbers_batch(digits, SPACING, WIDTH, rng=rng, augment=augment)
            return strips

        return run

    print(f"augmentation: albumentations {alb.__version__}, {strips:,} strips of 10 digits, "
          f"width {WIDTH}")  # fmt: skip
    base = best_rate(theirs, max(2, repeats - 1))
    print(f"albumentations baseline: {base[0]:,.0f}/s wall (worst {base[1]:,.0f}), "
          f"{base[2]:,.0f}/s per CPU-second")  # fmt: skip
    report("augment, same 3 ops (p=1), render+aug", best_rate(ours(same_ops), repeats), base,
           3 * base[0])  # fmt: skip
    report("augment, preset medium, render+aug", best_rate(ours("medium"), repeats), base,
           3 * base[0])  # fmt: skip
    report("augment, preset heavy, render+aug", best_rate(ours("heavy"), repeats), base,
           3 * base[0])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and images")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="where the PNG datasets are written (default: the system temporary directory); "
        "a tmpfs such as /dev/shm separates encoding speed from the disk's",
    )
    args = parser.parse_args()
    repeats = 2 if args.quick else 4
    source: DigitSource = load_source()  # prepared once, like any long-running user
    images, labels = source.images, source.labels
    rng = np.random.default_rng(0)
    cpus = default_workers()
    print(f"number_generator benchmark: {source!r}, {cpus} CPUs available, load {os.getloadavg()}")

    # 1. single calls --------------------------------------------------------------------------
    calls = 5_000 if args.quick else 20_000

    def single() -> int:
        for _ in range(calls):
            generate_numbers_sequence(DIGITS, SPACING, WIDTH, rng=rng)
        return calls

    def naive_single() -> int:
        for _ in range(calls // 10):
            naive_sequence(DIGITS, SPACING, WIDTH, images, labels, rng)
        return calls // 10

    report("single call, 10 digits, width 300", best_rate(single, repeats),
           best_rate(naive_single, 2), 15_000)  # fmt: skip

    # 1b. single calls without an rng: the process's own generator, against what a fresh
    # default_rng() per call (the old behaviour, OS entropy every time) costs in the same run.
    def single_no_rng() -> int:
        for _ in range(calls):
            generate_numbers_sequence(DIGITS, SPACING, WIDTH)
        return calls

    def single_fresh_rng() -> int:
        for _ in range(calls):
            generate_numbers_sequence(DIGITS, SPACING, WIDTH, rng=np.random.default_rng())
        return calls

    report("single call, no rng", best_rate(single_no_rng, repeats),
           best_rate(single_fresh_rng, repeats), 15_000)  # fmt: skip

    # 2. batch ---------------------------------------------------------------------------------
    rows = np.tile(DIGITS, (1_000, 1))
    batches = 10 if args.quick else 40

    def batch() -> int:
        for _ in range(batches):
            generate_numbers_batch(rows, SPACING, WIDTH, rng=rng)
        return batches * len(rows)

    report("batch, sequences", best_rate(batch, repeats), best_rate(naive_single, 2), 50_000)

    # 2b. augmentation against albumentations ---------------------------------------------------
    bench_augmentation(args.quick, repeats)

    # 3. phone-number PNG dataset --------------------------------------------------------------
    count = 20_000 if args.quick else 60_000
    scratch = Path(tempfile.mkdtemp(prefix="bench-ng-", dir=args.out_dir))
    print(f"PNG datasets are written under {scratch}")
    try:
        numbers = [n.digits for n in generate_phone_numbers(500, rng=1)]

        def clean() -> None:
            for path in scratch.iterdir():
                shutil.rmtree(path)

        def naive_dataset() -> int:
            directory = scratch / f"naive-{time.perf_counter_ns()}"
            directory.mkdir()
            for i, digits in enumerate(numbers):
                image = naive_sequence(
                    [int(c) for c in digits], SPACING, WIDTH, images, labels, rng
                )
                Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(
                    directory / f"{i:06d}_{digits}.png"
                )
            return len(numbers)

        base = best_rate(naive_dataset, 2, clean)
        for workers, level in ((cpus, 1), (1, 1), (cpus, 0)):

            def dataset(workers: int = workers, level: int = level) -> int:
                directory = scratch / f"ours-{time.perf_counter_ns()}"
                write_phone_dataset(directory, count, SPACING, WIDTH, rng=rng,
                                    workers=workers, compress_level=level)  # fmt: skip
                return count

            name = f"phone PNGs, {workers} worker(s), zlib {level}"
            rate = best_rate(dataset, max(2, repeats - 1), clean, cores=workers)
            report(name, rate, base, 8_000)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
