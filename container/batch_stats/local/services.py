"""Local stand-ins for AWS: moto in server mode on 127.0.0.1 and an embedded PostgreSQL."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCAL_ACCOUNT = "123456789012"
LOCAL_REGION = "us-east-1"


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
    import copy

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


def _threaded_moto_server(host: str, port: int) -> Any:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from moto.server import ThreadedMotoServer
    from werkzeug.serving import make_server

    class Server(ThreadedMotoServer):
        """moto's ThreadedMotoServer, with DynamoDB requests serialized."""

        def _server_entry(self) -> None:
            app = _SerializedDynamoDB(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    return Server(ip_address=host, port=port, verbose=False)


@contextmanager
def moto_server(*, host: str = "127.0.0.1", port: int = 0) -> Iterator[MotoEndpoint]:
    """Run moto in server mode in a background thread (``port=0``: a free port)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    _item_level_transactions()
    server = _threaded_moto_server(host, port)
    server.start()
    try:
        bound_host, bound_port = server.get_host_and_port()
        yield MotoEndpoint(url=f"http://{bound_host}:{bound_port}")
    finally:
        server.stop()


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
