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
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, or None for any other URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


class Webhook:
    """Receives SNS HTTP deliveries; confirms subscriptions; queues notification messages.

    A subscription is confirmed by fetching its ``SubscribeURL``, and only when that URL is an
    http(s) URL on the SNS endpoint the webhook subscribed through (the local moto server): a
    delivery that names any other URL (``file://``, another host or port) is refused with 400 and
    nothing is fetched.
    """

    def __init__(
        self,
        server: ThreadingHTTPServer,
        received: queue.Queue[dict[str, Any]],
        trusted: set[tuple[str, str, int]],
    ) -> None:
        self._server = server
        self._received = received
        self._trusted = trusted
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
        """Subscribe to ``topic_arn``; confirmations are then accepted from ``sns``'s endpoint."""
        origin = _origin(str(sns.meta.endpoint_url))
        if origin is None:
            raise ValueError(f"the SNS endpoint {sns.meta.endpoint_url!r} is not an http(s) URL")
        self._trusted.add(origin)
        arn = sns.subscribe(
            TopicArn=topic_arn, Protocol="http", Endpoint=self.url, ReturnSubscriptionArn=True
        )["SubscriptionArn"]
        return str(arn)


def _handler(
    received: queue.Queue[dict[str, Any]], trusted: set[tuple[str, str, int]]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            try:
                envelope = json.loads(self.rfile.read(length))
                kind = envelope.get("Type")
                if kind == "SubscriptionConfirmation":
                    url = str(envelope["SubscribeURL"])
                    if _origin(url) not in trusted:
                        raise ValueError(
                            f"SubscribeURL {url!r} is not on the SNS endpoint; allowed: http(s) "
                            f"URLs on {sorted(trusted)}"
                        )
                    with urllib.request.urlopen(url, timeout=10) as reply:
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
    trusted: set[tuple[str, str, int]] = set()
    server = ThreadingHTTPServer((host, 0), _handler(received, trusted))
    thread = threading.Thread(target=server.serve_forever, name="webhook", daemon=True)
    thread.start()
    try:
        yield Webhook(server, received, trusted)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
