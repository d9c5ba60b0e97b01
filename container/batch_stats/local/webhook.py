"""A local HTTP endpoint subscribed to the SNS topic (what an HTTPS webhook is in AWS)."""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class Webhook:
    """Receives SNS HTTP deliveries; confirms subscriptions; queues notification messages."""

    def __init__(self, server: ThreadingHTTPServer, received: queue.Queue[dict[str, Any]]) -> None:
        self._server = server
        self._received = received
        host, port = server.server_address[:2]
        self.url = f"http://{host!s}:{port}/sns"

    def get(self, *, timeout: float) -> dict[str, Any]:
        """The next notification (the SNS envelope, with ``Message`` parsed as JSON)."""
        try:
            return self._received.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no SNS notification reached {self.url} in {timeout} s") from None

    def pending(self) -> list[dict[str, Any]]:
        """Notifications received and not taken yet."""
        items = []
        while True:
            try:
                items.append(self._received.get_nowait())
            except queue.Empty:
                return items

    def subscribe(self, sns: Any, topic_arn: str) -> str:
        arn = sns.subscribe(
            TopicArn=topic_arn, Protocol="http", Endpoint=self.url, ReturnSubscriptionArn=True
        )["SubscriptionArn"]
        return str(arn)


def _handler(received: queue.Queue[dict[str, Any]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            try:
                envelope = json.loads(self.rfile.read(length))
                kind = envelope.get("Type")
                if kind == "SubscriptionConfirmation":
                    with urllib.request.urlopen(envelope["SubscribeURL"], timeout=10) as reply:
                        reply.read()
                elif kind == "Notification":
                    message = envelope.get("Message", "")
                    with suppress(json.JSONDecodeError):
                        envelope["Message"] = json.loads(message)
                    received.put(envelope)
            except (ValueError, KeyError, OSError) as exc:
                log.warning("webhook could not handle a delivery: %s", exc)
                self.send_response(400)
                self.end_headers()
                return
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    return Handler


@contextmanager
def webhook(host: str = "127.0.0.1") -> Iterator[Webhook]:
    """Serve the webhook on a free port for the duration of the block."""
    received: queue.Queue[dict[str, Any]] = queue.Queue()
    server = ThreadingHTTPServer((host, 0), _handler(received))
    thread = threading.Thread(target=server.serve_forever, name="webhook", daemon=True)
    thread.start()
    try:
        yield Webhook(server, received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
