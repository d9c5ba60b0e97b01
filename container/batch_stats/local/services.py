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
