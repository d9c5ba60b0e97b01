"""The Dockerfile's exact CMD, run with only the image's requirements, processes one run.

No Docker engine is needed: the test installs ``container/requirements.txt`` into a fresh
virtual environment, stages the build context the way ``cdk deploy`` sends it to Docker (the CDK
asset, filtered by ``.dockerignore``), applies the Dockerfile's ``ENV`` and runs its ``CMD`` with
the environment variables the stack sets, against moto (server mode), a real PostgreSQL reached
through a Secrets Manager secret shaped like the RDS one, and a stand-in ECS agent endpoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from batch_counter.aws import DynamoTrackingStore, S3Objects, SqsRunQueue
from batch_counter.counter import BatchCounter
from batch_stats.engine import (
    EngineParams,
    decode_image,
    image_rng,
    process_image,
    read_batch_stats,
    run_seed,
    summarize_batch,
)
from batch_stats.local.resources import LocalResources, create_resources
from batch_stats.local.services import embedded_postgres, moto_server, patched_environ
from batch_stats.worker.runner import results_key
from batch_stats.worker.upload import upload_run

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "container" / "Dockerfile"
REQUIREMENTS = ROOT / "container" / "requirements.txt"
RUN_ID = "cmd-run-001"
#: Default image size (what the worker expects), a small run: 2 batches of 3 images.
PARAMS = EngineParams(images_per_batch=3, batches=2)

pytestmark = pytest.mark.slow


def _dockerfile(name: str) -> list[str]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    return [
        line.split(None, 1)[1].strip()
        for line in text.splitlines()
        if line.strip() and line.split(None, 1)[0].upper() == name
    ]


@pytest.fixture(scope="session")
def image_venv(request: pytest.FixtureRequest) -> Path:
    """A virtual environment holding only the image's requirements.

    It is kept in pytest's cache, keyed by the requirements and the interpreter, so it is
    rebuilt whenever either changes.
    """
    key = hashlib.sha256(REQUIREMENTS.read_bytes() + sys.version.encode()).hexdigest()[:16]
    venv = Path(request.config.cache.mkdir(f"image-venv-{key}"))
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(REQUIREMENTS),
            ],
            check=True,
            timeout=900,
        )
        (venv / ".complete").write_text(key, encoding="utf-8")
    return venv


@pytest.fixture(scope="module")
def build_context(dev: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's /app: the Dockerfile's COPY instructions applied to the container asset of
    the synthesized stack (what Docker receives on deploy, filtered by ``.dockerignore``)."""
    (context,) = [
        p for p in dev.outdir.glob("asset.*") if (p / "container" / "Dockerfile").is_file()
    ]
    (workdir,) = _dockerfile("WORKDIR")
    assert workdir == "/app"
    app = tmp_path_factory.mktemp("app")
    for instruction in _dockerfile("COPY"):
        source, dest = instruction.split()
        src, target = Path(context) / source, app / dest
        if src.is_dir():
            shutil.copytree(src, target, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / src.name)
    return app


