"""Worker throughput on 100 real PNGs against PNG decoding alone, measured in the same run.

Run: ``.venv/bin/python benchmarks/bench_worker.py`` (or ``make bench``).

* Baselines: decoding the 100 PNGs with Pillow, from bytes already in memory, one after the
  other: into numpy arrays (``np.asarray(Image.open(...))``, which copies the pixels out of
  Pillow's memory) and Pillow's decoding alone (``Image.open(...).load()``, no copy).
* Worker: ``RunProcessor.process`` on a run message for the same 100 files, with one download
  thread (so both sides use one core), reading the objects from local files (an ObjectStore over
  a folder: the I/O part is local disk, not moto's HTTP server, whose per-request cost would
  measure moto), validating and decoding with the engine, squares + crop + counts, per-batch
  statistics, Parquet written to the folder, the rows upserted into a real PostgreSQL
  (pgserver), the notification built and handed to a notifier that keeps it in memory.

Everything that is not decoding must cost at most 15% of the decoding time, against both
baselines, in CPU time of this process (everything runs on one thread; on an idle machine wall
and CPU time agree, on a shared one the wall clock also counts the time spent waiting for a
core). Each side is timed ``REPEATS`` times, interleaved, and the best time of each is compared;
both clocks are printed.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from batch_counter.counter import Shard, build_run_message
from batch_stats.engine import (
    EngineParams,
    ImagePlan,
    batch_ids,
    count_crop,
    decode_image,
    draw_plan,
    image_names,
    image_rng,
    run_seed,
    synthetic_image,
)
from batch_stats.local.services import embedded_postgres
from batch_stats.worker.adapters import ObjectMissingError
from batch_stats.worker.app import tune_allocator
from batch_stats.worker.database import ResultsDatabase
from batch_stats.worker.messages import ImageRef, RunMessage
from batch_stats.worker.runner import RunProcessor
from batch_stats.worker.tracking import Reported, RunInfo
from PIL import Image

RUN_ID = "bench-run"
PARAMS = EngineParams(images_per_batch=20, batches=5)  # 100 images of 256 x 512
REPEATS = 9
BUDGET = 0.15


class FolderStore:
    """ObjectStore over a local folder: ``<root>/<bucket>/<key>``."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def get(self, bucket: str, key: str) -> bytes:
        try:
            return (self._root / bucket / key).read_bytes()
        except FileNotFoundError:
            raise ObjectMissingError(key) from None

    def put(
        self, bucket: str, key: str, data: bytes, *, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        del content_type, metadata
        path = self._root / bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def copy(self, *, bucket: str, key: str, to_key: str, metadata: Mapping[str, str]) -> None:
        self.put(bucket, to_key, self.get(bucket, key), content_type="", metadata=metadata)


class MemoryTracking:
    """The tracking table's reads, from the written files (the run by reference)."""

    def __init__(self, batches: Mapping[str, list[str]]) -> None:
        self._batches = batches

    def run_info(self, run_id: str) -> RunInfo:
        total = sum(len(keys) for keys in self._batches.values())
        return RunInfo(run_id=run_id, state="DISPATCHED", image_count=total, manifest_sha=None)

    def objects(self, run_id: str, *, first_batch: str, last_batch: str) -> Iterator[ImageRef]:
        for batch_id in sorted(self._batches):
            if first_batch <= batch_id <= last_batch:
                for key in sorted(self._batches[batch_id]):
                    yield ImageRef(key=key, batch_id=batch_id, name=key.rsplit("/", 1)[1])

    def batch_counts(self, run_id: str) -> dict[str, int]:
        return {batch_id: len(keys) for batch_id, keys in self._batches.items()}

    def reported(self, run_id: str) -> Reported:
        return Reported(bad_keys=[], late_uploads=[])


class MemoryNotifier:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def publish(self, *, subject: str, message: str) -> str:
        del subject
        self.messages.append(message)
        return str(len(self.messages))


def write_pngs(root: Path) -> dict[str, list[str]]:
    seed = run_seed(RUN_ID)
    batches: dict[str, list[str]] = {}
    for batch_id in batch_ids(PARAMS):
        for name in image_names(PARAMS):
            key = f"uploads/{RUN_ID}/{batch_id}/{name}"
            path = root / "raw" / key
            path.parent.mkdir(parents=True, exist_ok=True)
            # Pillow's default compression: what a real PNG upload looks like.
            Image.fromarray(synthetic_image(seed, batch_id, name, params=PARAMS)).save(path)
            batches.setdefault(batch_id, []).append(key)
    return batches


def decode_only(blobs: list[bytes]) -> None:
    """The first baseline: Pillow decodes each PNG into a numpy array."""
    for data in blobs:
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image)
        assert pixels.shape == (PARAMS.image_height, PARAMS.image_width, 3)


def load_only(blobs: list[bytes]) -> None:
    """The second baseline: Pillow decodes each PNG into its own memory (no numpy array)."""
    for data in blobs:
        with Image.open(io.BytesIO(data)) as image:
            image.load()


