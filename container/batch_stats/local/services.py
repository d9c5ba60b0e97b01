"""Local stand-ins for AWS: moto in server mode on 127.0.0.1 and an embedded PostgreSQL."""

from __future__ import annotations

import copy
import logging
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCAL_ACCOUNT = "123456789012"
LOCAL_REGION = "us-east-1"
#: Objects up to this size stay in the moto server's memory (``MOTO_S3_DEFAULT_KEY_BUFFER_SIZE``,
#: unless set). moto's default writes every object over 5 MB to a temporary file on this
#: machine's disk, which S3 does not: a 386 MB upload took 7.0 s that way and 2.2 s in memory.
S3_IN_MEMORY_OBJECT_BYTES = 1 << 30


@dataclass(frozen=True)
class MotoEndpoint:
    """A running moto server."""

    url: str

    def environ(self) -> dict[str, str]:
        """Environment variables that point boto3 (and so every component) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_REGION": LOCAL_REGION,
            "AWS_DEFAULT_REGION": LOCAL_REGION,
        }


class _SerializedDynamoDB:
    """WSGI middleware: one DynamoDB request at a time.

    DynamoDB applies each request atomically; moto's in-memory backend does not (concurrent
    ``UpdateItem``/``TransactWriteItems`` calls can lose increments or fail while copying the
    table). Serializing only DynamoDB requests restores per-request atomicity, while SQS long
    polls and S3 transfers stay concurrent.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            with self._lock:
                # Materialize the response inside the lock: the backend runs while iterating.
                return list(self._app(environ, start_response))
        return self._app(environ, start_response)


class _NoTableCopy:
    """Stands for the ``copy`` module inside moto's DynamoDB backend during one transaction."""

    @staticmethod
    def deepcopy(value: Any) -> Any:
        return value


def _item_level_transactions() -> None:
    """Make moto's TransactWriteItems roll back the items it touches, not a copy of the table.

    moto deep-copies every table a transaction names before applying it (to restore it on a
    cancellation): O(table size) per transaction, so recording n uploads costs O(n^2) and a run of
    20,000 images takes hours. The replacement snapshots only the (at most 100) items the
    transaction names, and restores exactly those on failure; DynamoDB requests are serialised
    by ``_SerializedDynamoDB``, so nothing else changes the table meanwhile.
    """
    from moto.dynamodb import models

    backend_class = models.DynamoDBBackend
    original = backend_class.transact_write_items
    if getattr(original, "_item_level", False):
        return

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        touched: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        for entry in transact_items:
            op = next(iter(entry.values()))
            table_name = op.get("TableName")
            if not table_name or table_name not in self.tables:
                continue
            table = self.tables[table_name]
            if "Key" in op:
                key = op["Key"]
            else:
                names = [table.hash_key_attr, table.range_key_attr]
                key = {name: op["Item"][name] for name in names if name and name in op["Item"]}
            try:
                before = self.get_item(table_name, key)
            except Exception:  # an invalid key: moto's own checks below report it
                continue
            touched.append(
                (table_name, key, None if before is None else copy.deepcopy(before.to_json()))
            )
        saved = vars(models)["copy"]
        setattr(models, "copy", _NoTableCopy)  # noqa: B010 (moto's private module binding)
        try:
            original(self, transact_items)
        except BaseException:
            for table_name, key, before in reversed(touched):
                if before is None:
                    if self.get_item(table_name, key) is not None:
                        self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, before["Attributes"])
            raise
        finally:
            setattr(models, "copy", saved)  # noqa: B010

    transact_write_items._item_level = True  # type: ignore[attr-defined]
    backend_class.transact_write_items = transact_write_items  # type: ignore[method-assign]


def _linear_sqs_queues() -> None:
    """Make moto's SQS cost O(1) per message received and one pass per count, as SQS does.

    moto answers every ``SendMessage`` by computing all the queue's attributes (three passes
    over every message, each reading the clock per message) and checks each message it
    receives against the retention period by computing them all again (nine passes): with n
    messages waiting, receiving them costs O(n^2). The replacements read the retention period
    directly and count the messages in one pass with one reading of the clock; what they
    answer is unchanged.
    """
    from moto.core.utils import unix_time, unix_time_millis
    from moto.sqs import models

    queue_class = models.Queue
    if getattr(queue_class, "_linear", False):
        return

    def messages(self: Any) -> list[Any]:
        now = unix_time_millis()
        return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]

    def delayed(self: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in self._messages if now < m.delayed_until)

    def not_visible(self: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in self._messages if not now > m.visible_at)

    def valid(self: Any, queue_name: str, message: Any) -> bool:
        retention = int(self.get_queue(queue_name).message_retention_period)
        return bool(retention + message.sent_timestamp / 1000 > unix_time())

    queue_class.messages = property(messages)  # type: ignore[assignment,method-assign]
    queue_class.approximate_number_of_messages_delayed = property(delayed)  # type: ignore[assignment,method-assign]
    queue_class.approximate_number_of_messages_not_visible = property(not_visible)  # type: ignore[assignment,method-assign]
    models.SQSBackend.is_message_valid_based_on_retention_period = valid  # type: ignore[method-assign]
    queue_class._linear = True  # type: ignore[attr-defined]


