"""The local gateway over real HTTP on loopback, with a fake function behind it."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devstack.apigw import MAX_PAYLOAD_BYTES, RouteTable
from devstack.custom_resources import CfnResponses
from devstack.gateway import CFN_RESPONSE_PREFIX, MAX_HEADER_BYTES, REQUEST_TIMEOUT_SECONDS, Gateway
from devstack.lambdas import FunctionError
from devstack.model import ApiRoute


class FakeFunctions:
    """Records invocations; answers with `result` or raises it."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.result: Any = {"statusCode": 200, "body": '{"ok": true}'}
        self.delay = 0.0
        self._lock = threading.Lock()

    def __call__(self, function_id: str, event: Any) -> Any:
        with self._lock:
            self.events.append((function_id, event))
        time.sleep(self.delay)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.fixture
def functions() -> FakeFunctions:
    return FakeFunctions()


@pytest.fixture
def responses() -> CfnResponses:
    return CfnResponses()


@pytest.fixture
def gateway(functions: FakeFunctions, responses: CfnResponses) -> Iterator[Gateway]:
    routes = RouteTable(
        [
            ApiRoute("ItemsFn", "Get", "GET", "/items/{id}", "dev", "api1234567"),
            ApiRoute("ItemsFn", "Post", "POST", "/items/{id}", "dev", "api1234567"),
        ]
    )
    gateway = Gateway(
        routes=routes, invoke=functions, cfn_responses=responses, account_id="123456789012", port=0
    )
    gateway.start()
    gateway.set_ready()
    yield gateway
    gateway.stop()


