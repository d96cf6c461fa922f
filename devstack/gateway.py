"""The local API Gateway: waitress on loopback, calling the functions' workers with proxy events.

waitress (a pure-Python, threaded WSGI server) does the HTTP: a listen backlog that holds bursts of
clients, a pool of threads, request size limits, and timeouts for clients that stall. Everything the
gateway itself answers, the errors of HTTP parsing included, is in API Gateway's error format: JSON
`{"message": ...}` with an `x-amzn-ErrorType` header (devstack.apigw.error_response).

Besides the template's routes it serves one devstack path, `PUT /__devstack/cfn-response/<id>`,
where custom resource handlers send their CloudFormation response (the ResponseURL devstack gives
them), so the whole custom resource round trip runs through real HTTP as in AWS.

Given a TLS context it serves HTTPS instead, on the same port, as API Gateway does: a TLS front
(devstack.tls) listens there and forwards to waitress on a loopback port of its own, and the handlers'
events carry `X-Forwarded-Proto: https` and `X-Forwarded-Port` as API Gateway's do. Custom resources
still answer over plain HTTP, to waitress's port (`loopback_url`).
"""

from __future__ import annotations

import http
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, get_header_lines
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, WSGITask, hop_by_hop
from waitress.utilities import BadRequest, Error

from devstack.apigw import (
    INTERNAL_SERVER_ERROR,
    MAX_PAYLOAD_BYTES,
    MISSING_AUTHENTICATION_TOKEN,
    REQUEST_TOO_LONG,
    HttpRequest,
    HttpResponse,
    InvalidProxyResponse,
    RouteTable,
    error_response,
    http_response,
    proxy_event,
)
from devstack.custom_resources import CfnResponses
from devstack.lambdas import FunctionError, Invoke
from devstack.tls import TlsFront

log = logging.getLogger(__name__)

CFN_RESPONSE_PREFIX = "/__devstack/cfn-response/"
LISTEN_BACKLOG = 1024  # connections the kernel holds while every thread is busy (http.server had 5)
THREADS = 64  # requests handled at once; each waits on a function's worker, which caps the real work
CONNECTION_LIMIT = 1000  # open connections before waitress stops accepting (the backlog holds the rest)
# A request whose bytes stop arriving (a Content-Length larger than the body, headers never ended) is
# answered 408 after this many seconds without data; an idle keep-alive connection is closed after
# IDLE_TIMEOUT_SECONDS. Both are checked every CLEANUP_INTERVAL_SECONDS.
REQUEST_TIMEOUT_SECONDS = 5
IDLE_TIMEOUT_SECONDS = 60
CLEANUP_INTERVAL_SECONDS = 1
# API Gateway's quota is 10,240 bytes of request line and header values; names and separators add some.
MAX_HEADER_BYTES = 16 * 1024
_LOOP_SECONDS = 0.5  # how long the server's poll waits; `stop()` wakes it at once

_NOT_READY = error_response(503, "Service Unavailable", "ServiceUnavailableException")
_UNKNOWN_CFN_REQUEST = error_response(404, "Not Found", "NotFoundException")
_EMPTY_OK = HttpResponse(200, [], b"")
_RAW_HEADERS = "devstack.raw_headers"  # the WSGI environ key of the headers as sent


