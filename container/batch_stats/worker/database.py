"""PostgreSQL storage of run results (psycopg 3): versioned migrations and idempotent upserts."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import psycopg

from batch_stats.engine import BatchStats
from batch_stats.worker.messages import Rejection

#: Ordered schema migrations; a version is applied once, inside one transaction.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE runs (
            run_id text PRIMARY KEY,
            status text NOT NULL CHECK (status IN ('finished', 'failed')),
            parquet_uri text,
            images_processed integer NOT NULL,
            images_rejected integer NOT NULL,
            error text,
            processed_at timestamptz NOT NULL DEFAULT now(),
            notified_status text
        );
        CREATE TABLE batch_stats (
            run_id text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            batch_id text NOT NULL,
            image_count integer NOT NULL,
            white_avg double precision NOT NULL,
            white_min double precision NOT NULL,
            white_max double precision NOT NULL,
            white_std double precision,
            black_avg double precision NOT NULL,
            black_min double precision NOT NULL,
            black_max double precision NOT NULL,
            black_std double precision,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (run_id, batch_id)
        );
        CREATE TABLE rejected_images (
            run_id text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            object_key text NOT NULL,
            reason text NOT NULL,
            detail text NOT NULL,
            PRIMARY KEY (run_id, object_key)
        );
        """,
    ),
)
_MIGRATION_LOCK = 0x696D67706970  # pg_advisory_xact_lock key: one migrating worker at a time

STAT_COLUMNS = (
    "white_avg",
    "white_min",
    "white_max",
    "white_std",
    "black_avg",
    "black_min",
    "black_max",
    "black_std",
)


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    status: str
    parquet_uri: str | None
    stats: Sequence[BatchStats]
    image_counts: dict[str, int]
    images_processed: int
    rejections: Sequence[Rejection]
    error: str | None = None


Connection = psycopg.Connection[tuple[object, ...]]


class ResultsDatabase:
    """Run results in PostgreSQL.

    One connection is kept open and reused; after any error it is closed, and the next call
    opens a new one through ``connect`` (which may fetch rotated credentials).
    """

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._open = connect
        self._conn: Connection | None = None

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        if self._conn is None or self._conn.closed:
            self._conn = self._open()
        conn = self._conn
        try:
            yield conn
            conn.commit()
        except BaseException:
            self._conn = None
            with suppress(Exception):
                conn.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @classmethod
    def from_url(cls, url: str) -> ResultsDatabase:
        return cls(lambda: psycopg.connect(url, connect_timeout=10))

    def migrate(self) -> int:
        """Apply pending migrations; return the schema version."""
        with self._connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            # Up to date: no DDL at all, so a role without CREATE (the application role on
            # AWS, whose schema the set-up container migrates) can call this at start-up.
            if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() not in (
                None,
                (None,),
            ):
                done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
                if {version for version, _ in MIGRATIONS} <= done:
                    return MIGRATIONS[-1][0]
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql in MIGRATIONS:
                if version in applied:
                    continue
                conn.execute(sql.encode())
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        return MIGRATIONS[-1][0]

    def save_run(self, record: RunRecord) -> str | None:
        """Upsert the run, its batch rows and rejections in one transaction.

        Rows of batches that are no longer in the result are removed, so a reprocessed run
        leaves exactly its current rows. Returns the status last announced for the run (None:
        never announced).
        """
        # One pipeline: every statement is sent before any result is read, so the transaction
        # costs one round trip to the server (plus the commit) instead of one per statement.
        with self._connect() as conn, conn.pipeline(), conn.transaction():
            locked = conn.execute(
                "SELECT notified_status FROM runs WHERE run_id = %s FOR UPDATE", (record.run_id,)
            )
            conn.execute(
                """
                INSERT INTO runs (run_id, status, parquet_uri, images_processed,
                                  images_rejected, error, processed_at)
                VALUES (%s, %s, %s, %s, %s, %s, now())
                ON CONFLICT (run_id) DO UPDATE SET
                    status = EXCLUDED.status, parquet_uri = EXCLUDED.parquet_uri,
                    images_processed = EXCLUDED.images_processed,
                    images_rejected = EXCLUDED.images_rejected,
                    error = EXCLUDED.error, processed_at = EXCLUDED.processed_at
                """,
                (
                    record.run_id,
                    record.status,
                    record.parquet_uri,
                    record.images_processed,
                    len(record.rejections),
                    record.error,
                ),
            )
            columns = ", ".join(STAT_COLUMNS)
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in ("image_count", *STAT_COLUMNS))
            with conn.cursor() as cur:
                cur.executemany(
                    f"""
                    INSERT INTO batch_stats (run_id, batch_id, image_count, {columns})
                    VALUES (%s, %s, %s, {", ".join(["%s"] * len(STAT_COLUMNS))})
                    ON CONFLICT (run_id, batch_id) DO UPDATE SET {updates}, updated_at = now()
                    """,
                    [
                        (
                            record.run_id,
                            stats.batch_id,
                            record.image_counts[stats.batch_id],
                            *(getattr(stats, c) for c in STAT_COLUMNS),
                        )
                        for stats in record.stats
                    ],
                )
            conn.execute(
                "DELETE FROM batch_stats WHERE run_id = %s AND NOT (batch_id = ANY(%s))",
                (record.run_id, [s.batch_id for s in record.stats]),
            )
            conn.execute("DELETE FROM rejected_images WHERE run_id = %s", (record.run_id,))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO rejected_images (run_id, object_key, reason, detail) "
                    "VALUES (%s, %s, %s, %s)",
                    [(record.run_id, r.key, r.reason, r.detail) for r in record.rejections],
                )
            previous = locked.fetchone()
        return None if previous is None or previous[0] is None else str(previous[0])

    def notified_status(self, run_id: str) -> str | None:
        """The status last announced for the run (None: not announced yet)."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT notified_status FROM runs WHERE run_id = %s", (run_id,)
            ).fetchone()
        return None if row is None else (None if row[0] is None else str(row[0]))

    def mark_notified(self, run_id: str, status: str) -> None:
        with self._connect() as conn:
            conn.execute("UPDATE runs SET notified_status = %s WHERE run_id = %s", (status, run_id))

    def batch_rows(self, run_id: str) -> list[dict[str, object]]:
        """The run's batch rows, ordered by batch id (for display and checks)."""
        with self._connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute(
                f"SELECT run_id, batch_id, image_count, {', '.join(STAT_COLUMNS)} "
                "FROM batch_stats WHERE run_id = %s ORDER BY batch_id",
                (run_id,),
            )
            return [dict(row) for row in cur.fetchall()]