def test_a_route_calls_its_function_with_a_proxy_event(gateway: Gateway, functions: FakeFunctions) -> None:
    response = requests.get(f"{gateway.url}/items/42?q=1", headers={"X-Test": "yes"}, timeout=10)
    assert (response.status_code, response.json()) == (200, {"ok": True})
    ((function_id, event),) = functions.events
    assert function_id == "ItemsFn"
    assert event["pathParameters"] == {"id": "42"}
    assert event["queryStringParameters"] == {"q": "1"}
    assert event["headers"]["X-Test"] == "yes"
    assert event["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"


def test_unknown_route_or_method_is_missing_authentication_token(gateway: Gateway) -> None:
    for method, path in (("GET", "/nope"), ("DELETE", "/items/42")):
        response = requests.request(method, gateway.url + path, timeout=10)
        assert response.status_code == 403
        assert response.json() == {"message": "Missing Authentication Token"}
        assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"


def test_a_failing_handler_is_a_502(
    gateway: Gateway, functions: FakeFunctions, caplog: pytest.LogCaptureFixture
) -> None:
    functions.result = FunctionError("ItemsFn", {"errorType": "RuntimeError", "errorMessage": "kaput"})
    response = requests.get(f"{gateway.url}/items/1", timeout=10)
    assert (response.status_code, response.json()) == (502, {"message": "Internal server error"})
    assert response.headers["x-amzn-ErrorType"] == "InternalServerErrorException"
    assert "ItemsFn: RuntimeError: kaput" in caplog.text
    functions.result = RuntimeError("devstack's own bug")
    assert requests.get(f"{gateway.url}/items/1", timeout=10).status_code == 502


def test_an_invalid_proxy_response_is_a_502(gateway: Gateway, functions: FakeFunctions) -> None:
    functions.result = {"body": "no status code"}
    assert requests.get(f"{gateway.url}/items/1", timeout=10).status_code == 502
    functions.result = {"statusCode": 200, "headers": {"X-Bad": "a\r\nInjected: yes"}, "body": ""}
    answer = requests.get(f"{gateway.url}/items/1", timeout=10)
    assert (answer.status_code, "Injected" in answer.headers) == (502, False)


def test_headers_path_and_query_reach_the_handler_as_sent(gateway: Gateway, functions: FakeFunctions) -> None:
    answer = _raw(
        gateway,
        b"GET /items/a%2Fb?q=1&q=2 HTTP/1.1\r\nHost: x\r\nx-lower-Case: v\r\n"
        b"X-Multi: 1\r\nX-Multi: 2\r\nX-Forwarded-For: 10.1.2.3\r\nConnection: close\r\n\r\n",
    )
    assert answer.status == 200
    ((_, event),) = functions.events
    assert event["pathParameters"] == {"id": "a/b"}
    assert event["path"] == "/items/a/b"
    assert event["multiValueQueryStringParameters"] == {"q": ["1", "2"]}
    assert event["headers"]["x-lower-Case"] == "v"  # API Gateway keeps the case as sent
    assert event["multiValueHeaders"]["X-Multi"] == ["1", "2"]
    assert event["headers"]["X-Forwarded-For"] == "10.1.2.3"


def test_responses_keep_alive_and_head_has_no_body(gateway: Gateway) -> None:
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(f"{gateway.url}/items/1", timeout=10).json() == {"ok": True}
        head = session.head(f"{gateway.url}/items/1", timeout=10)
    assert head.status_code == 403  # no HEAD route, as API Gateway
    assert head.content == b""


def test_binary_bodies_reach_the_handler_base64_encoded(gateway: Gateway, functions: FakeFunctions) -> None:
    routes = RouteTable([ApiRoute("Fn", "Put", "PUT", "/blob", "dev", "api1234567")])
    gateway.routes = routes
    requests.put(f"{gateway.url}/blob", data=b"\xff\xfe", timeout=10)
    ((_, event),) = functions.events
    assert (event["body"], event["isBase64Encoded"]) == ("//4=", True)


def test_a_10_mb_body_is_accepted(gateway: Gateway, functions: FakeFunctions) -> None:
    body = b"x" * MAX_PAYLOAD_BYTES
    assert requests.post(f"{gateway.url}/items/1", data=body, timeout=30).status_code == 200
    ((_, event),) = functions.events
    assert len(event["body"]) == MAX_PAYLOAD_BYTES


def test_requests_over_10_mb_are_refused(gateway: Gateway, functions: FakeFunctions) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    connection.putrequest("POST", "/items/1")
    connection.putheader("Content-Length", str(10 * 1024 * 1024 + 1))
    connection.endheaders()  # the body is never sent: the gateway answers from the headers
    response = connection.getresponse()
    assert response.status == 413
    assert json.loads(response.read()) == {"message": "Request Too Long"}
    connection.close()
    assert functions.events == []


def test_api_routes_wait_for_readiness(functions: FakeFunctions, responses: CfnResponses) -> None:
    routes = RouteTable([ApiRoute("Fn", "Get", "GET", "/x", "dev", "api1234567")])
    gateway = Gateway(routes=routes, invoke=functions, cfn_responses=responses, account_id="1", port=0)
    gateway.start()
    try:
        assert requests.get(f"{gateway.url}/x", timeout=10).status_code == 503
        gateway.set_ready()
        assert requests.get(f"{gateway.url}/x", timeout=10).status_code == 200
    finally:
        gateway.stop()


def test_custom_resource_responses_are_accepted_for_outstanding_requests(
    gateway: Gateway, responses: CfnResponses
) -> None:
    responses.expect("req-1")
    body = {"Status": "SUCCESS", "Data": {"A": "1"}}
    put = requests.put(f"{gateway.url}{CFN_RESPONSE_PREFIX}req-1", data=json.dumps(body), timeout=10)
    assert put.status_code == 200
    assert responses.wait("req-1", timeout=5) == body
    assert requests.put(f"{gateway.url}{CFN_RESPONSE_PREFIX}other", data="{}", timeout=10).status_code == 404


def _raw(gateway: Gateway, data: bytes, timeout: float = 15) -> http.client.HTTPResponse:
    """Send `data` as is; the gateway's answer (read in full)."""
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=timeout)
    try:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        response.body = response.read()  # type: ignore[attr-defined]
        return response
    finally:
        sock.close()


