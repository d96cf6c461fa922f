"""The HTTP edge shared by every REST function: one resolver factory, one mapping of errors to
`{"error": {"code", "message"}}`, the body guards, and the Lambda entry decorator stack."""

from __future__ import annotations

import functools
import itertools
import json
import re
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
Cursor = Annotated[
    str | None, Query(max_length=2048, pattern=r"^[A-Za-z0-9_-]+$", description="`next` of the previous page")
]


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


# Validation errors of these types keep their own code as the 400's `code` (flowgate.documents raises
# them); the others are `validation_error`.
SPECIFIC_CODES = frozenset({"too_deep", "unstorable_number", "empty_key", "invalid_text", "invalid_name"})


def _describe(errors: Sequence[Any]) -> tuple[str, str]:
    """A readable message for validation errors that names each field and never echoes its value."""
    parts: list[str] = []
    codes: set[str] = set()
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
        ctx = err.get("ctx") or {}
        if kind in SPECIFIC_CODES and "problem" in ctx:
            # A document's problem below the field: `inputs.a.b[2]: ...`.
            path = str(ctx.get("path") or "")
            joined = where + path if path.startswith("[") or not path else f"{where}.{path}"
            msg, where = str(ctx["problem"]), joined
        codes.add(kind if kind in SPECIFIC_CODES else "validation_error")
        parts.append(f"{where}: {msg}")
    code = codes.pop() if len(codes) == 1 else "validation_error"
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


# JSON bodies nest at most this deep: json (and pydantic after it) recurse per level, so a body nested
# 10,000 levels deep would exhaust the stack. Refused before anything parses it.
MAX_JSON_DEPTH = 64
# Python refuses to convert integers of more than 4300 digits (a ValueError json does not turn into a
# decode error); no field takes a number anywhere near this long.
MAX_NUMBER_CHARS = 1000

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
# Byte tables: the brackets kept (everything else deleted), and digits as "0", anything else as " ".
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = [1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256)]
_DIGITS_AS_ZERO = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_LONG_RUN = b"0" * MAX_NUMBER_CHARS


def _lone_surrogate(body: str) -> str | None:
    """The first `\\uXXXX` escape of a surrogate that is not half of a pair, in JSON string tokens."""
    for token in _JSON_STRING.findall(body):
        if not _SURROGATE_ESCAPE.search(token):
            continue
        pending: tuple[str, int] | None = None  # a high surrogate waiting for its low half
        for escape in _ESCAPE.finditer(token):
            unit = int(escape.group(1), 16) if escape.group(1) else None
            if pending is not None:
                if unit is not None and 0xDC00 <= unit <= 0xDFFF and escape.start() == pending[1]:
                    pending = None
                    continue
                return pending[0]
            if unit is not None and 0xD800 <= unit <= 0xDBFF:
                pending = (escape.group(0), escape.end())
            elif unit is not None and 0xDC00 <= unit <= 0xDFFF:
                return escape.group(0)
        if pending is not None:
            return pending[0]
    return None


def _outside_strings(body: str) -> str:
    """The JSON text with each string replaced by `s`, cut at an unterminated string (the parser stops
    there, so nothing after it is nested)."""
    outside = _JSON_STRING.sub("s", body) if '"' in body else body
    stray = outside.find('"')
    return outside if stray == -1 else outside[:stray]


def check_json_text(body: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse, without parsing (so without recursion), a JSON text nested deeper than `max_depth`, with
    a lone UTF-16 surrogate (`"\\ud800"` parses, but is not text and cannot be stored) or with a number
    too long to convert. Linear in the body's length, and its loops run in C (regex, bytes.translate,
    accumulate): a few milliseconds for the largest body, microseconds for a usual one."""
    try:
        data = body.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("the body is not valid UTF-8 text", code="invalid_text") from None
    outside: str | None = None
    if body.count("[") + body.count("{") > max_depth:
        outside = _outside_strings(body)
        steps = map(_DEPTH_STEP.__getitem__, outside.encode("utf-8").translate(None, _NOT_BRACKETS))
        if max(itertools.accumulate(steps), default=0) > max_depth:
            raise BadRequest(f"the body is nested more than {max_depth} levels deep", code="too_deep")
    if _LONG_RUN in data.translate(_DIGITS_AS_ZERO):
        outside = _outside_strings(body) if outside is None else outside
        if _LONG_RUN in outside.encode("utf-8").translate(_DIGITS_AS_ZERO):
            raise BadRequest(
                f"the body holds a number of {MAX_NUMBER_CHARS} digits or more", code="unstorable_number"
            )
    if "\\ud" in body or "\\uD" in body:
        lone = _lone_surrogate(body)
        if lone is not None:
            raise BadRequest(
                f"the body holds the escape {lone} of half a UTF-16 surrogate pair, which is not text",
                code="invalid_text",
            )


def _is_json(content_type: str) -> bool:
    return not content_type or content_type == "application/json" or content_type.endswith("+json")


def _check_body(
    event: Mapping[str, Any],
    max_body: int,
    text_resources: frozenset[str] = frozenset(),
    any_type_resources: frozenset[str] = frozenset(),
) -> None:
    body = event.get("body")
    if not body:
        return
    size = len(body) * 3 // 4 if event.get("isBase64Encoded") else len(body.encode("utf-8", "surrogatepass"))
    if size > max_body:
        raise PayloadTooLarge(f"the body is {size} bytes; at most {max_body} are accepted")
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if event.get("isBase64Encoded"):
        raise UnsupportedMediaType("binary bodies are not accepted; send application/json")
    if not _is_json(content_type) and event.get("resource") not in any_type_resources:
        if content_type == "text/plain" and event.get("resource") in text_resources:
            return
        raise UnsupportedMediaType(f"send the body as application/json, not {content_type}")
    # A body without a Content-Type is read as JSON (README: "Bodies are JSON").
    check_json_text(body)


def entry(
    app: APIGatewayRestResolver,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    text_resources: frozenset[str] = frozenset(),
    any_type_resources: frozenset[str] = frozenset(),
) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    """The Lambda handler for a resolver: correlation id, body guards, then routing.

    `text_resources` are the route templates that also take a text/plain body (e.g. a decision message);
    `any_type_resources` read their body as JSON whatever its declared type (EFT's admin login).
    """

    @flushing_metrics
    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        try:
            _check_body(event, max_body_bytes, text_resources, any_type_resources)
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