class Gateway:
    """Serves the template's API routes on 127.0.0.1; API routes answer 503 until `set_ready()`.

    With `tls`, over HTTPS only: waitress then listens on a free loopback port behind the TLS front.
    """

    def __init__(
        self,
        *,
        routes: RouteTable,
        invoke: Invoke,
        cfn_responses: CfnResponses,
        account_id: str,
        port: int = 3000,
        threads: int = THREADS,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.routes = routes
        self.invoke = invoke
        self.cfn_responses = cfn_responses
        self.account_id = account_id
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._closing = threading.Lock()  # `stop()` wakes the loop only while its trigger is open
        self._closed = False
        self._server = _Server(
            self.wsgi,
            host="127.0.0.1",
            port=0 if tls else port,
            threads=threads,
            backlog=LISTEN_BACKLOG,
            connection_limit=CONNECTION_LIMIT,
            channel_timeout=IDLE_TIMEOUT_SECONDS,
            cleanup_interval=CLEANUP_INTERVAL_SECONDS,
            max_request_header_size=MAX_HEADER_BYTES,
            # waitress refuses a body of max_request_body_size bytes; API Gateway accepts 10 MB exactly.
            max_request_body_size=MAX_PAYLOAD_BYTES + 1,
            asyncore_use_poll=True,  # select() cannot watch more than 1024 connections
            clear_untrusted_proxy_headers=False,  # handlers see X-Forwarded-* as API Gateway sends them
            ident="devstack",
        )
        self._thread = threading.Thread(target=self._serve, name="devstack-gateway", daemon=True)
        self._tls: TlsFront | None = None
        if tls is not None:
            try:
                self._tls = TlsFront(
                    tls,
                    backend_port=self._waitress_port,
                    port=port,
                    backlog=LISTEN_BACKLOG,
                    connection_limit=CONNECTION_LIMIT,
                )
            except BaseException:
                self._close()
                raise

    @property
    def port(self) -> int:
        """The bound port (the chosen one when started with port 0)."""
        return self._tls.port if self._tls else self._waitress_port

    @property
    def url(self) -> str:
        """Base URL of the gateway."""
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def loopback_url(self) -> str:
        """waitress's own plain-HTTP URL, where devstack's callbacks go: custom resources PUT their
        response there (in AWS a presigned S3 URL, not the API), which works whatever certificate the
        gateway serves. Without TLS it is `url`."""
        return f"http://127.0.0.1:{self._waitress_port}"

    @property
    def _waitress_port(self) -> int:
        port: Any = getattr(self._server, "effective_port")  # noqa: B009 - set at bind, not in the stubs
        return int(port)

    def start(self) -> None:
        """Serve in a background thread (the socket is listening already)."""
        self._thread.start()
        if self._tls:
            self._tls.start()

    def set_ready(self) -> None:
        """Start answering API routes (after provisioning and custom resources)."""
        self._ready.set()

    def stop(self) -> None:
        """Stop serving, close every connection and the socket (idempotent)."""
        if self._tls:
            self._tls.stop()  # first: no new connection reaches waitress while it closes
        with self._closing:
            self._stopping.set()
            if self._closed:
                return
            if not self._thread.is_alive():
                self._close()
                return
            # Under the lock the loop cannot have closed the trigger yet (a closed descriptor's
            # number may already belong to another file).
            self._server.pull_trigger()
        self._thread.join()

    def respond(self, request: HttpRequest) -> HttpResponse:
        """The response to one request (the HTTP plumbing is waitress's and `wsgi`'s)."""
        if request.path.startswith(CFN_RESPONSE_PREFIX) and request.method == "PUT":
            request_id = request.path.removeprefix(CFN_RESPONSE_PREFIX)
            return _EMPTY_OK if self.cfn_responses.deliver(request_id, request.body) else _UNKNOWN_CFN_REQUEST
        if not self._ready.is_set():
            return _NOT_READY
        match = self.routes.match(request.method, request.path)
        if match is None:
            return MISSING_AUTHENTICATION_TOKEN
        event = proxy_event(request, match, account_id=self.account_id)
        function_id = match.route.function_id
        try:
            result = self.invoke(function_id, event)
        except FunctionError as exc:
            # The worker logged the handler's traceback to the function's log, as Lambda does.
            log.error("%s failed on %s %s: %s", function_id, request.method, request.path, exc)
            return INTERNAL_SERVER_ERROR
        except Exception:
            log.exception("%s raised on %s %s", function_id, request.method, request.path)
            return INTERNAL_SERVER_ERROR
        try:
            response = http_response(result)
            _check_headers(response.headers)
        except InvalidProxyResponse as exc:
            log.error("%s returned an invalid proxy response: %s", function_id, exc)
            return INTERNAL_SERVER_ERROR
        if len(response.body) > MAX_PAYLOAD_BYTES:
            log.error("%s returned %d bytes, over API Gateway's limit", function_id, len(response.body))
            return INTERNAL_SERVER_ERROR
        return response

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The WSGI application: the request as API Gateway would see it, answered by `respond`."""
        started = time.monotonic()
        method = str(environ["REQUEST_METHOD"])
        target = urlsplit(environ.get("REQUEST_URI") or environ.get("PATH_INFO") or "/")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # waitress answers an invalid Content-Length itself
        headers = environ.get(_RAW_HEADERS) or _headers_of(environ)
        if self._tls:
            headers = _forwarded_over_tls(headers, self.port)
        request = HttpRequest(
            method=method,
            path=target.path or "/",  # as sent, still percent-encoded (PATH_INFO is decoded)
            query=target.query,
            headers=headers,
            body=environ["wsgi.input"].read(length) if length > 0 else b"",
            source_ip=str(environ.get("REMOTE_ADDR") or "127.0.0.1"),
        )
        response = self.respond(request)
        headers = [(name, value) for name, value in response.headers if name.lower() not in _NOT_FORWARDED]
        headers.append(("Content-Length", str(len(response.body))))
        start_response(f"{response.status} {_reason(response.status)}", headers)
        elapsed_ms = (time.monotonic() - started) * 1000
        log.info("%s %s -> %d (%.0f ms)", method, request.path, response.status, elapsed_ms)
        return [response.body]

    def _serve(self) -> None:
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=_LOOP_SECONDS, map=self._server.socket_map, use_poll=True, count=1)
        finally:
            with self._closing:
                self._close()

    def _close(self) -> None:
        self._closed = True
        for channel in list(self._server.socket_map.values()):
            channel.close()
        self._server.task_dispatcher.shutdown(timeout=1)


_NOT_FORWARDED = hop_by_hop | {"content-length"}


def _check_headers(headers: Iterable[tuple[str, str]]) -> None:
    for name, value in headers:
        if not name or any(c in name for c in "\r\n:") or "\r" in value or "\n" in value:
            raise InvalidProxyResponse(f"header {name!r}: {value!r} cannot be sent over HTTP")


def _forwarded_over_tls(headers: Iterable[tuple[str, str]], port: int) -> list[tuple[str, str]]:
    """The headers as sent, with API Gateway's X-Forwarded-Proto and -Port in place of the client's."""
    kept = [(name, value) for name, value in headers if name.lower() not in _SET_OVER_TLS]
    return [*kept, ("X-Forwarded-Proto", "https"), ("X-Forwarded-Port", str(port))]


_SET_OVER_TLS = {"x-forwarded-proto", "x-forwarded-port"}


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _headers_of(environ: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Headers rebuilt from a WSGI environ (names title-cased), where the raw ones are not at hand."""
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append(("-".join(part.capitalize() for part in key[5:].split("_")), str(value)))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers.append((key.replace("_", "-").title(), str(value)))
    return headers


# ---- waitress, answering its own errors the way API Gateway does ----------------------------------


class _RequestTimeout(BadRequest):
    code = 408
    reason = "Request Timeout"


_ERRORS: Mapping[int, HttpResponse] = {
    408: error_response(408, "Request Timeout", "RequestTimeoutException"),
    413: REQUEST_TOO_LONG,
    431: error_response(431, "Request Header Fields Too Large", "RequestHeaderFieldsTooLargeException"),
    500: error_response(500, "Internal server error", "InternalServerErrorException"),
}


def _error_answer(error: Error) -> HttpResponse:
    if error.code in _ERRORS:
        return _ERRORS[error.code]
    if error.code == 400:
        detail = str(error.body)
        message = "Invalid Content-Length" if "Content-Length" in detail else f"Bad Request: {detail}"
        return error_response(400, message, "BadRequestException")
    return error_response(error.code, str(error.reason), "BadRequestException")


class _Parser(HTTPRequestParser):
    """Keeps the request's header lines as sent (WSGI upper-cases names and joins repeated ones)."""

    raw_headers: list[tuple[str, str]] | None = None

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        lines = get_header_lines(header_plus.partition(b"\r\n")[2])
        pairs = (line.decode("latin-1").partition(":") for line in lines)
        self.raw_headers = [(name, value.strip(" \t")) for name, _, value in pairs]


class _Task(WSGITask):
    def get_environment(self) -> Any:
        environ = super().get_environment()
        environ[_RAW_HEADERS] = getattr(self.request, "raw_headers", None)
        return environ


class _ErrorTask(ErrorTask):
    def execute(self) -> None:
        error: Error = getattr(self.request, "error")  # noqa: B009 - the stubs call the request an Error
        answer = _error_answer(error)
        self.status = f"{answer.status} {_reason(answer.status)}"
        self.response_headers = [*self.response_headers, *answer.headers]
        self.set_close_on_finish()
        self.content_length = len(answer.body)
        self.write(answer.body)
        log.info("HTTP error -> %d (%s)", answer.status, error.body)


class _Channel(HTTPChannel):
    parser_class = _Parser
    task_class = _Task
    error_task_class = _ErrorTask


class _Server(TcpWSGIServer):
    channel_class = _Channel

    @property
    def socket_map(self) -> dict[int, Any]:
        """wasyncore's map of this server's sockets: the listener, its trigger and every connection."""
        socket_map: dict[int, Any] = getattr(self, "_map")  # noqa: B009 - not in the stubs
        return socket_map

    def maintenance(self, now: Any) -> None:
        """Answer requests whose bytes stopped arriving with a 408, then close idle connections."""
        cutoff = now - REQUEST_TIMEOUT_SECONDS
        channels: dict[int, Any] = getattr(self, "active_channels")  # noqa: B009 - mistyped in the stubs
        for channel in list(channels.values()):
            if channel.request is None or channel.requests or channel.last_activity >= cutoff:
                continue
            with channel.requests_lock:
                if channel.will_close or channel.close_when_flushed or channel.request is None:
                    continue
                stalled, channel.request = channel.request, None
                if not stalled.headers_finished:
                    stalled.close()
                    stalled = self.channel_class.parser_class(self.adj)
                    stalled.parse_header(b"GET / HTTP/1.0\r\n")
                stalled.error = _RequestTimeout(f"no data for {REQUEST_TIMEOUT_SECONDS} s")
                stalled.completed = True
                channel.requests.append(stalled)
                channel.last_activity = now
            self.add_task(channel)
        super().maintenance(now)
