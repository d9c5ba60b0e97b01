"""The serverless subcommands of ``batch-stats``: ``worker``, ``upload-run``, ``upload``,
``status`` and ``demo``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batch_stats.engine import EngineParams

AddCommand = Callable[..., argparse.ArgumentParser]
_RUN_ID_HELP = "1-64 letters, digits, '_' and '-', starting with a letter or digit"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _run_id(text: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", text):
        raise argparse.ArgumentTypeError(f"run id {text!r} is not allowed ({_RUN_ID_HELP})")
    return text


def _bad(text: str) -> tuple[str, ...]:
    from batch_stats.local.demo import parse_bad

    try:
        return parse_bad(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seed(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if not 0 <= value < 2**128:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**128 - 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _run_options(parser: argparse.ArgumentParser, *, default_run_id: str | None) -> None:
    defaults = EngineParams()
    parser.add_argument(
        "--run-id",
        type=_run_id,
        default=default_run_id,
        help=f"run id ({_RUN_ID_HELP}; default: %(default)s)",
    )
    parser.add_argument(
        "--batches",
        type=_positive,
        default=defaults.batches,
        metavar="N",
        help="batches in the run; must match the stack's BATCHES_PER_RUN (default: %(default)s)",
    )
    parser.add_argument(
        "--images-per-batch",
        type=_positive,
        default=defaults.images_per_batch,
        metavar="N",
        help="images per batch; must match IMAGES_PER_BATCH (default: %(default)s)",
    )
    parser.add_argument(
        "--bad",
        type=_bad,
        default=(),
        metavar="KINDS",
        help="comma-separated bad uploads replacing images: not_png, truncated, empty, "
        "too_small, decompression_bomb (default: none)",
    )
    parser.add_argument(
        "--seed",
        type=_seed,
        default=None,
        help="seed of the generated pixels (default: derived from the run id)",
    )


def _params(args: argparse.Namespace) -> EngineParams:
    return EngineParams(images_per_batch=args.images_per_batch, batches=args.batches)


def _worker(args: argparse.Namespace) -> int:
    del args
    from batch_stats.worker.app import main

    return main()


def _upload_run(args: argparse.Namespace) -> int:
    import boto3
    from tqdm import tqdm

    from batch_stats.worker.upload import upload_run

    bucket = args.bucket or os.environ.get("RAW_BUCKET", "")
    if not bucket:
        raise ValueError("no bucket: pass --bucket or set RAW_BUCKET")
    run_id = args.run_id or datetime.now(UTC).strftime("run-%Y%m%dT%H%M%SZ")
    params = _params(args)
    total = params.batches * params.images_per_batch
    with tqdm(total=total, desc="upload", unit="img", file=sys.stderr, disable=None) as bar:
        uploads = upload_run(
            boto3.client("s3"),
            bucket,
            run_id,
            params=params,
            bad=args.bad,
            seed=args.seed,
            progress=lambda upload: bar.update(),
            manifest=args.manifest,
        )
    print(f"uploaded {len(uploads)} images of run {run_id} to s3://{bucket}/uploads/{run_id}/")
    if args.manifest:
        print(f"then its manifest s3://{bucket}/uploads/{run_id}/_manifest.json")
    return 0


def _upload_folder(args: argparse.Namespace) -> int:
    import boto3
    from tqdm import tqdm

    from batch_stats.worker.upload import scan_upload_folder, upload_folder

    bucket = args.bucket or os.environ.get("RAW_BUCKET", "")
    if not bucket:
        raise ValueError("no bucket: pass --bucket or set RAW_BUCKET")
    total = len(scan_upload_folder(args.folder, args.run_id))  # refuses bad entries up front
    with tqdm(total=total, desc="upload", unit="img", file=sys.stderr, disable=None) as bar:
        uploads = upload_folder(
            boto3.client("s3"),
            bucket,
            args.folder,
            args.run_id,
            progress=lambda upload: bar.update(),
        )
    batches = len({u.batch_id for u in uploads})
    print(
        f"uploaded {len(uploads)} images in {batches} batches of run {args.run_id} to "
        f"s3://{bucket}/uploads/{args.run_id}/, then its manifest (_manifest.json)"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    import boto3

    from batch_stats.worker.adapters import S3ObjectStore
    from batch_stats.worker.app import build_database
    from batch_stats.worker.config import WorkerSettings
    from batch_stats.worker.status import format_status, run_status, to_json
    from batch_stats.worker.tracking import DynamoRunTracking

    table = args.table or os.environ.get("TRACKING_TABLE_NAME", "")
    if not table:
        raise ValueError("no tracking table: pass --table or set TRACKING_TABLE_NAME")
    session = boto3.Session()
    raw_bucket = os.environ.get("RAW_BUCKET") or None
    database = None
    database_url = os.environ.get("DATABASE_URL") or None
    secret_arn = os.environ.get("DB_SECRET_ARN") or None
    if database_url or secret_arn:
        database = build_database(
            WorkerSettings(
                runs_queue_url="-",
                raw_bucket=raw_bucket or "-",
                results_bucket="-",
                notifications_topic_arn="-",
                tracking_table_name=table,
                database_url=None if secret_arn else database_url,
                db_secret_arn=secret_arn,
            ),
            session,
        )
    try:
        status = run_status(
            args.run_id,
            tracking=DynamoRunTracking(session.client("dynamodb"), table),
            objects=S3ObjectStore(session.client("s3")) if raw_bucket else None,
            raw_bucket=raw_bucket,
            database=database,
        )
    finally:
        if database is not None:
            database.close()
    print(to_json(status) if args.json else format_status(status))
    return 0 if status["found"] else 1


def _job_id_from(path: Path, given: str | None) -> str:
    from batch_stats.jobs.document import JOB_ID_RULES, is_job_id

    job_id = given if given is not None else path.stem
    if not is_job_id(job_id):
        where = "--job-id" if given is not None else f"the file name {path.name!r}"
        raise ValueError(f"job id {job_id!r} (from {where}) is not allowed ({JOB_ID_RULES})")
    return job_id


def _submit(args: argparse.Namespace) -> int:
    from batch_stats.jobs.base import JobSpecError
    from batch_stats.jobs.document import job_key, parse_job_document

    job_id = _job_id_from(args.file, args.job_id)
    data = args.file.read_bytes()
    try:
        spec = parse_job_document(data, job_id=job_id)
    except JobSpecError as exc:
        print(
            f"batch-stats: {args.file} is not a valid job document ({len(exc.problems)} "
            "problems); nothing was uploaded:",
            file=sys.stderr,
        )
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    bucket = args.bucket or os.environ.get("RAW_BUCKET", "")
    if not bucket:
        raise ValueError("no bucket: pass --bucket or set RAW_BUCKET")
    import boto3

    key = job_key(job_id)
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/json")
    shards = spec.kind.shards(spec.params)
    print(
        f"submitted {spec.kind_name} job {job_id} ({shards} shard{'s' * (shards != 1)}) as "
        f"s3://{bucket}/{key}; outputs under {spec.kind.output_prefix(job_id)} in the results "
        f"bucket; follow it with: batch-stats job-status {job_id}"
    )
    return 0


def _job_status(args: argparse.Namespace) -> int:
    import boto3

    from batch_stats.worker.app import build_database
    from batch_stats.worker.config import WorkerSettings
    from batch_stats.worker.status import format_job_status, job_status, to_json
    from batch_stats.worker.tracking import DynamoRunTracking

    session = boto3.Session()
    table = args.table or os.environ.get("TRACKING_TABLE_NAME", "")
    database_url = os.environ.get("DATABASE_URL") or None
    secret_arn = os.environ.get("DB_SECRET_ARN") or None
    if not table and not (database_url or secret_arn):
        raise ValueError(
            "nothing to read: set TRACKING_TABLE_NAME (or --table) and DATABASE_URL or "
            "DB_SECRET_ARN"
        )
    database = None
    if database_url or secret_arn:
        database = build_database(
            WorkerSettings(
                runs_queue_url="-",
                raw_bucket="-",
                results_bucket="-",
                notifications_topic_arn="-",
                tracking_table_name=table or "-",
                database_url=None if secret_arn else database_url,
                db_secret_arn=secret_arn,
            ),
            session,
        )
    try:
        status = job_status(
            args.job_id,
            database=database,
            tracking=DynamoRunTracking(session.client("dynamodb"), table) if table else None,
        )
    finally:
        if database is not None:
            database.close()
    print(to_json(status) if args.json else format_job_status(status))
    return 0 if status["found"] else 1


def _demo(args: argparse.Namespace) -> int:
    if args.job is not None:
        from batch_stats.local.job_demo import JobDemoOptions, run_job_demo

        job_id = None if args.run_id == "demo-run" else args.run_id
        run_job_demo(JobDemoOptions(kind=args.job, out_dir=args.out, job_id=job_id))
        return 0
    from batch_stats.local.demo import DemoOptions, run_demo

    run_demo(
        DemoOptions(
            run_id=args.run_id,
            params=_params(args),
            bad=args.bad,
            bad_key=not args.no_bad_key,
            out_dir=args.out,
            seed=args.seed,
            workers=args.workers,
            shard_images=args.shard_images,
            missing_batches=args.missing_batches,
            run_timeout=args.run_timeout,
        )
    )
    return 0


def register(commands: Any, add_command: AddCommand) -> None:
    """Add ``worker``, ``upload-run`` and ``demo`` to the ``batch-stats`` subcommands."""
    add_command(
        commands,
        "worker",
        _worker,
        "run the worker on the runs queue (configured by environment variables, as in the "
        "container; stops on SIGTERM or Ctrl-C)",
    )
    upload = add_command(
        commands,
        "upload-run",
        _upload_run,
        "generate a synthetic run and upload it to the raw bucket (uploads/<run_id>/...)",
    )
    upload.add_argument(
        "--bucket", default=None, help="raw bucket (default: the RAW_BUCKET variable)"
    )
    _run_options(upload, default_run_id=None)
    upload.add_argument(
        "--no-manifest",
        dest="manifest",
        action="store_false",
        help="upload only the images (the run then completes on the stack's defaults)",
    )
    folder = add_command(
        commands,
        "upload",
        _upload_folder,
        "upload your own folder of batch folders (FOLDER/<batch_id>/<name>.png) as a run, then "
        "its manifest (names and SHA-256 of every image)",
    )
    folder.add_argument("folder", type=Path, help="folder holding <batch_id>/<name>.png")
    folder.add_argument("--run-id", type=_run_id, required=True, help=f"run id ({_RUN_ID_HELP})")
    folder.add_argument(
        "--bucket", default=None, help="raw bucket (default: the RAW_BUCKET variable)"
    )
    status = add_command(
        commands,
        "status",
        _status,
        "show a run's state: expected and received images per batch, shards done, rejected "
        "objects, bad keys, late uploads, the Parquet URI (tracking table: TRACKING_TABLE_NAME; "
        "results: DATABASE_URL or DB_SECRET_ARN; manifest: RAW_BUCKET)",
    )
    status.add_argument("run_id", type=_run_id, help="the run id")
    status.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    status.add_argument(
        "--table", default=None, help="tracking table (default: TRACKING_TABLE_NAME)"
    )
    submit = add_command(
        commands,
        "submit",
        _submit,
        "validate a job document (every problem is listed) and upload it to "
        "jobs/<job_id>.json in the raw bucket, which starts the job",
    )
    submit.add_argument("file", type=Path, help="the job document (JSON)")
    submit.add_argument(
        "--job-id", default=None, help=f"job id (default: the file's name; {_RUN_ID_HELP})"
    )
    submit.add_argument(
        "--bucket", default=None, help="raw bucket (default: the RAW_BUCKET variable)"
    )
    job_status = add_command(
        commands,
        "job-status",
        _job_status,
        "show a job's state: its dispatch (tracking table: TRACKING_TABLE_NAME), its status, "
        "shards, outputs, reason and notification (jobs table: DATABASE_URL or DB_SECRET_ARN)",
    )
    job_status.add_argument("job_id", type=_run_id, help="the job id")
    job_status.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    job_status.add_argument(
        "--table", default=None, help="tracking table (default: TRACKING_TABLE_NAME)"
    )
    demo = add_command(
        commands,
        "demo",
        _demo,
        "run the serverless flow end to end locally: moto server (S3, SQS, DynamoDB, SNS), "
        "embedded PostgreSQL, the batch counter Lambda and the worker",
    )
    _run_options(demo, default_run_id="demo-run")
    demo.set_defaults(bad=("truncated", "not_png"))
    demo.add_argument(
        "--no-bad-key", action="store_true", help="do not upload the file with a bad key"
    )
    demo.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="worker processes on the runs queue (default: %(default)s, in this process)",
    )
    demo.add_argument(
        "--shard-images",
        type=_positive,
        default=5000,
        metavar="N",
        help="most images in one shard message (SHARD_IMAGES; default: %(default)s)",
    )
    demo.add_argument(
        "--missing-batches",
        type=_non_negative,
        default=0,
        metavar="N",
        help="the stack expects N batches more than are uploaded: the run stays incomplete and "
        "its check reports it (default: %(default)s)",
    )
    demo.add_argument(
        "--run-timeout",
        type=_positive,
        default=3,
        metavar="S",
        help="with --missing-batches: RUN_TIMEOUT, seconds after the last upload before the "
        "run is reported incomplete (default: %(default)s; the stack's is 3600)",
    )
    demo.add_argument(
        "--job",
        choices=("synthetic-stats", "digits", "mosaic"),
        default=None,
        help="run a job of this kind through the same local stack instead of an uploaded run "
        "(its demo parameters; the preview goes to --out; --run-id names the job)",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("out/demo"),
        help="folder for the preview, plot, Parquet copy and notification (default: %(default)s)",
    )