def timed(function: Callable[[], object]) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def breakdown(
    processor: RunProcessor,
    message: RunMessage,
    store: FolderStore,
    blobs: list[bytes],
    batches: Mapping[str, list[str]],
) -> dict[str, Callable[[], object]]:
    """The parts of the worker's time, each timed on its own (for the report only)."""
    params = PARAMS
    refs = list(
        MemoryTracking(batches).objects(
            message.run_id, first_batch=message.first_batch, last_batch=message.last_batch
        )
    )
    images = [decode_image(data, name="x.png", params=params) for data in blobs[:10]]
    seed = run_seed(message.run_id)
    height, width = params.image_height, params.image_width

    def draws() -> list[ImagePlan]:
        return [
            draw_plan(
                image_rng(seed, ref.batch_id, ref.name), height=height, width=width, params=params
            )
            for ref in refs
        ]

    plans = draws()

    def counts() -> None:
        for i, plan in enumerate(plans):
            count_crop(images[i % 10], plan=plan, params=params)

    return {
        "read the files": lambda: [store.get("raw", ref.key) for ref in refs],
        "engine decode_image (checks + decode)": lambda: [
            decode_image(data, name="x.png", params=params) for data in blobs
        ],
        "squares + crop draws (all images first)": draws,
        "crop counts (count_crop)": counts,
    }


def main() -> int:
    # As the worker's entry point does (python -m batch_stats.worker), for both sides.
    tuned = tune_allocator()
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        root = Path(tmp)
        batches = write_pngs(root)
        keys = [key for batch in batches.values() for key in batch]
        total_bytes = sum((root / "raw" / key).stat().st_size for key in keys)
        message = RunMessage.from_json(
            build_run_message(
                run_id=RUN_ID,
                bucket="raw",
                shard=0,
                plan=[Shard(min(batches), max(batches), len(keys))],
                failure=None,
                now=datetime.now(UTC),
            )
        )
        with embedded_postgres(root / "pgdata") as url:
            database = ResultsDatabase.from_url(url)
            database.migrate()
            notifier = MemoryNotifier()
            processor = RunProcessor(
                objects=FolderStore(root),
                database=database,
                notifier=notifier,
                tracking=MemoryTracking(batches),
                raw_bucket="raw",
                results_bucket="results",
                concurrency=1,
                params=PARAMS,
            )
            blobs = [(root / "raw" / key).read_bytes() for key in keys]
            decode_only(blobs)  # warm-up (imports, caches)
            processor.process(message)
            parts = breakdown(processor, message, FolderStore(root), blobs, batches)
            times: dict[str, list[tuple[float, float]]] = {
                name: [] for name in ("decode", "load", "worker", *parts)
            }
            for _ in range(REPEATS):
                times["decode"].append(timed(lambda: decode_only(blobs)))
                times["load"].append(timed(lambda: load_only(blobs)))
                times["worker"].append(timed(lambda: processor.process(message)))
                for name, part in parts.items():
                    times[name].append(timed(part))
            outcome = processor.process(message)
            assert outcome.images_processed == len(keys)
            assert json.loads(notifier.messages[0])["status"] == "finished"

    best = {name: (min(t[0] for t in ts), min(t[1] for t in ts)) for name, ts in times.items()}
    worker = best["worker"]
    n = len(keys)
    print(
        f"{n} PNGs of {PARAMS.image_height}x{PARAMS.image_width} RGB, "
        f"{total_bytes / n / 1024:.0f} KiB each; best of {REPEATS}; one worker thread; "
        f"allocator tuned: {tuned}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"  {'':40s} {'wall ms':>9s} {'CPU ms':>9s} {'img/s':>7s}")
    rows = {
        "np.asarray(Image.open(...))": best["decode"],
        "Image.open(...).load()": best["load"],
        "worker run (I/O: local files)": worker,
    }
    for label, (wall, cpu) in rows.items():
        print(f"  {label:40s} {wall * 1e3:9.1f} {cpu * 1e3:9.1f} {n / wall:7.1f}")
    print("  parts of the run, timed separately:")
    for name in parts:
        wall, cpu = best[name]
        print(f"    {name:38s} {wall * 1e3:9.1f} {cpu * 1e3:9.1f}")
    engine = best["engine decode_image (checks + decode)"]
    verdicts = []
    for label, key in (("np.asarray(Image.open)", "decode"), ("Image.load()", "load")):
        base = best[key]
        overhead = (worker[0] - base[0]) / base[0]
        overhead_cpu = (worker[1] - base[1]) / base[1]
        checks = (engine[0] - base[0]) / base[0], (engine[1] - base[1]) / base[1]
        verdicts.append(overhead_cpu <= BUDGET)
        print(
            f"  against {label}: everything but decoding {overhead:+.1%} wall, {overhead_cpu:+.1%}"
            f" CPU (of which decode_image's checks and export {checks[0]:+.1%} wall, "
            f"{checks[1]:+.1%} CPU)"
        )
    ok = all(verdicts)
    print(
        f"  budget {BUDGET:.0%} against both baselines, in CPU time (one thread; the wall clock "
        f"also counts waiting for a core on a busy machine): {'OK' if ok else 'OVER'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
