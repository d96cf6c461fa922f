"""JSON-RPC 2.0 on an artifact's path (seed 004): parsing a call and the error codes a client can see.

Pure: no I/O. `parse_call` turns a body into a `Call` or raises `RpcError`, whose code, message, data
and HTTP status are what the answer carries. Codes -32700..-32600 are the specification's; the
server-defined ones (-32000..-32099) are Flowgate's, documented in the README and the OpenAPI document,
with -32004 for a missing artifact as in seed 004.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from flowgate.documents import document_error

# The specification's codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
# Flowgate's codes (server-defined range).
TARGET_LOGIN_FAILED = -32001
TARGET_SITE_NOT_FOUND = -32002
UNKNOWN_VARIABLES = -32003
NOT_FOUND = -32004  # seed 004: "Not found: custom-command (<id>)"
TARGET_REFUSED = -32005
UNKNOWN_SECRETS = -32006
TARGET_UNREACHABLE = -32007
TARGET_NOT_ALLOWED = -32008
PARTIAL_FAILURE = -32009

# What each code means, for the documentation (README, OpenAPI) and the console.
CODES: dict[int, str] = {
    PARSE_ERROR: "the body is not JSON",
    INVALID_REQUEST: "not a JSON-RPC 2.0 call (a batch array or a notification included)",
    METHOD_NOT_FOUND: "the method is not `propagate`",
    INVALID_PARAMS: "params missing, of the wrong type, or unknown (`data.fields` names them)",
    TARGET_LOGIN_FAILED: "the target refused the administrator's login (`data.status`)",
    TARGET_SITE_NOT_FOUND: "the target has no site of that name (`data.site`)",
    UNKNOWN_VARIABLES: "the artifact names run-time variables the target site does not define",
    NOT_FOUND: "the artifact to propagate does not exist in this site",
    TARGET_REFUSED: "the target refused the artifact (`data.status`, `data.error`)",
    UNKNOWN_SECRETS: "the connection profile lists vault secrets the target site does not have",
    TARGET_UNREACHABLE: "the target could not be reached, or answered with a redirect, which is not followed",
    TARGET_NOT_ALLOWED: "the target endpoint is not an allowed outbound address (`data.reason`)",
    PARTIAL_FAILURE: "some items of a many-artifact call failed (`data.results` has each item's outcome)",
}

# The HTTP status each code answers with: the seed's 404 for a missing artifact; 4xx for the rest, a
# failure of the target included (424 Failed Dependency), never a 5xx.
STATUS: dict[int, int] = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    METHOD_NOT_FOUND: 404,
    INVALID_PARAMS: 400,
    TARGET_LOGIN_FAILED: 424,
    TARGET_SITE_NOT_FOUND: 424,
    UNKNOWN_VARIABLES: 424,
    NOT_FOUND: 404,
    TARGET_REFUSED: 424,
    UNKNOWN_SECRETS: 424,
    TARGET_UNREACHABLE: 424,
    TARGET_NOT_ALLOWED: 400,
    PARTIAL_FAILURE: 424,
}

METHOD = "propagate"
MAX_ID_CHARS = 128


@dataclass
class RpcError(Exception):
    """An error answer. `id` is the call's id when it could be read (null otherwise, as the spec says)."""

    code: int
    message: str
    data: dict[str, Any] | None = None
    id: str | int | None = None

    @property
    def status(self) -> int:
        return STATUS.get(self.code, 400)

    def answer(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return {"jsonrpc": "2.0", "id": self.id, "error": error}


@dataclass(frozen=True)
class Call:
    id: str | int
    method: str
    params: dict[str, Any] = field(default_factory=dict)


def success(call_id: str | int, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id, "result": result}


def _id_of(body: dict[str, Any]) -> str | int | None:
    raw = body.get("id")
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        return None
    if isinstance(raw, str) and len(raw) > MAX_ID_CHARS:
        return None
    if isinstance(raw, int) and abs(raw) > 2**53:
        return None
    return raw


def parse_call(text: str | None) -> Call:
    """A JSON-RPC 2.0 call of one method with an id, or RpcError with the spec's code."""
    if not text or not text.strip():
        raise RpcError(PARSE_ERROR, "Parse error: the body is empty; send a JSON-RPC 2.0 call")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        raise RpcError(PARSE_ERROR, "Parse error: the body is not valid JSON") from None
    if isinstance(body, list):
        raise RpcError(INVALID_REQUEST, "Invalid Request: batch calls are not supported; send one call")
    if not isinstance(body, dict):
        raise RpcError(INVALID_REQUEST, "Invalid Request: the call must be a JSON object")
    call_id = _id_of(body)
    if body.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"', id=call_id)
    if "id" not in body:
        raise RpcError(
            INVALID_REQUEST,
            "Invalid Request: notifications (calls without an id) are not accepted; propagate answers",
        )
    if call_id is None:
        raise RpcError(
            INVALID_REQUEST,
            f'Invalid Request: "id" must be a string of at most {MAX_ID_CHARS} characters or an integer',
        )
    unknown = sorted(set(body) - {"jsonrpc", "id", "method", "params"})
    if unknown:
        raise RpcError(
            INVALID_REQUEST, f"Invalid Request: unknown member(s) {', '.join(unknown)}", id=call_id
        )
    method = body.get("method")
    if not isinstance(method, str):
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "method" must be a string', id=call_id)
    if method != METHOD:
        shown = method[:64]
        raise RpcError(
            METHOD_NOT_FOUND, f"Method not found: {shown!r}; the method is 'propagate'", id=call_id
        )
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, 'Invalid params: "params" must be an object', id=call_id)
    problem = document_error(params)
    if problem is not None:
        raise RpcError(INVALID_PARAMS, f"Invalid params: {problem.under('params')}", id=call_id)
    return Call(call_id, method, params)
