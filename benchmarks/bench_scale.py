"""Fan-out: one run of 10,000 PNGs of 256 x 512 processed by 1 and by 2 worker processes, in the
same run of the benchmark.

Run: ``.venv/bin/python benchmarks/bench_scale.py`` (or ``make bench``); ``--images N`` for a
smaller trial, ``--repeats R`` (default 2, interleaved, best of each counted).

* Each configuration gets a fresh run of the same shape (100 batches of 100 images, 10 shards
  of 1,000 images) recorded by the real batch counter (``prerecord`` + ``handle_record`` on S3
  event bodies, as the Lambda gets them; not timed) in the tracking table, which dispatches its
  shards on the FIFO runs queue.
* The workers are separate processes running the container's worker code (``build_worker``:
  the runs queue, the tracking table's Query, the engine, Parquet parts, PostgreSQL, SNS), each
  with one processing thread (``DOWNLOAD_CONCURRENCY=1``), like a one-vCPU Fargate task. They
  are started and ready before the run is dispatched; the time is from the dispatch until the
  run's row in PostgreSQL says ``finished`` (the last shard merged the parts, wrote the run's
  Parquet file and sent the one notification).
* Tracking table, runs queue and topic are moto's (its server process), PostgreSQL is
  real (pgserver). The objects are read from local files (an ObjectStore over a folder, as in
  ``bench_worker.py``), not from moto's S3: moto's CPU per request would otherwise compete with
  the workers for the same two cores. The 10,000 object files are hard links to 100 distinct
  PNGs (Pillow's default compression, about 385 KiB each): each object is still read and
  decoded on its own.

Goal: 2 workers at least 1.8x faster than 1 on a 2-core machine (printed with the load average:
on a shared machine the other jobs take their share of the cores).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.synchronize import Event
from pathlib import Path

import boto3
from batch_counter.aws import DynamoTrackingStore, S3Objects, SqsRunQueue
from batch_counter.counter import RECORD_GROUP_LIMIT, BatchCounter
from batch_stats.engine import EngineParams, run_seed, synthetic_image
from batch_stats.local.resources import create_resources
from batch_stats.local.services import embedded_postgres, moto_server, patched_environ
from batch_stats.worker.app import build_worker, tune_allocator
from batch_stats.worker.config import load_settings
from batch_stats.worker.database import ResultsDatabase
from bench_worker import FolderStore  # the same folder-backed object store
from PIL import Image

BATCHES, DISTINCT, SHARDS, GOAL = 100, 100, 10, 1.8


def worker_process(
    environ: dict[str, str], root: str, per_batch: int, ready: Event, stop: Event
) -> None:
    """One worker, as the container runs it, with its objects in local files (its log with
    times and process ids when ``BENCH_LOG_LEVEL=INFO``)."""
    os.environ.update(environ)
    logging.basicConfig(
        level=os.environ["LOG_LEVEL"], format="%(asctime)s %(process)d %(name)s %(message)s"
    )
    tune_allocator()
    worker = build_worker(
        load_settings(os.environ),
        params=EngineParams(images_per_batch=per_batch, batches=BATCHES),
        wait_seconds=1,
        retry_delay_seconds=1,
        objects=FolderStore(Path(root)),
    )
    ready.set()
    try:
        while not stop.is_set():
            worker.poll_once()
    finally:
        worker.close()


def s3_event(bucket: str, key: str, size: int) -> str:
    """The body SQS carries for one S3 ObjectCreated notification."""
    record = {
        "eventName": "ObjectCreated:Put",
        "eventTime": datetime.now(UTC).isoformat(),
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": size, "eTag": "e"}},
    }
    return json.dumps({"Records": [record]})


def write_run(raw: Path, sources: list[Path], run_id: str, per_batch: int) -> list[str]:
    """The run's objects: hard links to the distinct PNGs; their keys."""
    keys = []
    for b in range(1, BATCHES + 1):
        folder = raw / "uploads" / run_id / f"batch_{b:03d}"
        folder.mkdir(parents=True)
        for i in range(1, per_batch + 1):
            name = f"img_{i:04d}.png"
            os.link(sources[(b * per_batch + i) % len(sources)], folder / name)
            keys.append(f"uploads/{run_id}/batch_{b:03d}/{name}")
    return keys


