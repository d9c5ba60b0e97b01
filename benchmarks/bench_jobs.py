"""A ``digits`` job against the ``generate-phone-numbers`` CLI alone, measured in the same run.

Run: ``.venv/bin/python benchmarks/bench_jobs.py`` (``--count 100000`` by default; add
``--workers N`` to choose the processes on both sides, default every CPU available).

* Baseline: ``generate-phone-numbers MIN MAX WIDTH COUNT OUT --format shards --shard-size S
  --seed 7 --workers N --quiet`` as a subprocess, writing to a temporary folder (its start-up,
  Python and the MNIST digits included).
* Job: :func:`run_digits_job`: the ``digits`` kind's ``parse``, every ``run_shard`` (one after the
  other, each rendering with the same ``N`` processes) and ``finish``, against the real
  ``S3ObjectStore`` on moto's server (started before the clock): the same images, plus the
  uploads, the labels file and the manifest. Only this function knows how the job runs: it is
  the one to replace to time the full local flow (job document uploaded, Lambda, queue, worker).

Both sides write the same tar shards (the tests check the bytes). Printed: images/s of each, the
job's overhead (wall time of the job / wall time of the CLI - 1; goal: at most 20%) and, from
the CLI's rate, the images/s per CPU used. Each side runs ``--repeats`` times, interleaved; the
best time of each is compared.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from batch_stats.jobs.base import JobContext
from batch_stats.jobs.digits import DigitsKind
from batch_stats.local.services import MotoEndpoint, moto_server
from batch_stats.worker.adapters import S3ObjectStore

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
    params: dict[str, Any], *, workers: int, endpoint: MotoEndpoint, scratch: Path, number: int
) -> float:
    """Seconds a ``digits`` job with ``params`` takes: parse, every shard in turn, finish."""
    env = endpoint.environ()
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                      aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    bucket = f"bench-results-{number}"
    s3.create_bucket(Bucket=bucket)
    kind = DigitsKind(workers=workers)
    store = S3ObjectStore(s3)
    start = time.perf_counter()
    parsed = kind.parse(params)
    shards = kind.shards(parsed)
    results = []
    for shard in range(shards):
        folder = scratch / f"{number}-{shard}"
        folder.mkdir()
        ctx = JobContext(f"bench-{number}", "unused", bucket, store, folder)
        results.append(kind.run_shard(parsed, shard=shard, shards=shards, ctx=ctx))
    kind.finish(parsed, shard_results=results, ctx=ctx)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="images (default 100,000)")
    parser.add_argument("--shard-images", type=int, default=20_000, help="default 20,000")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    params = {"mode": "phone", "count": args.count, "shard_images": args.shard_images,
              "spacing_min": SPACING[0], "spacing_max": SPACING[1], "image_width": WIDTH,
              "seed": SEED}  # fmt: skip
    print(
        f"digits job benchmark: {args.count:,} phone numbers, width {WIDTH}, shards of "
        f"{args.shard_images:,}, {args.workers} worker processes, load {os.getloadavg()}"
    )
    cli_times: list[float] = []
    job_times: list[float] = []
    with moto_server() as endpoint, tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        for repeat in range(args.repeats):
            cli_times.append(
                run_cli(args.count, args.shard_images, args.workers, Path(tmp) / "cli")
            )
            scratch = Path(tmp) / f"job-{repeat}"
            scratch.mkdir()
            job_times.append(run_digits_job(params, workers=args.workers, endpoint=endpoint,
                                            scratch=scratch, number=repeat))  # fmt: skip
            print(f"  repeat {repeat + 1}: CLI {cli_times[-1]:.2f} s, job {job_times[-1]:.2f} s")
    cli, job = min(cli_times), min(job_times)
    overhead = job / cli - 1
    print(f"generate-phone-numbers: {args.count / cli:,.0f} images/s "
          f"({args.count / cli / args.workers:,.0f} per worker process)")  # fmt: skip
    print(f"digits job (run_shard + finish, moto S3): {args.count / job:,.0f} images/s")
    print(f"job overhead: {overhead:+.1%} (goal: at most {GOAL:.0%}; spread of the CLI "
          f"{min(cli_times):.2f}-{max(cli_times):.2f} s, job {min(job_times):.2f}-"
          f"{max(job_times):.2f} s)")  # fmt: skip
    return 0 if overhead <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