def _partition_queries() -> None:
    """Make moto's Query of a table read one partition, in O(partition), as DynamoDB does.

    moto answers every Query page by going through every item of the table: it sorts them all
    with its typed comparisons, measures each one's size before testing the key condition, and
    walks past the previous pages item by item. A run's partition of 20,000 objects then costs
    seconds per page, and the worker pages through it once per shard. The replacement serves
    Queries on the table's own keys (string sort keys, no index, no legacy ``KeyConditions``
    filters) from the partition alone, with the same order, page limits (1 MB, ``Limit``),
    ``LastEvaluatedKey``, filter and projection; any other Query goes to moto's own code.
    """
    from moto.dynamodb.models import table as tables

    table_class = tables.Table
    original = table_class.query
    if getattr(original, "_partition", False):
        return

    def query(
        self: Any,
        hash_key: Any,
        range_comparison: str | None,
        range_objs: list[Any],
        limit: Any,
        exclusive_start_key: Any,
        scan_index_forward: bool,
        projection_expressions: list[list[str]] | None,
        index_name: str | None = None,
        consistent_read: bool = False,
        filter_expression: Any = None,
        hash_key_conditions: Any = None,
        range_key_conditions: Any = None,
        **filter_kwargs: Any,
    ) -> tuple[list[Any], int, dict[str, Any] | None]:
        partition = self.items.get(hash_key) if self.range_key_attr else None
        simple = (
            index_name is None
            and not filter_kwargs
            and isinstance(partition, dict)
            and (range_key_conditions is None or len(range_key_conditions) <= 1)
            and all(item.range_key.type == "S" for item in partition.values())
        )
        if not simple:
            return original(
                self,
                hash_key,
                range_comparison,
                range_objs,
                limit,
                exclusive_start_key,
                scan_index_forward,
                projection_expressions,
                index_name,
                consistent_read,
                filter_expression,
                hash_key_conditions=hash_key_conditions,
                range_key_conditions=range_key_conditions,
                **filter_kwargs,
            )
        assert isinstance(partition, dict)
        ordered = sorted(
            partition.values(),
            key=lambda item: item.range_key.value,
            reverse=not scan_index_forward,
        )
        if range_comparison:
            ordered = [i for i in ordered if i.range_key.compare(range_comparison, range_objs)]
        if exclusive_start_key is not None:
            start = exclusive_start_key[self.range_key_attr]["S"]
            ordered = [
                i
                for i in ordered
                if (i.range_key.value > start if scan_index_forward else i.range_key.value < start)
            ]
        results: list[Any] = []
        size = 0
        last: dict[str, Any] | None = None
        for item in ordered:
            if len(results) == limit or size + item.size() > tables.RESULT_SIZE_LIMIT:
                last = self._get_last_evaluated_key(results[-1], None)
                break
            results.append(item)
            size += item.size()
        scanned = len(results)
        results = copy.deepcopy(results)
        if filter_expression is not None:
            results = [item for item in results if filter_expression.expr(item)]
        if projection_expressions:
            results = [item.project(projection_expressions) for item in results]
        return results, scanned, last

    query._partition = True  # type: ignore[attr-defined]
    table_class.query = query  # type: ignore[method-assign]


def serve_moto(host: str, port: int) -> None:
    """The moto server process: moto's WSGI app with the changes above, one thread a request.

    Prints the bound port on a line of its own, then serves until its standard input closes
    (the parent stopped or died).
    """
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.setdefault("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(S3_IN_MEMORY_OBJECT_BYTES))
    _item_level_transactions()
    _linear_sqs_queues()
    _partition_queries()

    class Dispatcher(DomainDispatcherApplication):
        """moto's dispatcher, remembering which backend serves a host.

        moto looks the backend up on every request, under a lock, by listing its own package
        folder (a directory read and about 180 ``stat`` calls) and matching every service's URL
        patterns: a few milliseconds per request, during which other requests wait.
        """

        def __init__(self, create_app: Any) -> None:
            super().__init__(create_app)
            self._hosts: dict[str, Any] = {}

        def get_backend_for_host(self, host: str | None) -> Any:
            if host is None:
                return None
            if host not in self._hosts:
                self._hosts[host] = super().get_backend_for_host(host)
            return self._hosts[host]

    app = _SerializedDynamoDB(Dispatcher(create_backend_app))
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    print(server.server_address[1], flush=True)
    # Nothing else goes to the pipe the parent read the port from (it no longer reads it), and
    # Ctrl-C is the parent's to handle: it closes the pipe to stop this process.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def serve() -> None:
        server.serve_forever()

    threading.Thread(target=serve, name="moto-server", daemon=True).start()
    sys.stdin.read()  # returns when the parent closes the pipe or exits
    os._exit(0)


@contextmanager
def moto_server(*, host: str = "127.0.0.1", port: int = 0) -> Iterator[MotoEndpoint]:
    """Run moto in server mode in a child process (``port=0``: a free port); stop it on exit.

    A process of its own, not a thread: moto's work per request then runs beside the clients
    (the Lambda handler, the worker, the tests) instead of taking turns with them for one
    interpreter lock.
    """
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from batch_stats.local.services import serve_moto; serve_moto({host!r}, {int(port)})",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.isdigit():
            raise RuntimeError(f"the moto server process did not start (it said {line!r})")
        yield MotoEndpoint(url=f"http://{host}:{line}")
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start a real PostgreSQL (``pgserver``) in ``data_dir``; yield its connection URI."""
    # platformdirs (used by pgserver) warns when XDG_RUNTIME_DIR is unset, as in containers and
    # CI; pgserver then uses /tmp, which is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pgserver

    server = pgserver.get_server(data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


@contextmanager
def patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
