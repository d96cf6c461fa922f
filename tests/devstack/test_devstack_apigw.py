"""API Gateway REST semantics: which route serves a request, the proxy event, the proxy response."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from devstack.apigw import (
    HttpRequest,
    InvalidProxyResponse,
    RouteMatch,
    RouteTable,
    http_response,
    proxy_event,
)
from devstack.errors import TemplateError
from devstack.model import ApiRoute


def _route(method: str, path: str, function_id: str = "Fn") -> ApiRoute:
    return ApiRoute(function_id, f"{method}{path}", method, path, "dev", "abc123defg")


@pytest.fixture
def table() -> RouteTable:
    return RouteTable(
        [
            _route("GET", "/workspaces/{ws}", "Param"),
            _route("GET", "/workspaces/mine", "Static"),
            _route("ANY", "/files/{proxy+}", "Greedy"),
            _route("GET", "/files/readme", "StaticFile"),
            _route("POST", "/items"),
            _route("ANY", "/items"),
            _route("GET", "/"),
        ]
    )


@pytest.mark.parametrize(
    ("method", "path", "function_id", "parameters"),
    [
        ("GET", "/workspaces/mine", "Static", {}),
        ("GET", "/workspaces/w%201", "Param", {"ws": "w 1"}),
        ("GET", "/workspaces/w1/", "Param", {"ws": "w1"}),
        ("DELETE", "/files/a/b/c.txt", "Greedy", {"proxy": "a/b/c.txt"}),
        ("GET", "/files/readme", "StaticFile", {}),
        ("get", "/", "Fn", {}),
    ],
)
def test_the_most_specific_route_wins(
    table: RouteTable, method: str, path: str, function_id: str, parameters: dict[str, str]
) -> None:
    match = table.match(method, path)
    assert match is not None
    assert (match.route.function_id, match.path_parameters) == (function_id, parameters)


def test_exact_method_before_any(table: RouteTable) -> None:
    post, put = table.match("POST", "/items"), table.match("PUT", "/items")
    assert post is not None
    assert put is not None
    assert (post.route.method, put.route.method) == ("POST", "ANY")


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/workspaces/mine"), ("GET", "/nothing"), ("GET", "/files"), ("GET", "/workspaces/a/b")],
)
def test_no_route(table: RouteTable, method: str, path: str) -> None:
    # API Gateway answers these with 403 Missing Authentication Token (a greedy path needs a segment).
    assert table.match(method, path) is None


def test_two_functions_on_one_route_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="served by A and B"):
        RouteTable([_route("GET", "/x", "A"), _route("GET", "/x", "B")])


def _request(**overrides: object) -> HttpRequest:
    fields: dict[str, object] = {
        "method": "POST",
        "path": "/workspaces/w%201",
        "query": "",
        "headers": [("Host", "127.0.0.1:3000"), ("User-Agent", "pytest"), ("Accept", "a"), ("Accept", "b")],
        "body": b'{"a": 1}',
        "source_ip": "127.0.0.7",
    }
    return HttpRequest(**(fields | overrides))  # type: ignore[arg-type]


def test_proxy_event_has_api_gateway_shape() -> None:
    # Given a request matched to a parameterized route
    route = _route("POST", "/workspaces/{ws}")
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    # When the proxy event is built
    event = proxy_event(
        _request(query="x=1&x=2&y="), RouteMatch(route, {"ws": "w 1"}), account_id="123456789012", now=now
    )
    # Then it has the REST payload 1.0 fields, with API Gateway's conventions
    assert event["resource"] == "/workspaces/{ws}"
    assert event["path"] == "/workspaces/w 1"
    assert event["httpMethod"] == "POST"
    assert event["headers"]["Accept"] == "b"
    assert event["multiValueHeaders"]["Accept"] == ["a", "b"]
    assert event["queryStringParameters"] == {"x": "2", "y": ""}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "y": [""]}
    assert event["pathParameters"] == {"ws": "w 1"}
    assert event["stageVariables"] is None
    assert (event["body"], event["isBase64Encoded"]) == ('{"a": 1}', False)
    context = event["requestContext"]
    assert context["resourcePath"] == "/workspaces/{ws}"
    assert context["path"] == "/dev/workspaces/w 1"
    assert (context["stage"], context["apiId"], context["accountId"]) == ("dev", "abc123defg", "123456789012")
    assert context["identity"]["sourceIp"] == "127.0.0.7"
    assert context["identity"]["userAgent"] == "pytest"
    assert context["requestTimeEpoch"] == int(now.timestamp() * 1000)
    assert context["requestTime"] == "02/Jan/2026:03:04:05 +0000"
    assert len(context["requestId"]) == 36
    assert context["domainName"] == "127.0.0.1:3000"


def test_empty_maps_are_none_and_binary_bodies_base64() -> None:
    event = proxy_event(
        _request(method="GET", body=b"\xff\x00"), RouteMatch(_route("GET", "/x"), {}), account_id="1"
    )
    assert event["queryStringParameters"] is None
    assert event["multiValueQueryStringParameters"] is None
    assert event["pathParameters"] is None
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\x00"
    no_body = proxy_event(_request(body=b""), RouteMatch(_route("GET", "/x"), {}), account_id="1")
    assert (no_body["body"], no_body["isBase64Encoded"]) == (None, False)


def test_proxy_response_merges_headers() -> None:
    response = http_response(
        {
            "statusCode": 201,
            "headers": {"X-One": "1", "Set-Cookie": "ignored"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
            "body": "created",
        }
    )
    assert response.status == 201
    assert response.headers == [
        ("X-One", "1"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Content-Type", "application/json"),
    ]
    assert response.body == b"created"


def test_proxy_response_base64_body() -> None:
    response = http_response(
        {"statusCode": 200, "headers": {"Content-Type": "image/png"}, "body": "/wA=", "isBase64Encoded": True}
    )
    assert (response.body, response.headers) == (b"\xff\x00", [("Content-Type", "image/png")])


@pytest.mark.parametrize(
    "result",
    [None, "text", {"body": "no status"}, {"statusCode": "abc"}, {"statusCode": 200, "body": {"a": 1}}],
)
def test_invalid_proxy_responses(result: object) -> None:
    with pytest.raises(InvalidProxyResponse):
        http_response(result)
