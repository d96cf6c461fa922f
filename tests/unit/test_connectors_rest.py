"""The REST connector type against a real HTTP server on 127.0.0.1 (allowed by the local policy), and its
refusals of internal addresses through the outbound-URL guard."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from flowgate.connectors import registry
from flowgate.connectors.runtime import ConnectorError, RunContext
from flowgate.url_guard import OutboundPolicy

LOCAL = RunContext(outbound_policy=OutboundPolicy.from_allow_list("127.0.0.0/8,::1"), allow_local_git=True)
PUBLIC_ONLY = RunContext()


class EchoHandler(BaseHTTPRequestHandler):
    """Answers by path: /echo reflects the request as JSON, others exercise one behaviour each."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = urlsplit(self.path)
        if path.path == "/echo":
            echo = {
                "method": self.command,
                "path": path.path,
                "args": {k: v if len(v) > 1 else v[0] for k, v in parse_qs(path.query).items()},
                "headers": dict(self.headers.items()),
                "data": raw.decode("utf-8", "replace"),
            }
            self._send(200, json.dumps(echo).encode(), "application/json", {"X-Echo": "yes"})
        elif path.path == "/text":
            self._send(200, "héllo".encode("latin-1"), "text/plain; charset=latin-1")
        elif path.path == "/missing":
            self._send(404, b'{"error": "no such thing"}', "application/problem+json")
        elif path.path == "/broken-json":
            self._send(500, b"{not json", "application/json")
        elif path.path == "/slow":
            time.sleep(1.5)
            self._send(200, b"late", "text/plain")
        elif path.path == "/big":
            self._send(200, b"x" * 300_000, "application/json")
        elif path.path == "/away":
            self._send(302, b"", "text/plain", {"Location": "http://169.254.169.254/latest/meta-data/"})
        else:
            self._send(204, b"", "text/plain")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up early (timeouts, truncation) are what some tests do


@contextlib.contextmanager
def serve_echo() -> Iterator[str]:
    """Run an EchoHandler server on 127.0.0.1; yields its base URL."""
    httpd = QuietServer(("127.0.0.1", 0), EchoHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_echo() as url:
        yield url


def call(inputs: dict[str, Any], ctx: RunContext = LOCAL) -> dict[str, Any]:
    rest = registry.get_type("REST")
    return rest.run(registry.validate_full(rest, inputs, ctx), ctx)


def test_the_seed_post_example(server: str) -> None:
    outputs = call({"url": f"{server}/echo", "method": "post", "data": "payload"})
    assert outputs["status_code"] == 200
    assert outputs["truncated"] is False
    assert outputs["headers"]["X-Echo"] == "yes"
    body = outputs["body"]  # JSON responses are decoded
    assert body["method"] == "POST"
    assert body["data"] == "payload"


def test_params_headers_json_and_form_data(server: str) -> None:
    outputs = call(
        {
            "url": f"{server}/echo",
            "method": "PUT",
            "params": {"q": "a b", "n": 3, "many": ["x", "y"]},
            "headers": {"X-Trace": "t-1", "X-Count": 5},
            "json": {"k": [1, 2]},
        }
    )
    body = outputs["body"]
    assert body["method"] == "PUT"
    assert body["args"] == {"q": "a b", "n": "3", "many": ["x", "y"]}
    assert body["headers"]["X-Trace"] == "t-1"
    assert body["headers"]["X-Count"] == "5"
    assert body["headers"]["Content-Type"] == "application/json"
    assert json.loads(body["data"]) == {"k": [1, 2]}
    form = call({"url": f"{server}/echo", "method": "post", "data": {"a": "1", "b": ["2", "3"]}})["body"]
    assert form["data"] == "a=1&b=2&b=3"


def test_basic_and_bearer_auth(server: str) -> None:
    basic = call({"url": f"{server}/echo", "auth": {"username": "ann", "password": "pw"}})["body"]
    assert basic["headers"]["Authorization"] == "Basic YW5uOnB3"
    bearer = call({"url": f"{server}/echo", "auth": {"token": "tok"}})["body"]
    assert bearer["headers"]["Authorization"] == "Bearer tok"


def test_text_bodies_are_decoded_with_their_charset(server: str) -> None:
    assert call({"url": f"{server}/text"})["body"] == "héllo"


def test_non_2xx_is_an_answer_not_a_failure(server: str) -> None:
    outputs = call({"url": f"{server}/missing", "method": "delete"})
    assert outputs["status_code"] == 404
    assert outputs["body"] == {"error": "no such thing"}  # +json is JSON too
    broken = call({"url": f"{server}/broken-json"})
    assert broken["status_code"] == 500
    assert broken["body"] == "{not json"  # undecodable JSON stays text


def test_head_and_options(server: str) -> None:
    assert call({"url": f"{server}/echo", "method": "head"})["body"] == ""
    assert call({"url": f"{server}/other", "method": "options"})["status_code"] == 204


def test_long_bodies_are_truncated(server: str) -> None:
    outputs = call({"url": f"{server}/big"})
    assert outputs["truncated"] is True
    assert outputs["body"] == "x" * LOCAL.max_body_bytes  # cut, so not decoded as JSON


def test_timeout_is_a_clean_error(server: str) -> None:
    with pytest.raises(ConnectorError) as caught:
        call({"url": f"{server}/slow", "timeout": 0.3})
    assert caught.value.message == "127.0.0.1 did not answer within 0.3 seconds"


def test_the_platform_caps_the_timeout(server: str) -> None:
    with pytest.raises(ConnectorError, match=r"did not answer within 0\.2 seconds"):
        call({"url": f"{server}/slow", "timeout": 30}, LOCAL.with_time_left(0.2))


def test_connection_refused_is_a_clean_error() -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectorError) as caught:
        call({"url": f"http://127.0.0.1:{port}/x?api_key=abc"})
    assert caught.value.message == "could not connect to 127.0.0.1: Connection refused"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "the cloud metadata address"),
        ("http://[fd00:ec2::254]/", "the cloud metadata address"),
        ("http://[::ffff:169.254.169.254]/", "the cloud metadata address"),
        ("http://2852039166/", "the cloud metadata address"),
        ("http://10.1.2.3/", "a private address"),
    ],
)
def test_internal_addresses_are_refused_even_with_the_local_allow_list(url: str, reason: str) -> None:
    rest = registry.get_type("REST")
    model = rest.schema.model_validate({"url": url})
    with pytest.raises(ConnectorError) as caught:
        rest.run(model, LOCAL)
    assert reason in caught.value.message


def test_loopback_is_refused_without_the_allow_list(server: str) -> None:
    rest = registry.get_type("REST")
    with pytest.raises(ConnectorError, match="a loopback address"):
        rest.run(rest.schema.model_validate({"url": f"{server}/echo"}), PUBLIC_ONLY)
    port = server.rsplit(":", 1)[1]
    with pytest.raises(ConnectorError, match="a loopback address"):
        rest.run(rest.schema.model_validate({"url": f"http://localhost:{port}/echo"}), PUBLIC_ONLY)


def test_redirect_to_the_metadata_address_is_refused(server: str) -> None:
    with pytest.raises(ConnectorError, match="redirect"):
        call({"url": f"{server}/away"})