def _json_error(response: http.client.HTTPResponse) -> tuple[int, Any, str | None]:
    assert response.getheader("Content-Type") == "application/json"
    return response.status, json.loads(response.body), response.getheader("x-amzn-ErrorType")  # type: ignore[attr-defined]


def test_200_simultaneous_connections_are_all_answered(gateway: Gateway, functions: FakeFunctions) -> None:
    # Given 200 clients connected at once (http.server's backlog of 5 left most of them waiting)
    functions.delay = 0.02
    sockets = [socket.create_connection(("127.0.0.1", gateway.port), timeout=30) for _ in range(200)]
    answered: list[int] = []
    lock = threading.Lock()

    def request(sock: socket.socket) -> None:
        try:
            sock.sendall(b"GET /items/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = http.client.HTTPResponse(sock)
            response.begin()
            response.read()
            with lock:
                answered.append(response.status)
        finally:
            sock.close()

    started = time.monotonic()
    threads = [threading.Thread(target=request, args=(sock,)) for sock in sockets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Then every one is answered, within seconds
    assert answered == [200] * 200
    assert time.monotonic() - started < 30
    assert len(functions.events) == 200


def test_a_body_shorter_than_its_content_length_is_answered_in_seconds(
    gateway: Gateway, functions: FakeFunctions
) -> None:
    started = time.monotonic()
    answer = _raw(gateway, b"POST /items/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
    assert time.monotonic() - started < REQUEST_TIMEOUT_SECONDS + 4
    assert _json_error(answer) == (408, {"message": "Request Timeout"}, "RequestTimeoutException")
    assert answer.getheader("Connection") == "close"
    assert functions.events == []


def test_headers_that_never_end_are_answered_in_seconds(gateway: Gateway) -> None:
    started = time.monotonic()
    answer = _raw(gateway, b"GET /items/1 HTTP/1.1\r\nHost: x\r\n")
    assert time.monotonic() - started < REQUEST_TIMEOUT_SECONDS + 4
    assert _json_error(answer)[:2] == (408, {"message": "Request Timeout"})


@pytest.mark.parametrize("length", [b"abc", b"-1", b"1e3", b"12 34"])
def test_a_bad_content_length_is_a_json_400(
    gateway: Gateway, functions: FakeFunctions, length: bytes
) -> None:
    answer = _raw(gateway, b"POST /items/1 HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n")
    assert _json_error(answer) == (400, {"message": "Invalid Content-Length"}, "BadRequestException")
    assert functions.events == []


def test_malformed_requests_are_json_errors(gateway: Gateway) -> None:
    status, body, _ = _json_error(_raw(gateway, b"GET /items/1 HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"))
    assert (status, body["message"].startswith("Bad Request")) == (400, True)
    chunked_gzip = b"POST /items/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
    assert _json_error(_raw(gateway, chunked_gzip))[0] == 501


def test_oversized_headers_are_a_json_431(gateway: Gateway, functions: FakeFunctions) -> None:
    big = b"X-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\n"
    answer = _raw(gateway, b"GET /items/1 HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
    assert _json_error(answer) == (
        431,
        {"message": "Request Header Fields Too Large"},
        "RequestHeaderFieldsTooLargeException",
    )
    assert functions.events == []


def test_headers_within_api_gateways_quota_are_accepted(gateway: Gateway) -> None:
    assert (
        requests.get(f"{gateway.url}/items/1", headers={"X-Big": "a" * 10_000}, timeout=10).status_code == 200
    )


def test_stop_closes_open_connections(functions: FakeFunctions, responses: CfnResponses) -> None:
    gateway = Gateway(
        routes=RouteTable([]), invoke=functions, cfn_responses=responses, account_id="1", port=0
    )
    gateway.start()
    idle = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    started = time.monotonic()
    gateway.stop()
    assert time.monotonic() - started < 5
    assert idle.recv(1) == b""  # closed by the server
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", gateway.port), timeout=2).close()
