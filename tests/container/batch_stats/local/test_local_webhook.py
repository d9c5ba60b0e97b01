"""The local webhook fetches a SubscribeURL only on the SNS endpoint it subscribed through."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest
from batch_stats.local.services import MotoEndpoint, moto_server
from batch_stats.local.webhook import Webhook, webhook


@pytest.fixture(scope="module")
def endpoint() -> Iterator[MotoEndpoint]:
    with moto_server() as running:
        yield running


@pytest.fixture
def sns(endpoint: MotoEndpoint) -> Any:
    return boto3.client(
        "sns",
        endpoint_url=endpoint.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


class Recorder(BaseHTTPRequestHandler):
    """Any other local HTTP server: records the requests that reach it."""

    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def other_server() -> Iterator[str]:
    Recorder.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def _confirmation(hook: Webhook, subscribe_url: str) -> int:
    body = json.dumps({"Type": "SubscriptionConfirmation", "SubscribeURL": subscribe_url})
    request = urllib.request.Request(hook.url, data=body.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_subscribe_urls_elsewhere_are_refused_and_not_fetched(
    sns: Any, endpoint: MotoEndpoint, other_server: str, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the webhook")
    topic = sns.create_topic(Name="hook-test")["TopicArn"]
    with webhook() as hook:
        # Before any subscription, no endpoint is trusted at all.
        assert _confirmation(hook, f"{endpoint.url}/?Action=ConfirmSubscription") == 400
        hook.subscribe(sns, topic)
        for url in (
            secret.as_uri(),
            f"{other_server}/steal",
            "ftp://127.0.0.1/x",
            f"https://{endpoint.url.removeprefix('http://')}/wrong-scheme-port",
            "http://[::1/broken",
        ):
            assert _confirmation(hook, url) == 400, url
        assert Recorder.hits == []
        # The SNS endpoint itself is fetched (moto answers the confirmation call).
        port = endpoint.url.rsplit(":", 1)[1]
        assert _confirmation(hook, f"http://127.0.0.1:{port}/?Action=ListTopics") == 200
