"""The local gateway over real HTTP on loopback, with a fake function behind it."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devstack.apigw import RouteTable
from devstack.custom_resources import CfnResponses
from devstack.gateway import CFN_RESPONSE_PREFIX, Gateway
from devstack.model import ApiRoute


class FakeFunctions:
    """Records invocations; answers with `result` or raises it."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.result: Any = {"statusCode": 200, "body": '{"ok": true}'}

    def __call__(self, function_id: str, event: Any) -> Any:
        self.events.append((function_id, event))
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
    routes = RouteTable([ApiRoute("ItemsFn", "Get", "GET", "/items/{id}", "dev", "api1234567")])
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
    for method, path in (("GET", "/nope"), ("POST", "/items/42")):
        response = requests.request(method, gateway.url + path, timeout=10)
        assert response.status_code == 403
        assert response.json() == {"message": "Missing Authentication Token"}
        assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"


def test_a_failing_handler_is_a_502(
    gateway: Gateway, functions: FakeFunctions, caplog: pytest.LogCaptureFixture
) -> None:
    functions.result = RuntimeError("kaput")
    response = requests.get(f"{gateway.url}/items/1", timeout=10)
    assert (response.status_code, response.json()) == (502, {"message": "Internal server error"})
    assert "kaput" in caplog.text


def test_an_invalid_proxy_response_is_a_502(gateway: Gateway, functions: FakeFunctions) -> None:
    functions.result = {"body": "no status code"}
    assert requests.get(f"{gateway.url}/items/1", timeout=10).status_code == 502


def test_binary_bodies_reach_the_handler_base64_encoded(gateway: Gateway, functions: FakeFunctions) -> None:
    routes = RouteTable([ApiRoute("Fn", "Put", "PUT", "/blob", "dev", "api1234567")])
    gateway.routes = routes
    requests.put(f"{gateway.url}/blob", data=b"\xff\xfe", timeout=10)
    ((_, event),) = functions.events
    assert (event["body"], event["isBase64Encoded"]) == ("//4=", True)


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