def record_run(counter: BatchCounter, bucket: str, keys: list[str], size: int) -> None:
    """Record the run's uploads through the counter, as Lambda batches of S3 events (of the
    largest size one transaction takes, to keep the set-up short; it is not timed); the last
    batch closes the run and dispatches it."""
    now = datetime.now(UTC)
    for start in range(0, len(keys), RECORD_GROUP_LIMIT):
        batch = keys[start : start + RECORD_GROUP_LIMIT]
        records = [(f"m{start + i}", s3_event(bucket, k, size)) for i, k in enumerate(batch)]
        prerecorded = counter.prerecord(records, now=now)
        for message_id, body in records:
            counter.handle_record(body, message_id=message_id, now=now, prerecorded=prerecorded)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=10_000, help="images per run (x 100)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    per_batch = args.images // BATCHES
    total = per_batch * BATCHES
    params = EngineParams(images_per_batch=per_batch, batches=BATCHES)
    spawn = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp,
        moto_server() as endpoint,
        patched_environ(endpoint.environ()),
        embedded_postgres(Path(tmp) / "pgdata") as database_url,
    ):
        root = Path(tmp)
        session = boto3.Session()
        resources = create_resources(session, stage="bench", runs_visibility_timeout=600)
        raw = root / resources.names.raw_bucket
        sources = []
        seed = run_seed("bench-sources")
        for i in range(DISTINCT):
            path = root / "sources" / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(synthetic_image(seed, "b", f"{i}.png", params=params)).save(path)
            sources.append(path)
        size = sum(p.stat().st_size for p in sources) // len(sources)
        database = ResultsDatabase.from_url(database_url)
        database.migrate()
        counter = BatchCounter(
            store=DynamoTrackingStore(
                client=session.client("dynamodb"), table_name=resources.names.tracking_table
            ),
            queue=SqsRunQueue(client=session.client("sqs"), queue_url=resources.runs_queue_url),
            objects=S3Objects(client=session.client("s3")),
            images_per_batch=per_batch,
            batches_per_run=BATCHES,
            shard_images=per_batch * (BATCHES // SHARDS),
        )
        environ = {
            **resources.worker_environ(database_url=database_url),
            **endpoint.environ(),
            "DOWNLOAD_CONCURRENCY": "1",
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        }
        seconds: dict[int, list[float]] = {1: [], 2: []}
        for repeat in range(args.repeats):
            for workers in (1, 2):
                run_id = f"bench-{workers}w-{repeat}"
                keys = write_run(raw, sources, run_id, per_batch)
                stop = spawn.Event()
                readies = [spawn.Event() for _ in range(workers)]
                processes = [
                    spawn.Process(
                        target=worker_process,
                        args=(environ, str(root), per_batch, ready, stop),
                        daemon=True,
                    )
                    for ready in readies
                ]
                for process in processes:
                    process.start()
                try:
                    for ready in readies:
                        if not ready.wait(120):
                            raise RuntimeError("a worker process did not start in 120 s")
                    record_run(counter, resources.names.raw_bucket, keys, size)
                    start = time.perf_counter()
                    deadline = start + 3600
                    while True:
                        row = database.run_row(run_id)
                        if row is not None and row["status"] == "finished":
                            break
                        if time.perf_counter() > deadline:
                            raise RuntimeError(f"run {run_id} did not finish within an hour")
                        time.sleep(0.05)
                    seconds[workers].append(time.perf_counter() - start)
                    assert row["images_processed"] == total, row
                    assert len(database.batch_rows(run_id)) == BATCHES
                finally:
                    stop.set()
                    for process in processes:
                        process.join(30)
                        if process.is_alive():
                            process.kill()
                print(
                    f"  run {repeat + 1}, {workers} worker{'s' if workers > 1 else ''}: "
                    f"{seconds[workers][-1]:.1f} s",
                    flush=True,
                )
        database.close()
    best = {workers: min(times) for workers, times in seconds.items()}
    speedup = best[1] / best[2]
    print(
        f"{total} PNGs of {params.image_height}x{params.image_width} ({DISTINCT} distinct files, "
        f"{size / 1024:.0f} KiB each, hard-linked), {SHARDS} shards; objects read from local "
        "files (moto's S3 would compete for the cores); tracking table, runs queue and topic "
        "in moto (a server process), PostgreSQL real (pgserver); each worker one process "
        f"with one processing thread; best of {args.repeats}; load average {load_before:.1f} "
        f"before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs"
    )
    print(f"  {'workers':>8s} {'wall s':>8s} {'img/s':>8s} {'runs (s)':s}")
    for workers, times in seconds.items():
        shown = ", ".join(f"{t:.1f}" for t in times)
        print(f"  {workers:8d} {best[workers]:8.1f} {total / best[workers]:8.1f} {shown}")
    ok = speedup >= GOAL
    print(f"  2 workers against 1: {speedup:.2f}x (goal >= {GOAL}x): {'OK' if ok else 'BELOW'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
