"""A ``digits`` job against the ``generate-phone-numbers`` CLI alone, measured in the same run.

Run: ``.venv/bin/python benchmarks/bench_jobs.py`` (``--count 100000`` by default, in tar shards
of the kind's default 10,000 images and parts of 100,000; add ``--workers N`` to choose the
rendering processes on both sides).

``--workers`` defaults to every CPU available but one, which is left to the emulated AWS: moto's
S3 server takes about 4.4 ms of CPU per MB uploaded (receiving, MD5 for the ETag, storing) and
the client 2 ms (SigV4 hashes the payload over moto's plain HTTP, not over HTTPS), 2.4 s of CPU
for the 374 MB of tars of 100,000 images. In AWS that work is not on the task's CPUs; here it
would take them from the rendering. ``--workers`` equal to the CPUs measures that too.

* Baseline: ``generate-phone-numbers MIN MAX WIDTH COUNT OUT --format shards --shard-size S
  --seed 7 --workers N --quiet`` as a subprocess, writing to a temporary folder (its start-up,
  Python and the MNIST digits included).
* Job: :func:`run_digits_job`, the full local flow (the local stack of ``make demo``: moto's
  server, the embedded PostgreSQL, the webhook, started before the clock): the job document is
  uploaded to ``jobs/<job_id>.json``, moto's S3 notification reaches the ingest queue, the batch
  counter Lambda handler dispatches the job, and the worker validates it, records it, sends
  one message per part to the runs queue and takes them back one after the other (each
  rendering with the same ``N`` processes and uploading each tar while the next renders),
  finishes the job (labels file, manifest) and publishes its notification. The clock stops when
  the worker reports the job's end.

Both sides write the same tar shards (the tests check the bytes). Printed: images/s of each, the
job's overhead (wall time of the job / wall time of the CLI - 1; goal: at most 20%) and, from
the CLI's rate, the images/s per CPU used. Each side runs ``--repeats`` times, interleaved; the
best time of each is compared, and so is each repeat with the CLI run just before it (on a
machine others share, the pairs see more alike loads than the best times do).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from batch_stats.engine import EngineParams
from batch_stats.jobs import digits
from batch_stats.local.pipeline import LocalPipeline, local_pipeline
from batch_stats.worker.metrics import EmfMetrics

from number_generator._dataset import default_workers

GOAL = 0.20
SPACING = (2, 6)
WIDTH = 300
SEED = 7


def run_cli(count: int, shard_images: int, workers: int, out: Path) -> float:
    """Seconds the ``generate-phone-numbers`` CLI takes for the dataset."""
    cli = Path(sys.executable).with_name("generate-phone-numbers")
    argv = [str(cli), str(SPACING[0]), str(SPACING[1]), str(WIDTH), str(count), str(out),
            "--format", "shards", "--shard-size", str(shard_images), "--seed", str(SEED),
            "--workers", str(workers), "--quiet", "--overwrite"]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_digits_job(
    params: dict[str, Any], *, workers: int, pipeline: LocalPipeline, number: int
) -> float:
    """Seconds from the upload of a ``digits`` job document to the job's end, through the local
    flow: S3 event -> Lambda handler -> runs queue -> worker (validation, the jobs row, the
    fan-out over shards, every shard, finish, the notification)."""
    digits.KIND.workers = workers  # the kind instance the worker's registry hands out
    s3 = pipeline.session.client("s3")
    document = json.dumps({"version": 1, "kind": "digits", "params": params}).encode()
    start = time.perf_counter()
    s3.put_object(
        Bucket=pipeline.resources.names.raw_bucket, Key=f"jobs/bench-{number}.json", Body=document
    )
    with contextlib.redirect_stdout(io.StringIO()):  # Powertools' EMF lines
        pipeline.pump_lambda()
    (outcome,) = pipeline.run_jobs(jobs=1, timeout=3600)
    elapsed = time.perf_counter() - start
    if outcome.status != "succeeded":
        raise RuntimeError(f"the benchmark's job failed: {outcome.reason}")
    pipeline.webhook.get(timeout=30)  # its one notification
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="images (default 100,000)")
    parser.add_argument(
        "--shard-images",
        type=int,
        default=digits.DEFAULT_SHARD_IMAGES,
        help=f"images per tar shard, on both sides (default the kind's, "
        f"{digits.DEFAULT_SHARD_IMAGES:,})",
    )
    parser.add_argument(
        "--part-images",
        type=int,
        default=digits.DEFAULT_PART_IMAGES,
        help=f"images per part of the job (one task each; default the kind's, "
        f"{digits.DEFAULT_PART_IMAGES:,})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=max(1, default_workers() - 1),
        help="rendering processes on both sides (default: the CPUs available but one, left to "
        "moto's S3, which stands in for a service that runs elsewhere)",
    )
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    params = {"mode": "phone", "count": args.count, "shard_images": args.shard_images,
              "part_images": args.part_images, "spacing_min": SPACING[0],
              "spacing_max": SPACING[1], "image_width": WIDTH, "seed": SEED}  # fmt: skip
    print(
        f"digits job benchmark: {args.count:,} phone numbers, width {WIDTH}, tar shards of "
        f"{args.shard_images:,}, parts of {args.part_images:,}, {args.workers} worker "
        f"processes, load {os.getloadavg()}"
    )
    cli_times: list[float] = []
    job_times: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp,
        local_pipeline(
            Path(tmp),
            params=EngineParams(),
            lambda_log_level="ERROR",
            metrics=EmfMetrics(enabled=False),
            runs_visibility_timeout=900,
        ) as pipeline,
    ):
        for repeat in range(args.repeats):
            cli_times.append(
                run_cli(args.count, args.shard_images, args.workers, Path(tmp) / "cli")
            )
            job_times.append(
                run_digits_job(params, workers=args.workers, pipeline=pipeline, number=repeat)
            )
            print(f"  repeat {repeat + 1}: CLI {cli_times[-1]:.2f} s, job {job_times[-1]:.2f} s")
    cli, job = min(cli_times), min(job_times)
    overhead = job / cli - 1
    paired = sorted(j / c - 1 for c, j in zip(cli_times, job_times, strict=True))
    print(f"generate-phone-numbers: {args.count / cli:,.0f} images/s "
          f"({args.count / cli / args.workers:,.0f} per worker process)")  # fmt: skip
    print(
        f"digits job (local flow: submit, Lambda, queue, worker): {args.count / job:,.0f} images/s"
    )
    print(f"job overhead: {overhead:+.1%} (goal: at most {GOAL:.0%}; spread of the CLI "
          f"{min(cli_times):.2f}-{max(cli_times):.2f} s, job {min(job_times):.2f}-"
          f"{max(job_times):.2f} s)")  # fmt: skip
    each = ", ".join(f"{p:+.1%}" for p in paired)
    print(f"overhead of each repeat against the CLI run just before it: {each} "
          f"(median {paired[len(paired) // 2]:+.1%})")  # fmt: skip
    return 0 if overhead <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
