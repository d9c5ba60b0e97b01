"""PostgreSQL storage of run results (psycopg 3): versioned migrations and idempotent upserts."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

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
    (
        2,
        """
        ALTER TABLE runs DROP CONSTRAINT runs_status_check;
        ALTER TABLE runs ADD CONSTRAINT runs_status_check
            CHECK (status IN ('processing', 'finished', 'failed'));
        ALTER TABLE runs ADD COLUMN shards integer NOT NULL DEFAULT 1;
        ALTER TABLE rejected_images ADD COLUMN shard integer NOT NULL DEFAULT 0;
        ALTER TABLE rejected_images ADD COLUMN copied_to text;
        CREATE TABLE run_shards (
            run_id text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            shard integer NOT NULL,
            images_processed integer NOT NULL,
            images_rejected integer NOT NULL,
            part_uri text,
            done_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (run_id, shard)
        );
        """,
    ),
    (
        3,
        """
        CREATE TABLE jobs (
            job_id text PRIMARY KEY,
            kind text,
            params jsonb,
            status text NOT NULL
                CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
            shards integer NOT NULL DEFAULT 1,
            shards_done integer NOT NULL DEFAULT 0,
            outputs jsonb,
            reason text,
            document_etag text,
            created_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            finished_at timestamptz,
            notified_status text,
            notification_id text
        );
        CREATE TABLE job_shards (
            job_id text NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
            shard integer NOT NULL,
            summary jsonb NOT NULL,
            done_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job_id, shard)
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


@dataclass(frozen=True)
class ShardRecord:
    """One shard's results: its batches' rows and rejections, and its Parquet part."""

    run_id: str
    shard: int
    shards: int
    batch_ids: Sequence[str]
    stats: Sequence[BatchStats]
    image_counts: dict[str, int]
    rejections: Sequence[Rejection]
    part_uri: str | None


