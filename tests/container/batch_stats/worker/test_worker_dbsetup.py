"""The database set-up container and the application role, on a real PostgreSQL.

The embedded server trusts local connections; each test makes its role authenticate with a
password (a ``pg_hba.conf`` line for that role only), as RDS does, so a wrong or rotated
password is refused for real.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import boto3
import psycopg
import pytest
from batch_stats.engine import EngineParams
from batch_stats.worker import dbsetup
from batch_stats.worker.app import build_worker
from batch_stats.worker.config import WorkerSettings
from batch_stats.worker.database import MIGRATIONS, ResultsDatabase
from batch_stats.worker.messages import ImageRef
from psycopg import errors

#: The schema version a fully migrated database reports.
LATEST_VERSION = MIGRATIONS[-1][0]

_roles = itertools.count()


def _secret(conninfo: str, *, user: str | None = None, password: str | None = None) -> str:
    info = psycopg.conninfo.conninfo_to_dict(conninfo)
    return json.dumps(
        {
            "engine": "postgres",
            "host": info["host"],
            "port": int(info.get("port") or 5432),
            "username": user or info["user"],
            "password": password if password is not None else (info.get("password") or ""),
            "dbname": info["dbname"],
        }
    )


@pytest.fixture
def app_role(database_url: str) -> str:
    """A role name for this test; it must log in with its password."""
    role = f"imgpipe_app_t{next(_roles)}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        (hba_file,) = conn.execute("SHOW hba_file").fetchone() or ("",)
        with open(hba_file, encoding="utf-8") as stream:
            lines = stream.read()
        with open(hba_file, "w", encoding="utf-8") as stream:
            stream.write(f"local all {role} scram-sha-256\n{lines}")
        conn.execute("SELECT pg_reload_conf()")
    return role


def _as(database_url: str, role: str, password: str) -> str:
    return psycopg.conninfo.make_conninfo(database_url, user=role, password=password)


def test_setup_creates_a_role_that_reads_and_writes_rows_and_nothing_more(
    database_url: str, app_role: str
) -> None:
    environ = {
        "DB_MASTER_SECRET": _secret(database_url),
        "DB_APP_SECRET": _secret(database_url, user=app_role, password="first-pass-1"),
    }
    assert dbsetup.run(environ) == LATEST_VERSION
    assert dbsetup.run(environ) == LATEST_VERSION  # idempotent: every task start runs it

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(_as(database_url, app_role, "wrong"))
    with psycopg.connect(_as(database_url, app_role, "first-pass-1"), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO runs (run_id, status, images_processed, images_rejected) "
            "VALUES ('r1', 'finished', 1, 0)"
        )
        conn.execute("UPDATE runs SET notified_status = 'finished' WHERE run_id = 'r1'")
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)
        conn.execute("DELETE FROM runs WHERE run_id = 'r1'")
        for statement in (
            "CREATE TABLE intruder (i int)",
            "DROP TABLE runs",
            "ALTER TABLE runs ADD COLUMN x int",
            "CREATE ROLE intruder",
            "TRUNCATE runs",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)


def test_the_worker_starts_as_the_application_role(database_url: str, app_role: str) -> None:
    """The worker's own start-up migration is a no-op once the set-up has run (no DDL)."""
    dbsetup.run(
        {
            "DB_MASTER_SECRET": _secret(database_url),
            "DB_APP_SECRET": _secret(database_url, user=app_role, password="pw-2"),
        }
    )
    database = ResultsDatabase.from_url(_as(database_url, app_role, "pw-2"))
    try:
        assert database.migrate() == LATEST_VERSION
    finally:
        database.close()


def test_bad_configuration_is_reported_not_raised(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DB_MASTER_SECRET", raising=False)
    monkeypatch.delenv("DB_APP_SECRET", raising=False)
    assert dbsetup.main() == 2
    assert "missing environment variables: DB_MASTER_SECRET, DB_APP_SECRET" in (
        capsys.readouterr().err
    )
    with pytest.raises(dbsetup.SetupError, match="DB_APP_SECRET is not an RDS secret"):
        dbsetup.run(
            {"DB_MASTER_SECRET": _secret("host=/tmp dbname=x user=y"), "DB_APP_SECRET": "{"}
        )


def test_a_secret_rotated_mid_run_does_not_lose_the_run(
    database_url: str,
    app_role: str,
    session: boto3.Session,
    resources: Any,
    small: EngineParams,
    dispatch_run: Callable[..., Any],
) -> None:
    """Rotation as Secrets Manager's single-user function does it (new version AWSPENDING,
    password changed, AWSPENDING promoted to AWSCURRENT), while the worker processes a run and
    holds a connection opened with the old password."""
    dbsetup.run(
        {
            "DB_MASTER_SECRET": _secret(database_url),
            "DB_APP_SECRET": _secret(database_url, user=app_role, password="before-1"),
        }
    )
    secrets = session.client("secretsmanager")
    secret_arn = secrets.create_secret(
        Name=f"{resources.names.db_app_secret}-{app_role}",
        SecretString=_secret(database_url, user=app_role, password="before-1"),
    )["ARN"]
    settings = WorkerSettings(
        runs_queue_url=resources.runs_queue_url,
        raw_bucket=resources.names.raw_bucket,
        results_bucket=resources.names.results_bucket,
        notifications_topic_arn=resources.topic_arn,
        db_secret_arn=secret_arn,
        tracking_table_name=resources.names.tracking_table,
        download_concurrency=2,
        visibility_timeout_seconds=30,
    )
    rotated: list[str] = []

    def rotate(ref: ImageRef) -> None:
        del ref
        if rotated:
            return
        old = secrets.describe_secret(SecretId=secret_arn)["VersionIdsToStages"]
        (current,) = [v for v, stages in old.items() if "AWSCURRENT" in stages]
        pending = secrets.put_secret_value(
            SecretId=secret_arn,
            SecretString=_secret(database_url, user=app_role, password="after-2"),
            VersionStages=["AWSPENDING"],
        )["VersionId"]
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("ALTER ROLE {} PASSWORD 'after-2'").format(
                    psycopg.sql.Identifier(app_role)
                )
            )
            # The old password's sessions end too (a rotation test of the real thing would
            # find them closed by the next failover or idle timeout at the latest).
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (app_role,),
            )
        secrets.update_secret_version_stage(
            SecretId=secret_arn,
            VersionStage="AWSCURRENT",
            MoveToVersionId=pending,
            RemoveFromVersionId=current,
        )
        rotated.append(pending)

    worker = build_worker(
        settings,
        session=session,
        params=small,
        wait_seconds=1,
        retry_delay_seconds=0,
        on_image=rotate,
    )
    assert worker.migrate() == LATEST_VERSION  # opens a connection with the old password
    outcomes = []
    worker.on_outcome = outcomes.append
    dispatch_run("run-rotated")
    for _ in range(5):
        worker.poll_once()
        if outcomes:
            break
    worker.close()
    assert rotated, "the secret was not rotated during the run"
    (outcome,) = outcomes
    assert outcome.status == "finished"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(_as(database_url, app_role, "before-1"))
    with psycopg.connect(_as(database_url, app_role, "after-2")) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM batch_stats WHERE run_id = 'run-rotated'"
        ).fetchone()
    assert rows == (small.batches,)
