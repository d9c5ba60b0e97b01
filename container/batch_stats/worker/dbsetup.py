"""Database set-up as the RDS master user: ``python -m batch_stats.worker.dbsetup``.

ECS runs this in a separate, short-lived container of the worker's task before the worker
starts (the worker waits for it to succeed). ECS injects the master secret into this container
only (``DB_MASTER_SECRET``, read with the task's execution role); the worker's task role cannot
read it, and the worker connects as the application role of ``DB_APP_SECRET``.

Steps, all idempotent and serialized across tasks by an advisory lock: apply the schema
migrations (the tables belong to the master user), create the application role if it does not
exist yet (with the password of the application secret; after that, Secrets Manager rotation
owns the password), and grant it exactly what the worker's SQL needs: connect, use the schema,
read and write rows of the tables, present and future. No DDL, no other database, no role
management.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence

import psycopg
from psycopg import sql

from batch_stats.worker.adapters import conninfo_from_secret
from batch_stats.worker.database import ResultsDatabase

log = logging.getLogger("batch_stats.worker.dbsetup")

ENV_VARS = ("DB_MASTER_SECRET", "DB_APP_SECRET")
_SETUP_LOCK = 0x696D67736574  # pg_advisory_lock key: one task sets up at a time

#: What the application role may do (``{db}``: the database, ``{role}``: the role).
APP_GRANTS: tuple[str, ...] = (
    "GRANT CONNECT ON DATABASE {db} TO {role}",
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
    # Tables and sequences later migrations create (as the master user) get the same.
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
    "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}",
)


class SetupError(RuntimeError):
    """The set-up cannot run: its configuration is missing or malformed."""


class DatabaseSetupError(SetupError):
    """The database refused a step of the set-up."""


def app_role_from_secret(raw: str) -> tuple[str, str]:
    """(username, password) of the application secret's text."""
    try:
        secret = json.loads(raw)
        return str(secret["username"]), str(secret["password"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SetupError(
            "DB_APP_SECRET is not an RDS secret: JSON with username and password is expected "
            f"({type(exc).__name__})"
        ) from None


def setup_database(master_conninfo: str, *, app_user: str, app_password: str) -> int:
    """Migrate, create the application role if missing and grant it; return the schema
    version."""
    with psycopg.connect(master_conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
        try:
            version = ResultsDatabase(lambda: psycopg.connect(master_conninfo)).migrate()
            role = sql.Identifier(app_user)
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (app_user,))
            if exists.fetchone() is None:
                conn.execute(
                    sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}").format(
                        role, sql.Literal(app_password)
                    )
                )
                log.info("created the application role %s", app_user)
            dbname = sql.Identifier(conn.info.dbname)
            for grant in APP_GRANTS:
                conn.execute(sql.SQL(grant).format(db=dbname, role=role))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))
    return version


def run(environ: Mapping[str, str]) -> int:
    missing = [name for name in ENV_VARS if not environ.get(name, "").strip()]
    if missing:
        raise SetupError("missing environment variables: " + ", ".join(missing))
    master = conninfo_from_secret(environ["DB_MASTER_SECRET"], source="DB_MASTER_SECRET")
    user, password = app_role_from_secret(environ["DB_APP_SECRET"])
    try:
        return setup_database(master, app_user=user, app_password=password)
    except psycopg.Error as exc:
        raise DatabaseSetupError(f"database set-up failed: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """0: set up; 2: bad configuration; 1: the database refused."""
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        version = run(os.environ)
    except (SetupError, ValueError) as exc:
        print(f"batch-stats dbsetup: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, DatabaseSetupError) else 2
    log.info("database schema at version %d; application role ready", version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