@dataclass(frozen=True)
class RunTotals:
    """What the finished shards of a run add up to."""

    shards_done: int
    images_processed: int
    images_rejected: int
    part_uris: list[str]
    batch_ids: list[str]
    largest_batch: int


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

    @staticmethod
    def _upsert_rows(
        conn: Connection, run_id: str, stats: Sequence[BatchStats], image_counts: dict[str, int]
    ) -> None:
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
                        run_id,
                        batch.batch_id,
                        image_counts[batch.batch_id],
                        *(getattr(batch, c) for c in STAT_COLUMNS),
                    )
                    for batch in stats
                ],
            )

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
            self._upsert_rows(conn, record.run_id, record.stats, record.image_counts)
            conn.execute(
                "DELETE FROM batch_stats WHERE run_id = %s AND NOT (batch_id = ANY(%s))",
                (record.run_id, [s.batch_id for s in record.stats]),
            )
            conn.execute("DELETE FROM rejected_images WHERE run_id = %s", (record.run_id,))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO rejected_images (run_id, object_key, reason, detail, copied_to) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [
                        (record.run_id, r.key, r.reason, r.detail, r.copied_to)
                        for r in record.rejections
                    ],
                )
            previous = locked.fetchone()
        return None if previous is None or previous[0] is None else str(previous[0])

    def save_shard(self, record: ShardRecord) -> int:
        """Store one shard's rows and rejections, mark it done; return the shards now done.

        The run's row is locked first, so shards finishing at the same instant count one after
        the other: exactly one of them sees the last count (a redelivered shard sees it again,
        and everything after is idempotent).
        """
        with self._connect() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO runs (run_id, status, images_processed, images_rejected, shards) "
                "VALUES (%s, 'processing', 0, 0, %s) ON CONFLICT (run_id) DO NOTHING",
                (record.run_id, record.shards),
            )
            conn.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE", (record.run_id,))
            conn.execute(
                "UPDATE runs SET shards = %s WHERE run_id = %s", (record.shards, record.run_id)
            )
            self._upsert_rows(conn, record.run_id, record.stats, record.image_counts)
            conn.execute(
                "DELETE FROM batch_stats WHERE run_id = %s AND batch_id = ANY(%s) "
                "AND NOT (batch_id = ANY(%s))",
                (record.run_id, list(record.batch_ids), [s.batch_id for s in record.stats]),
            )
            conn.execute(
                "DELETE FROM rejected_images WHERE run_id = %s AND shard = %s",
                (record.run_id, record.shard),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO rejected_images (run_id, object_key, reason, detail, shard, "
                    "copied_to) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, object_key) "
                    "DO UPDATE SET reason = EXCLUDED.reason, detail = EXCLUDED.detail, "
                    "shard = EXCLUDED.shard, copied_to = EXCLUDED.copied_to",
                    [
                        (record.run_id, r.key, r.reason, r.detail, record.shard, r.copied_to)
                        for r in record.rejections
                    ],
                )
            conn.execute(
                """
                INSERT INTO run_shards (run_id, shard, images_processed, images_rejected, part_uri)
                VALUES (%s, %s, %s, %s, %s)
                ON CONFLICT (run_id, shard) DO UPDATE SET
                    images_processed = EXCLUDED.images_processed,
                    images_rejected = EXCLUDED.images_rejected,
                    part_uri = EXCLUDED.part_uri, done_at = now()
                """,
                (
                    record.run_id,
                    record.shard,
                    sum(record.image_counts.values()),
                    len(record.rejections),
                    record.part_uri,
                ),
            )
            conn.execute(
                "DELETE FROM run_shards WHERE run_id = %s AND shard >= %s",
                (record.run_id, record.shards),
            )
            row = conn.execute(
                "SELECT count(*) FROM run_shards WHERE run_id = %s", (record.run_id,)
            ).fetchone()
        assert row is not None
        return int(str(row[0]))

    def run_totals(self, run_id: str) -> RunTotals:
        with self._connect() as conn:
            shards = conn.execute(
                "SELECT count(*), coalesce(sum(images_processed), 0), "
                "coalesce(sum(images_rejected), 0) FROM run_shards WHERE run_id = %s",
                (run_id,),
            ).fetchone()
            parts = conn.execute(
                "SELECT part_uri FROM run_shards WHERE run_id = %s AND part_uri IS NOT NULL "
                "ORDER BY shard",
                (run_id,),
            ).fetchall()
            batches = conn.execute(
                "SELECT batch_id, image_count FROM batch_stats WHERE run_id = %s ORDER BY batch_id",
                (run_id,),
            ).fetchall()
        assert shards is not None
        return RunTotals(
            shards_done=int(str(shards[0])),
            images_processed=int(str(shards[1])),
            images_rejected=int(str(shards[2])),
            part_uris=[str(row[0]) for row in parts],
            batch_ids=[str(row[0]) for row in batches],
            largest_batch=max((int(str(row[1])) for row in batches), default=0),
        )

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        parquet_uri: str | None,
        images_processed: int,
        images_rejected: int,
        error: str | None,
    ) -> None:
        with self._connect() as conn:
            conn.execute(
                "UPDATE runs SET status = %s, parquet_uri = %s, images_processed = %s, "
                "images_rejected = %s, error = %s, processed_at = now() WHERE run_id = %s",
                (status, parquet_uri, images_processed, images_rejected, error, run_id),
            )

    def rejections(self, run_id: str) -> list[Rejection]:
        """The run's rejected images, ordered by key."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT object_key, reason, detail, copied_to FROM rejected_images "
                "WHERE run_id = %s ORDER BY object_key",
                (run_id,),
            ).fetchall()
        found = []
        for key, reason, detail, copied_to in rows:
            batch_id, _, name = str(key).split("/", 2)[-1].partition("/")
            found.append(
                Rejection(
                    str(key),
                    batch_id,
                    name,
                    str(reason),
                    str(detail),
                    None if copied_to is None else str(copied_to),
                )
            )
        return found

    def notify_once(self, run_id: str, status: str, publish: Callable[[], object]) -> bool:
        """Call ``publish`` unless ``status`` was announced for the run; True if it published.

        The run's row stays locked from the check, across the publish, to the record of the
        announcement: a second worker on the same run waits, then sees the status announced.
        What remains is a crash after SNS accepted the message and before the commit: the row
        then still says "not announced" and the redelivery publishes again (SNS standard topics
        have no deduplication); the message's ``notification_id`` lets subscribers drop it.
        """
        with self._connect() as conn, conn.transaction():
            row = conn.execute(
                "SELECT notified_status FROM runs WHERE run_id = %s FOR UPDATE", (run_id,)
            ).fetchone()
            if row is None:
                raise LookupError(f"run {run_id!r} has no row to record its notification in")
            if row[0] == status:
                return False
            publish()
            conn.execute("UPDATE runs SET notified_status = %s WHERE run_id = %s", (status, run_id))
        return True

    def run_row(self, run_id: str) -> dict[str, object] | None:
        """The run's row (status, Parquet URI, counts, error, shards, announced status)."""
        with self._connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute(
                "SELECT status, parquet_uri, images_processed, images_rejected, error, shards, "
                "notified_status, processed_at FROM runs WHERE run_id = %s",
                (run_id,),
            )
            row = cur.fetchone()
        return None if row is None else dict(row)

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

    # --- jobs -----------------------------------------------------------------------------

    def create_job(
        self,
        job_id: str,
        *,
        kind: str | None,
        params: Mapping[str, Any] | None,
        shards: int,
        etag: str | None,
    ) -> None:
        """Record a job as queued (nothing changes if it is already recorded)."""
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO jobs (job_id, kind, params, status, shards, document_etag) "
                "VALUES (%s, %s, %s, 'queued', %s, %s) ON CONFLICT (job_id) DO NOTHING",
                (job_id, kind, None if params is None else Jsonb(dict(params)), shards, etag),
            )

    def start_job(self, job_id: str) -> None:
        """queued -> running (the first time a worker works on it)."""
        with self._connect() as conn:
            conn.execute(
                "UPDATE jobs SET status = 'running', started_at = coalesce(started_at, now()) "
                "WHERE job_id = %s AND status IN ('queued', 'running')",
                (job_id,),
            )

    def job_row(self, job_id: str) -> dict[str, Any] | None:
        """The job's row (kind, params, status, shards, outputs, reason, timings...)."""
        with self._connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute(
                "SELECT job_id, kind, params, status, shards, shards_done, outputs, reason, "
                "document_etag, created_at, started_at, finished_at, notified_status, "
                "notification_id, extract(epoch FROM finished_at - created_at) AS duration_s "
                "FROM jobs WHERE job_id = %s",
                (job_id,),
            )
            row = cur.fetchone()
        if row is None:
            return None
        found = dict(row)
        if found["duration_s"] is not None:
            found["duration_s"] = float(found["duration_s"])
        return found

    def save_job_shard(
        self, job_id: str, *, shard: int, shards: int, summary: Mapping[str, Any]
    ) -> int:
        """Store a shard's summary; return the shards now done.

        The job's row is locked first, so shards finishing together count one after the
        other: exactly one of them sees the last count (a redelivered shard sees it again).
        """
        with self._connect() as conn, conn.transaction():
            locked = conn.execute(
                "SELECT 1 FROM jobs WHERE job_id = %s FOR UPDATE", (job_id,)
            ).fetchone()
            if locked is None:
                raise LookupError(f"job {job_id!r} has no row to record its shard in")
            conn.execute(
                "INSERT INTO job_shards (job_id, shard, summary) VALUES (%s, %s, %s) "
                "ON CONFLICT (job_id, shard) DO UPDATE SET summary = EXCLUDED.summary, "
                "done_at = now()",
                (job_id, shard, Jsonb(dict(summary))),
            )
            row = conn.execute(
                "SELECT count(*) FROM job_shards WHERE job_id = %s AND shard < %s",
                (job_id, shards),
            ).fetchone()
            assert row is not None
            done = int(str(row[0]))
            conn.execute("UPDATE jobs SET shards_done = %s WHERE job_id = %s", (done, job_id))
        return done

    def job_shard_results(self, job_id: str) -> list[dict[str, Any]]:
        """The shards' summaries, in shard order."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT summary FROM job_shards WHERE job_id = %s ORDER BY shard", (job_id,)
            ).fetchall()
        return [dict(row[0]) for row in rows]  # type: ignore[call-overload]

    def finish_job(
        self,
        job_id: str,
        *,
        status: str,
        outputs: Mapping[str, Any] | None,
        reason: str | None,
    ) -> None:
        """Record the job's end; a failed job stays failed."""
        with self._connect() as conn:
            conn.execute(
                "UPDATE jobs SET status = %s, outputs = %s, reason = %s, "
                "finished_at = coalesce(finished_at, now()) "
                "WHERE job_id = %s AND (status <> 'failed' OR %s = 'failed')",
                (
                    status,
                    None if outputs is None else Jsonb(dict(outputs)),
                    reason,
                    job_id,
                    status,
                ),
            )

    def notify_job_once(self, job_id: str, status: str, publish: Callable[[], str]) -> bool:
        """Call ``publish`` unless ``status`` was announced for the job; True if it published.

        Same locking as :meth:`notify_once`; the SNS message id is kept with the job.
        """
        with self._connect() as conn, conn.transaction():
            row = conn.execute(
                "SELECT notified_status FROM jobs WHERE job_id = %s FOR UPDATE", (job_id,)
            ).fetchone()
            if row is None:
                raise LookupError(f"job {job_id!r} has no row to record its notification in")
            if row[0] is not None:
                return False
            message_id = publish()
            conn.execute(
                "UPDATE jobs SET notified_status = %s, notification_id = %s WHERE job_id = %s",
                (status, message_id, job_id),
            )
        return True

    def save_run_stats(
        self,
        run_id: str,
        *,
        stats: Sequence[BatchStats],
        image_counts: Mapping[str, int],
        parquet_uri: str,
    ) -> None:
        """A job's batch statistics as a finished run's row and batch rows (idempotent)."""
        self.save_run(
            RunRecord(
                run_id=run_id,
                status="finished",
                parquet_uri=parquet_uri,
                stats=stats,
                image_counts=dict(image_counts),
                images_processed=sum(image_counts.values()),
                rejections=[],
            )
        )