@pytest.fixture
def ecs_agent(
    dev: Any, ecs_agent_for: Any
) -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    """The ECS agent endpoint (``ECS_AGENT_URI``), answering from the synthesized task role."""
    with ecs_agent_for(dev.raw) as agent:
        yield agent.uri, agent.calls


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, str]]:
    """moto in server mode; boto3 in this process points at it while the module runs."""
    with moto_server() as endpoint, patched_environ(endpoint.environ()):
        yield endpoint.environ()


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A real PostgreSQL. Its data folder is outside pytest's basetemp: as root, pgserver runs
    the server as another user, who must be able to traverse every parent folder."""
    data_dir = Path(tempfile.mkdtemp(prefix="imgpipe-cmd-pg-"))
    try:
        with embedded_postgres(data_dir / "data") as url:
            yield url
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _queue_depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def _stack_environment(dev: Any, resources: LocalResources, secret_arn: str) -> dict[str, str]:
    """The worker environment the stack sets, with each reference resolved to the local value."""
    (task,) = dev.resources("AWS::ECS::TaskDefinition").values()
    (container,) = [c for c in task["Properties"]["ContainerDefinitions"] if c["Name"] == "worker"]
    resolved = {
        "RUNS_QUEUE_URL": resources.runs_queue_url,
        "RAW_BUCKET": resources.names.raw_bucket,
        "RESULTS_BUCKET": resources.names.results_bucket,
        "NOTIFICATIONS_TOPIC_ARN": resources.topic_arn,
        "TRACKING_TABLE_NAME": resources.names.tracking_table,
        "DB_SECRET_ARN": secret_arn,
    }
    environ: dict[str, str] = {}
    for item in container["Environment"]:
        name, value = item["Name"], item["Value"]
        environ[name] = value if isinstance(value, str) else resolved[name]
    return environ


def test_dockerfile_cmd_processes_one_run(
    dev: Any,
    image_venv: Path,
    build_context: Path,
    aws: dict[str, str],
    postgres: str,
    ecs_agent: tuple[str, list[tuple[str, dict[str, Any]]]],
    tmp_path: Path,
) -> None:
    session = boto3.Session(region_name=aws["AWS_REGION"])
    clients = {name: session.client(name) for name in ("s3", "sqs", "sns", "secretsmanager")}
    resources = create_resources(session, stage="cmd", runs_visibility_timeout=60)

    # The RDS-generated secret's shape, pointing at the embedded PostgreSQL.
    conninfo = psycopg.conninfo.conninfo_to_dict(postgres)
    secret_arn = clients["secretsmanager"].create_secret(
        Name=resources.names.db_secret,
        SecretString=json.dumps(
            {
                "engine": "postgres",
                "host": conninfo["host"],
                "port": int(conninfo.get("port") or 5432),
                "username": conninfo["user"],
                "password": conninfo.get("password") or "",
                "dbname": conninfo["dbname"],
            }
        ),
    )["ARN"]

    # Capture the notification through an SQS subscription to the topic.
    probe_url = clients["sqs"].create_queue(QueueName="cmd-notifications")["QueueUrl"]
    probe_arn = clients["sqs"].get_queue_attributes(
        QueueUrl=probe_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    clients["sns"].subscribe(TopicArn=resources.topic_arn, Protocol="sqs", Endpoint=probe_arn)

    uploads = upload_run(clients["s3"], resources.names.raw_bucket, RUN_ID, params=PARAMS)
    # The batch counter closes the run from the S3 events and sends its (by reference) message.
    counter = BatchCounter(
        store=DynamoTrackingStore(
            client=session.client("dynamodb"), table_name=resources.names.tracking_table
        ),
        queue=SqsRunQueue(client=clients["sqs"], queue_url=resources.runs_queue_url),
        objects=S3Objects(client=clients["s3"]),
        images_per_batch=PARAMS.images_per_batch,
        batches_per_run=PARAMS.batches,
    )
    while (
        events := clients["sqs"]
        .receive_message(QueueUrl=resources.ingest_queue_url, MaxNumberOfMessages=10)
        .get("Messages", [])
    ):
        for event in events:
            counter.handle_record(
                event["Body"], message_id=event["MessageId"], now=datetime.now(UTC)
            )
            clients["sqs"].delete_message(
                QueueUrl=resources.ingest_queue_url, ReceiptHandle=event["ReceiptHandle"]
            )

    # The process environment: a bare PATH with the image venv first, the Dockerfile's ENV
    # (WORKDIR /app is the staged build context), the platform's AWS variables (here: moto),
    # ECS_AGENT_URI (set by ECS inside a task) and exactly what the stack sets.
    agent_uri, agent_calls = ecs_agent
    environ = {"PATH": f"{image_venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    for instruction in _dockerfile("ENV"):
        for pair in instruction.split():
            name, _, value = pair.partition("=")
            environ[name] = value.replace("/app", str(build_context))
    environ.update(aws)
    environ["ECS_AGENT_URI"] = agent_uri
    environ.update(_stack_environment(dev, resources, secret_arn))

    (cmd,) = _dockerfile("CMD")
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            json.loads(cmd), cwd=build_context, env=environ, stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + 180
            while _queue_depth(clients["sqs"], resources.runs_queue_url) > 0 or not _exists(
                clients["s3"], resources.names.results_bucket, results_key(RUN_ID)
            ):
                assert process.poll() is None, log_path.read_text(errors="replace")
                assert time.monotonic() < deadline, log_path.read_text(errors="replace")
                time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = log_path.read_text(errors="replace")
    assert returncode == 0, output

    # The results equal an independent computation from the uploaded PNGs.
    seed = run_seed(RUN_ID)
    counts: dict[str, list[tuple[int, int]]] = {}
    for upload in uploads:
        data = clients["s3"].get_object(Bucket=resources.names.raw_bucket, Key=upload.key)
        image = decode_image(data["Body"].read(), name=upload.name, params=PARAMS)
        rng = image_rng(seed, upload.batch_id, upload.name)
        counts.setdefault(upload.batch_id, []).append(process_image(image, rng=rng, params=PARAMS))
    expected = [summarize_batch(batch, c) for batch, c in sorted(counts.items())]
    body = clients["s3"].get_object(Bucket=resources.names.results_bucket, Key=results_key(RUN_ID))
    stats, _ = read_batch_stats(io.BytesIO(body["Body"].read()))
    assert stats == expected

    with psycopg.connect(postgres) as conn:
        rows = conn.execute(
            "SELECT batch_id, image_count FROM batch_stats WHERE run_id = %s ORDER BY batch_id",
            (RUN_ID,),
        ).fetchall()
    assert rows == [("batch_001", 3), ("batch_002", 3)]

    received = clients["sqs"].receive_message(QueueUrl=probe_url, MaxNumberOfMessages=10)
    notes = [json.loads(m["Body"]) for m in received.get("Messages", [])]
    assert [n["Subject"] for n in notes] == [f"imgpipe run {RUN_ID} finished"]

    # Scale-in protection was on while the run was processed, and off afterwards.
    states = [body["ProtectionEnabled"] for path, body in agent_calls]
    assert {path for path, _ in agent_calls} == {"/api/task-1/task-protection/v1/state"}
    assert states[0] is True
    assert states[-1] is False
    assert agent_calls[0][1]["ExpiresInMinutes"] >= 1

    # EMF metrics for the dashboard and alarms went to stdout; ECS granted the protection.
    assert '"RunsFinished"' in output
    assert "TaskProtectionFailures" not in output


def _exists(s3: Any, bucket: str, key: str) -> bool:
    return bool(s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0))


#: Run inside the image's environment: a unique mosaic with photo_mosaic (dask thumbnails, HDF5
#: cache, the numba solver), a unique assignment large enough for POT's coarse problem, a digit
#: sequence from the MNIST test set bundled in number_generator, and the job kinds' modules.
_LIBRARIES_SCRIPT = """
import importlib, json, sys, tempfile
from pathlib import Path
import numpy as np
from PIL import Image
import number_generator
from photo_mosaic import assign_unique, build_index, load_index, match_tiles, render_mosaic
importlib.import_module("batch_stats.jobs.mosaic")
importlib.import_module("batch_stats.worker.app")
folder = Path(tempfile.mkdtemp())
rng = np.random.default_rng(0)
for k in range(30):
    Image.new("RGB", (40, 30), tuple(int(v) for v in rng.integers(0, 256, 3))).save(
        folder / f"t{k:02d}.png")
target = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
build_index(folder / ".", folder / "c.h5", thumb_size=8, progress=False)
index = load_index(folder / "c.h5")
mosaic = render_mosaic(index, match_tiles(index, target, cols=5, method="unique"))
big = assign_unique(rng.random((1500, 3)) * 100, rng.random((1600, 3)) * 100)
assert "ot" in sys.modules and len(set(big.tile_for_cell.tolist())) == 1500
digits = number_generator.generate_numbers_sequence([0, 9, 0], (0, 4), 100)
source = number_generator.load_source()
print(json.dumps({"mosaic": mosaic.size, "digits": list(digits.shape),
                  "mnist": source.name, "mnist_digits": len(source.labels)}))
"""


def test_the_image_runs_both_libraries_with_only_its_requirements(
    image_venv: Path, build_context: Path, tmp_path: Path
) -> None:
    environ = {"PATH": f"{image_venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    for instruction in _dockerfile("ENV"):
        for pair in instruction.split():
            name, _, value = pair.partition("=")
            environ[name] = value.replace("/app", str(build_context))
    result = subprocess.run(
        ["python", "-c", _LIBRARIES_SCRIPT],
        cwd=build_context,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["mosaic"] == [5 * 8, 4 * 8]
    assert report["digits"] == [28, 100]
    # The digits come from the MNIST test set inside the image's number_generator package.
    assert report["mnist"] == "MNIST test set (packaged)"
    assert report["mnist_digits"] == 10_000
