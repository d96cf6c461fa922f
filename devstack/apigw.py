"""API Gateway REST (v1) semantics: route matching, the Lambda proxy event, the proxy response.

Handlers are written against what API Gateway sends and expects, so the local gateway builds the
same event shape (including API Gateway's quirks, such as `None` for empty parameter maps) and
interprets the handler's answer the way API Gateway does.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

from devstack.errors import TemplateError
from devstack.model import ApiRoute

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway's request and response payload quota

_STATIC, _PARAMETER, _GREEDY = 0, 1, 2  # a segment kind; lower is more specific


@dataclass(frozen=True)
class RouteMatch:
    """The route chosen for a request, with the values of its path parameters."""

    route: ApiRoute
    path_parameters: dict[str, str]


class RouteTable:
    """Chooses the route for a request the way API Gateway chooses a resource and a method.

    The most specific resource wins (literal segments over `{param}` over `{proxy+}`); then the
    exact method, else ANY. No match of either kind is API Gateway's 403 "Missing Authentication Token".
    """

    def __init__(self, routes: Iterable[ApiRoute]) -> None:
        self._resources: dict[str, dict[str, ApiRoute]] = {}
        for route in routes:
            methods = self._resources.setdefault(route.path, {})
            if route.method in methods:
                other = methods[route.method].function_id
                raise TemplateError(
                    f"{route.method} {route.path} is served by {other} and {route.function_id}"
                )
            methods[route.method] = route

    def match(self, method: str, path: str) -> RouteMatch | None:
        """The route serving `method path` (path as sent, still percent-encoded), or None."""
        segments = _segments(path)
        candidates = []
        for resource in self._resources:
            matched = _match_resource(_segments(resource), segments)
            if matched is not None:
                candidates.append((matched[0], resource, matched[1]))
        if not candidates:
            return None
        _, resource, parameters = min(candidates)
        methods = self._resources[resource]
        route = methods.get(method.upper()) or methods.get("ANY")
        return None if route is None else RouteMatch(route, parameters)


def _segments(path: str) -> list[str]:
    return [segment for segment in path.split("/") if segment]


def _match_resource(
    template: Sequence[str], segments: Sequence[str]
) -> tuple[list[int], dict[str, str]] | None:
    """(specificity key, path parameters) if the resource template matches the segments."""
    key: list[int] = []
    parameters: dict[str, str] = {}
    for index, part in enumerate(template):
        if part.startswith("{") and part.endswith("+}"):
            rest = segments[index:]
            if index != len(template) - 1 or not rest:
                return None
            parameters[part[1:-2]] = unquote("/".join(rest))
            return [*key, _GREEDY], parameters
        if index >= len(segments):
            return None
        if part.startswith("{") and part.endswith("}"):
            parameters[part[1:-1]] = unquote(segments[index])
            key.append(_PARAMETER)
        elif part == segments[index]:
            key.append(_STATIC)
        else:
            return None
    return (key, parameters) if len(template) == len(segments) else None


@dataclass(frozen=True)
class HttpRequest:
    """What the gateway received, before it becomes a proxy event."""

    method: str
    path: str  # as sent, percent-encoded, without the query string
    query: str
    headers: Sequence[tuple[str, str]]  # in order, repeated names kept
    body: bytes
    source_ip: str


def proxy_event(
    request: HttpRequest, match: RouteMatch, *, account_id: str, now: datetime | None = None
) -> dict[str, Any]:
    """The Lambda proxy integration event API Gateway (REST, payload 1.0) sends for this request."""
    now = now or datetime.now(UTC)
    route = match.route
    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in request.headers:
        headers[name] = value
        multi_headers.setdefault(name, []).append(value)
    query_pairs = parse_qsl(request.query, keep_blank_values=True)
    multi_query: dict[str, list[str]] = {}
    for name, value in query_pairs:
        multi_query.setdefault(name, []).append(value)
    body, is_base64 = _event_body(request.body)
    path = unquote(request.path)
    request_id = str(uuid.uuid4())
    user_agent = next((value for name, value in request.headers if name.lower() == "user-agent"), None)
    return {
        "resource": route.path,
        "path": path,
        "httpMethod": request.method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {name: values[-1] for name, values in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": match.path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": secrets.token_hex(3),
            "resourcePath": route.path,
            "httpMethod": request.method,
            "extendedRequestId": secrets.token_urlsafe(12),
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{route.stage}{path}",
            "accountId": account_id,
            "protocol": "HTTP/1.1",
            "stage": route.stage,
            "domainPrefix": route.api_id,
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": request.source_ip,
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": user_agent,
                "user": None,
            },
            "domainName": headers.get("Host") or headers.get("host") or "127.0.0.1",
            "apiId": route.api_id,
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


def _event_body(raw: bytes) -> tuple[str | None, bool]:
    if not raw:
        return None, False
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), True


@dataclass(frozen=True)
class HttpResponse:
    """What the gateway writes back to the client."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class InvalidProxyResponse(ValueError):
    """The handler's result is not a proxy integration response (API Gateway answers 502)."""


def http_response(result: Any) -> HttpResponse:
    """Turn a handler's proxy response into HTTP, merging `headers` and `multiValueHeaders`."""
    if not isinstance(result, Mapping):
        raise InvalidProxyResponse(
            f"the handler returned {type(result).__name__}, not a proxy response object"
        )
    try:
        status = int(result.get("statusCode", 0))
    except (TypeError, ValueError):
        status = 0
    if not 100 <= status <= 599:
        raise InvalidProxyResponse(f"statusCode {result.get('statusCode')!r} is not an HTTP status")
    body = result.get("body")
    if body is not None and not isinstance(body, str):
        raise InvalidProxyResponse(f"body must be a string, got {type(body).__name__}")
    raw = (body or "").encode("utf-8")
    if result.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(raw, validate=True)
        except binascii.Error as exc:
            raise InvalidProxyResponse(f"isBase64Encoded is true but the body is not base64: {exc}") from None
    merged: dict[str, list[str]] = {}
    for name, value in (result.get("headers") or {}).items():
        merged[str(name)] = [str(value)]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        # API Gateway keeps only multiValueHeaders' values when a header appears in both.
        merged[str(name)] = [str(value) for value in values]
    headers = [(name, value) for name, values in merged.items() for value in values]
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))
    return HttpResponse(status, headers, raw)


def error_response(status: int, message: str, error_type: str) -> HttpResponse:
    """An error API Gateway itself produces: `{"message": ...}` and its x-amzn-ErrorType header."""
    return HttpResponse(
        status,
        [("Content-Type", "application/json"), ("x-amzn-ErrorType", error_type)],
        json.dumps({"message": message}).encode(),
    )


MISSING_AUTHENTICATION_TOKEN = error_response(
    403, "Missing Authentication Token", "MissingAuthenticationTokenException"
)
INTERNAL_SERVER_ERROR = error_response(502, "Internal server error", "InternalServerErrorException")
REQUEST_TOO_LONG = error_response(413, "Request Too Long", "RequestTooLargeException")
