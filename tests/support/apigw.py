"""API Gateway in front of one handler, as the local stack's gateway (`devstack.gateway`) puts it there:
the template's route table picks the resource and its path parameters, `devstack.apigw.proxy_event`
builds the event, `devstack.apigw.http_response` reads the answer. A path or method the template does not
route answers API Gateway's own 403 (`Missing Authentication Token`) without reaching the handler.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from devstack.apigw import (
    MISSING_AUTHENTICATION_TOKEN,
    HttpRequest,
    HttpResponse,
    RouteTable,
    http_response,
    proxy_event,
)
from tests.support.template import TEMPLATE, stack_template, template_functions

SOURCE_IP = "198.51.100.7"  # a documentation address (RFC 5737), as the client's

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass(frozen=True)
class TemplateRoutes:
    """The template's API routes, and the handler file of each function that serves some."""

    table: RouteTable
    handler_files: Mapping[str, Path]  # function logical id -> functions/<dir>/<module>.py
    account_id: str


@functools.cache
def template_routes(template: Path = TEMPLATE) -> TemplateRoutes:
    """The route table of `template`, built once per process."""
    functions = template_functions(template)
    return TemplateRoutes(
        table=RouteTable(route for spec in functions for route in spec.api_routes),
        handler_files={
            spec.logical_id: spec.code_uri / (spec.handler.rsplit(".", 1)[0].replace(".", "/") + ".py")
            for spec in functions
            if spec.api_routes
        },
        account_id=stack_template(template).context.account_id,
    )


def http_request(
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
    body: str | None = None,
) -> HttpRequest:
    """What a client sends: `path` as sent (percent-encoded where it must be)."""
    return HttpRequest(
        method=method,
        path=path,
        query=urlencode(query or {}),
        headers=list((headers or {}).items()),
        body=(body or "").encode(),
        source_ip=SOURCE_IP,
    )


def template_event(
    request: HttpRequest, *, routes: TemplateRoutes | None = None
) -> tuple[str, dict[str, Any]] | None:
    """The function the template routes `request` to and the proxy event it gets; None when the template
    routes neither the path nor the method (API Gateway then answers `MISSING_AUTHENTICATION_TOKEN`)."""
    routes = routes or template_routes()
    match = routes.table.match(request.method, request.path)
    if match is None:
        return None
    return match.route.function_id, proxy_event(request, match, account_id=routes.account_id)


def through_gateway(
    handler: Handler,
    handler_file: Path,
    request: HttpRequest,
    context: Any,
    *,
    routes: TemplateRoutes | None = None,
) -> HttpResponse:
    """The gateway's answer to `request` when `handler` (loaded from `handler_file`) serves it.

    The handler's exceptions propagate (the gateway would answer 502), so a test sees them. A request the
    template routes to another function is a mistake of the test, not an answer: it raises."""
    routes = routes or template_routes()
    routed = template_event(request, routes=routes)
    if routed is None:
        return MISSING_AUTHENTICATION_TOKEN
    function_id, event = routed
    served_by = routes.handler_files[function_id]
    if served_by.resolve() != handler_file.resolve():
        raise AssertionError(
            f"{request.method} {request.path} is routed to {function_id} ({served_by}), not to {handler_file}"
        )
    return http_response(handler(event, context))
