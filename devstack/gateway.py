"""The local API Gateway: an HTTP server on loopback that calls the functions in-process.

Besides the template's routes it serves one devstack path, `PUT /__devstack/cfn-response/<id>`,
where custom resource handlers send their CloudFormation response (the ResponseURL devstack gives
them), so the whole custom resource round trip runs through real HTTP as in AWS.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

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
from devstack.lambdas import Invoke

log = logging.getLogger(__name__)

CFN_RESPONSE_PREFIX = "/__devstack/cfn-response/"
_NOT_READY = error_response(503, "Service Unavailable", "ServiceUnavailableException")
_UNKNOWN_CFN_REQUEST = error_response(404, "Not Found", "NotFoundException")
_EMPTY_OK = HttpResponse(200, [], b"")
_SHUTDOWN_POLL_SECONDS = 0.05  # how often serve_forever checks for shutdown (the default is 0.5 s)
_BAD_LENGTH = error_response(400, "Invalid Content-Length", "BadRequestException")


class Gateway:
    """Serves the template's API routes on 127.0.0.1; API routes answer 503 until `set_ready()`."""

    def __init__(
        self,
        *,
        routes: RouteTable,
        invoke: Invoke,
        cfn_responses: CfnResponses,
        account_id: str,
        port: int = 3000,
    ) -> None:
        self.routes = routes
        self.invoke = invoke
        self.cfn_responses = cfn_responses
        self.account_id = account_id
        self._ready = threading.Event()
        self._server = _Server(("127.0.0.1", port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _SHUTDOWN_POLL_SECONDS},
            name="devstack-gateway",
            daemon=True,
        )

    @property
    def port(self) -> int:
        """The bound port (the chosen one when started with port 0)."""
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        """Base URL of the gateway."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve in a background thread (the socket is bound already)."""
        self._thread.start()

    def set_ready(self) -> None:
        """Start answering API routes (after provisioning and custom resources)."""
        self._ready.set()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def respond(self, request: HttpRequest) -> HttpResponse:
        """The response to one request (the HTTP plumbing is in `_RequestHandler`)."""
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
        except Exception:
            log.exception("%s raised on %s %s", function_id, request.method, request.path)
            return INTERNAL_SERVER_ERROR
        try:
            response = http_response(result)
        except InvalidProxyResponse as exc:
            log.error("%s returned an invalid proxy response: %s", function_id, exc)
            return INTERNAL_SERVER_ERROR
        if len(response.body) > MAX_PAYLOAD_BYTES:
            log.error("%s returned %d bytes, over API Gateway's limit", function_id, len(response.body))
            return INTERNAL_SERVER_ERROR
        return response


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], gateway: Gateway) -> None:
        super().__init__(address, _RequestHandler)
        self.gateway = gateway

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-response is not worth a traceback.
        log.debug("connection from %s failed", client_address, exc_info=True)


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    def _handle(self) -> None:
        started = time.monotonic()
        split = urlsplit(self.path)
        length_header = self.headers.get("Content-Length") or "0"
        length = int(length_header) if length_header.isdigit() else -1
        if length < 0:
            self.close_connection = True
            response = _BAD_LENGTH
        elif length > MAX_PAYLOAD_BYTES:
            self.close_connection = True  # the unread body must not be parsed as the next request
            response = REQUEST_TOO_LONG
        else:
            request = HttpRequest(
                method=self.command,
                path=split.path or "/",
                query=split.query,
                headers=list(self.headers.items()),
                body=self.rfile.read(length) if length else b"",
                source_ip=self.client_address[0],
            )
            response = self.server.gateway.respond(request)
        self._write(response)
        log.info(
            "%s %s -> %d (%.0f ms)",
            self.command,
            split.path,
            response.status,
            (time.monotonic() - started) * 1000,
        )

    def _write(self, response: HttpResponse) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        # Requests are logged once, with their outcome, in _handle; errors go through logging too.
        log.debug(format, *args)
