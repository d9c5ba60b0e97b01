"""The contract between the worker's job framework and the job kinds.

A kind parses and validates its parameters (:meth:`JobKind.parse`), says how many shards the job
splits into (:meth:`JobKind.shards`), runs one shard (:meth:`JobKind.run_shard`, possibly in
another task, possibly twice: a redelivered shard must write the same objects under the same
keys) and, once every shard has run, finishes the job (:meth:`JobKind.finish`: merges the
shards' results, writes the manifest under the job's output prefix, returns the outputs that go
into the job's status and notification).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from batch_stats.engine import BatchStats


class JobSpecError(ValueError):
    """A job document or its parameters are invalid; ``problems`` names every one of them."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


class JobInputError(RuntimeError):
    """The job's inputs are unusable (a missing tile prefix or target, unreadable images...).

    Not retried: the job fails with this message as its reason.
    """


class JobStore(Protocol):
    """The objects a job reads and writes (S3 in the worker, moto's server in tests)."""

    def get(self, bucket: str, key: str) -> bytes:
        """The object's bytes; raises ``ObjectMissingError`` when it does not exist."""
        ...

    def put(
        self, bucket: str, key: str, data: bytes, *, content_type: str, metadata: Mapping[str, str]
    ) -> None: ...

    def list_keys(self, bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size) of every object under ``prefix``, in key order."""
        ...


class RunRows(Protocol):
    """The batch statistics table (PostgreSQL in the worker) for kinds that produce run rows."""

    def save_run_stats(
        self,
        run_id: str,
        *,
        stats: Sequence[BatchStats],
        image_counts: Mapping[str, int],
        parquet_uri: str,
    ) -> None:
        """Upsert the run's row and exactly these batch rows (idempotent)."""
        ...


@dataclass(frozen=True)
class JobContext:
    """Where a job runs: its id, its buckets, the store and a scratch folder for this shard."""

    job_id: str
    #: The raw bucket: job documents, and a job's inputs (tiles, targets).
    input_bucket: str
    #: The results bucket: every job's outputs (``datasets/<job_id>/``, ``mosaics/<job_id>/``,
    #: ``results/<job_id>/``) and shared caches.
    output_bucket: str
    store: JobStore
    #: An empty local folder that the framework removes after the shard.
    scratch: Path
    #: The batch statistics table, where the worker has one (None: a kind skips its rows).
    rows: RunRows | None = None


P = TypeVar("P")


class JobKind(Protocol[P]):
    """One kind of job (``synthetic-stats``, ``digits``, ``mosaic``)."""

    #: The ``kind`` value of the job document.
    name: str

    def parse(self, params: Mapping[str, Any]) -> P:
        """Validate the document's ``params``; raise JobSpecError naming every problem."""
        ...

    def output_prefix(self, job_id: str) -> str:
        """The key prefix (in the output bucket) under which the job writes, ending with '/'."""
        ...

    def shards(self, params: P) -> int:
        """How many shards the job splits into (1 for a small job); deterministic."""
        ...

    def run_shard(self, params: P, *, shard: int, shards: int, ctx: JobContext) -> dict[str, Any]:
        """Run one shard; return a JSON-serialisable summary that :meth:`finish` receives.

        Deterministic and idempotent: running a shard again (a redelivered message, a task
        killed mid-way) writes the same bytes under the same keys and returns the same summary.
        Raises JobInputError for inputs that will never work.
        """
        ...

    def finish(
        self, params: P, *, shard_results: Sequence[Mapping[str, Any]], ctx: JobContext
    ) -> dict[str, Any]:
        """Combine the shards' summaries (in shard order), write the job's manifest last.

        Returns the job's outputs (JSON-serialisable: URIs, counts, checksums) for its status
        row and its notification.
        """
        ...

    def demo_params(self, *, store: JobStore, input_bucket: str, scratch: Path) -> dict[str, Any]:
        """The ``params`` of a small demo job (``batch-stats demo --job <kind>``).

        Uploads whatever inputs the job needs (tiles, a target) to ``input_bucket`` first.
        """
        ...

    def write_preview(
        self, outputs: Mapping[str, Any], *, store: JobStore, output_bucket: str, path: Path
    ) -> Path:
        """Write a preview image of a finished job's outputs to ``path`` and return it.

        A grid of dataset samples with their labels; the mosaic itself; a chart of the
        statistics.
        """
        ...
