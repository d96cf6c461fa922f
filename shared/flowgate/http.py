"""The HTTP edge shared by every REST function: one resolver factory, one mapping of errors to
`{"error": {"code", "message"}}`, the body guards, and the Lambda entry decorator stack."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Annotated, Any, Generic, TypeVar

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from flowgate.errors import BadRequest, FlowgateError, PayloadTooLarge, Unauthorized, UnsupportedMediaType
from flowgate.observability import flushing_metrics, logger

T = TypeVar("T")

DEFAULT_MAX_BODY_BYTES = 64 * 1024
API_ROOT = "/api/latest"


# The paging parameters of every collection route.
Limit = Annotated[int, Query(ge=1, le=100, description="page size")]
Cursor = Annotated[str | None, Query(max_length=2048, description="`next` of the previous page")]


class Listing(BaseModel, Generic[T]):
    """A page of a collection; pass `next` back as `?cursor=` for the following page."""

    items: list[T]
    next: str | None = None


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response[Any]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"error": {"code": code, "message": message}}),
        headers=dict(headers or {}),
    )


def _describe(errors: Sequence[Any]) -> tuple[str, str]:
    """A readable message for validation errors that names each field and never echoes its value."""
    parts: list[str] = []
    code = "validation_error"
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        kind = err.get("type", "")
        if kind == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "invalid JSON")
            return "malformed_json", f"the body is not valid JSON: {detail}"
        where = ".".join(loc[1:]) if len(loc) > 1 else (loc[0] if loc else "request")
        if loc and loc[0] == "query":
            where = f"query parameter {where}"
        msg = "unknown field" if kind == "extra_forbidden" else err.get("msg", "invalid")
        if kind == "missing" and loc == ["body"]:
            msg = "a JSON body is required"
            where = "body"
        parts.append(f"{where}: {msg}")
    return code, "; ".join(parts) or "invalid request"


def invalid_body(errors: Sequence[Any]) -> BadRequest:
    """A pydantic ValidationError of a body validated by hand, as the same 400 the resolver gives."""
    code, message = _describe([{**e, "loc": ("body", *e.get("loc", ()))} for e in errors])
    return BadRequest(message, code=code)


def create_app() -> APIGatewayRestResolver:
    """A REST resolver with request validation (pydantic) and the platform's error mapping."""
    app = APIGatewayRestResolver(enable_validation=True)

    @app.exception_handler(FlowgateError)
    def _domain(exc: FlowgateError) -> Response[Any]:
        headers = (
            {"WWW-Authenticate": 'Bearer realm="flowgate", Basic realm="flowgate"'}
            if isinstance(exc, Unauthorized)
            else {}
        )
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        logger.info("request refused", extra={"status": exc.status, "code": exc.code})
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    def _invalid(exc: RequestValidationError) -> Response[Any]:
        code, message = _describe(exc.errors())
        logger.info("invalid request", extra={"status": 400, "code": code})
        return error_response(400, code, message)

    @app.exception_handler(RequestUnsupportedContentType)
    def _media(exc: RequestUnsupportedContentType) -> Response[Any]:
        return error_response(415, "unsupported_media_type", "send the body as application/json")

    @app.not_found
    def _not_found(exc: NotFoundError) -> Response[Any]:
        return error_response(404, "not_found", "no such route")

    return app


def _check_body(
    event: Mapping[str, Any], max_body: int, text_resources: frozenset[str] = frozenset()
) -> None:
    body = event.get("body")
    if not body:
        return
    size = len(body) * 3 // 4 if event.get("isBase64Encoded") else len(body.encode())
    if size > max_body:
        raise PayloadTooLarge(f"the body is {size} bytes; at most {max_body} are accepted")
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if event.get("isBase64Encoded"):
        raise UnsupportedMediaType("binary bodies are not accepted; send application/json")
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        if content_type == "text/plain" and event.get("resource") in text_resources:
            return
        raise UnsupportedMediaType(f"send the body as application/json, not {content_type}")


def entry(
    app: APIGatewayRestResolver,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    text_resources: frozenset[str] = frozenset(),
) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    """The Lambda handler for a resolver: correlation id, body guards, then routing.

    `text_resources` are the route templates that also take a text/plain body (e.g. a decision message).
    """

    @flushing_metrics
    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        try:
            _check_body(event, max_body_bytes, text_resources)
        except FlowgateError as exc:
            logger.info("request refused", extra={"status": exc.status, "code": exc.code})
            result: dict[str, Any] = {
                "statusCode": exc.status,
                "multiValueHeaders": {"Content-Type": [content_types.APPLICATION_JSON]},
                "body": json.dumps({"error": {"code": exc.code, "message": exc.message}}),
                "isBase64Encoded": False,
            }
        else:
            result = app.resolve(event, context)
        correlation_id = logger.get_correlation_id()
        if correlation_id:
            result.setdefault("multiValueHeaders", {})["X-Correlation-Id"] = [correlation_id]
        return result

    return handler


@functools.cache
def openapi_document() -> str:
    """The whole API's OpenAPI document, produced from the resolvers by `make openapi` (devstack.openapi)."""
    return resources.files("flowgate").joinpath("openapi.json").read_text()


def if_match(app: APIGatewayRestResolver) -> int | None:
    """The version in an `If-Match` header (`3` or `"3"`), for optimistic concurrency."""
    raw = app.current_event.headers.get("if-match")
    if raw is None:
        return None
    try:
        return int(raw.strip().strip('"').removeprefix('W/"').strip('"'))
    except ValueError as exc:
        raise BadRequest("If-Match must hold the resource's version number", code="invalid_if_match") from exc


def created(body: BaseModel, location: str) -> Response[Any]:
    """201 with the new resource and where it lives."""
    return Response(
        status_code=201,
        content_type=content_types.APPLICATION_JSON,
        body=body,
        headers={"Location": location},
    )


def accepted(body: BaseModel, location: str) -> Response[Any]:
    """202: the work was queued; `location` is where to follow it."""
    return Response(
        status_code=202,
        content_type=content_types.APPLICATION_JSON,
        body=body,
        headers={"Location": location},
    )
