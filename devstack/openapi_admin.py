"""The EFT-style admin API's part of the OpenAPI document (functions/propagation, seed 004).

Its handlers read their bodies themselves and answer JSON:API documents (`application/vnd.api+json`),
EFT's bare login object, or JSON-RPC 2.0 answers, so each operation is described here: the bodies it
takes, the statuses it answers with and their shapes (424 when a propagation's target failed).
"""

from __future__ import annotations

from typing import Any

from flowgate.propagation import jsonrpc
from flowgate.propagation.models import JSON_API

KINDS = ["custom-commands", "awe-tasks", "connection-profiles", "user-groups", "awe-tasks-folders"]
ADMIN_PREFIXES = ("/admin/", "/Admin/")
ERROR = {"$ref": "#/components/schemas/Error"}
RESOURCE = {
    "type": "object",
    "required": ["type", "id"],
    "properties": {
        "type": {"type": "string"},
        "id": {"type": "string"},
        "attributes": {"type": "object"},
        "relationships": {"type": "object"},
        "links": {"type": "object"},
    },
}
SCHEMAS: dict[str, Any] = {
    "JsonApiResource": RESOURCE,
    "JsonApiDocument": {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"$ref": "#/components/schemas/JsonApiResource"}, "links": {"type": "object"}},
    },
    "JsonApiList": {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/JsonApiResource"}},
            "links": {"type": "object"},
        },
    },
    "JsonApiWrite": {
        "type": "object",
        "description": "A JSON:API document: `data.type` is the kind's (customCommand, aweTask, "
        "connectionProfile), `data.attributes` its EFT attributes; unknown attributes are refused",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {
                        "type": "string",
                        "enum": ["customCommand", "aweTask", "connectionProfile", "userGroup", "aweFolder"],
                    },
                    "id": {"type": "string", "format": "uuid"},
                    "attributes": {"type": "object"},
                    "relationships": {"type": "object"},
                },
            }
        },
    },
    "AclWrite": {
        "type": "object",
        "description": "An artifact's admin permissions: `inherited` (the site's administrators, the "
        "default) or `entries` of members (by id) and what each may do: read, write, delete, propagate",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "object",
                "required": ["type", "attributes"],
                "properties": {
                    "type": {"type": "string", "enum": ["permissions"]},
                    "attributes": {
                        "type": "object",
                        "properties": {
                            "inherited": {"type": "boolean"},
                            "entries": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["member", "permissions"],
                                    "properties": {
                                        "member": {"type": "string"},
                                        "permissions": {
                                            "type": "array",
                                            "items": {"enum": ["read", "write", "delete", "propagate"]},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            }
        },
    },
    "AdminLogin": {
        "type": "object",
        "required": ["authToken", "permissions"],
        "properties": {"authToken": {"type": "string"}, "permissions": {"type": "array"}},
    },
    "AdminLoginRequest": {
        "type": "object",
        "required": ["userName", "password"],
        "properties": {
            "userName": {"type": "string", "minLength": 1, "maxLength": 256},
            "password": {"type": "string", "maxLength": 1024},
            "authType": {"type": "string", "enum": ["EFT"]},
        },
    },
    "AdminSession": {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "object",
                "required": ["authToken", "username"],
                "properties": {
                    "authToken": {"type": "string"},
                    "username": {"type": "string"},
                    "expiresAt": {"type": ["string", "null"]},
                },
            },
            "permissions": {"type": "array"},
        },
    },
    "RpcCall": {
        "type": "object",
        "required": ["jsonrpc", "method", "id"],
        "properties": {
            "jsonrpc": {"type": "string", "enum": ["2.0"]},
            "method": {"type": "string", "enum": [jsonrpc.METHOD]},
            "id": {"type": ["string", "integer"]},
            "params": {
                "type": "object",
                "required": [
                    "targetEndpoint",
                    "targetSiteName",
                    "targetAdminUsername",
                    "targetAdminPassword",
                ],
                "properties": {
                    "targetEndpoint": {"type": "string", "format": "uri"},
                    "targetSiteName": {"type": "string"},
                    "targetAdminUsername": {"type": "string"},
                    "targetAdminPassword": {"type": "string", "format": "password"},
                    "dryRun": {"type": "boolean"},
                    "saveTarget": {"type": "boolean"},
                },
            },
        },
    },
    "RpcCallMany": {
        "type": "object",
        "description": "`propagate` of many artifacts to one or several targets; `-32009` when any failed",
        "required": ["jsonrpc", "method", "id", "params"],
        "properties": {
            "jsonrpc": {"type": "string", "enum": ["2.0"]},
            "method": {"type": "string", "enum": [jsonrpc.METHOD]},
            "id": {"type": ["string", "integer"]},
            "params": {
                "type": "object",
                "required": ["artifacts", "targets"],
                "properties": {
                    "artifacts": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["type", "id"],
                            "properties": {
                                "type": {
                                    "type": "string",
                                    "enum": ["customCommand", "aweTask", "connectionProfile"],
                                },
                                "id": {"type": "string", "format": "uuid"},
                            },
                        },
                    },
                    "targets": {"type": "array", "items": {"type": "object"}},
                    "dryRun": {"type": "boolean"},
                    "saveTarget": {"type": "boolean"},
                },
            },
        },
    },
    "RpcAnswer": {
        "type": "object",
        "description": "A JSON-RPC 2.0 answer: `result`, or `error` with one of these codes: "
        + "; ".join(f"{code}: {meaning}" for code, meaning in sorted(jsonrpc.CODES.items())),
        "required": ["jsonrpc", "id"],
        "properties": {
            "jsonrpc": {"type": "string"},
            "id": {"type": ["string", "integer", "null"]},
            "result": {},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "data": {}},
            },
        },
    },
    "RecordList": {
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {"type": "array", "items": {"type": "object"}},
            "next": {"type": ["string", "null"]},
        },
    },
}


def is_admin(path: str) -> bool:
    return path.startswith(ADMIN_PREFIXES)


def _content(schema: str, media: str = "application/json") -> dict[str, Any]:
    return {media: {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


DESCRIPTIONS = {
    "400": "The request is invalid (validation_error, malformed_json, invalid_id, ...); nothing was changed",
    "401": "No valid admin session: log in with POST /admin/v1/authentication",
    "403": "Not an administrator (owner, org_admin) of the site's contract",
    "404": "No such site or artifact, or one of another contract",
    "409": "The name is used by another artifact of the site, or a concurrent change won",
    "413": "The body is too large",
    "415": "The body is not JSON",
    "429": "Too many attempts; retry after Retry-After seconds",
}


def _error(status: str, schema: dict[str, Any] = ERROR) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": DESCRIPTIONS[status],
        "content": {"application/json": {"schema": schema}},
    }
    if status == "429":
        answer["headers"] = {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer", "minimum": 1}}
        }
    return answer


# The JSON-RPC call's refusals: the platform's errors before the call is read (401, 403, a site not
# found), JSON-RPC answers after.
RPC_OR_ERROR = {"anyOf": [ERROR, {"$ref": "#/components/schemas/RpcAnswer"}]}


def _ok(
    description: str, schema: str | None, media: str = JSON_API, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = _content(schema, media)
    if headers:
        answer["headers"] = headers
    return answer


HEADER = {"schema": {"type": "string"}}


def _session_answers(method: str, path: str, operation: dict[str, Any]) -> dict[str, Any] | None:
    """Login, the session, keep-alive and logout; None for the other routes."""
    responses: dict[str, Any] = {}
    if path == "/admin/v1/authentication":
        operation["security"] = []
        operation["requestBody"] = {
            "required": True,
            "description": "read as JSON whatever its content type (vendor scripts send none)",
            "content": _content("AdminLoginRequest"),
        }
        responses["200"] = _ok("The session's token", "AdminLogin", "application/json")
        for status in ("400", "401", "413", "415", "429"):
            responses[status] = _error(status)
    elif path == "/admin/v2/authentication":
        responses["200"] = _ok("The session", "AdminSession", "application/json")
    elif method in ("HEAD", "POST") and path in ("/admin/v2/keep-alive", "/admin/v2/logout"):
        responses["200"] = {"description": "Done (no body, as EFT answers)"}
    else:
        return None
    return responses


def _successes(method: str, path: str, operation: dict[str, Any]) -> dict[str, Any]:
    """The operation's own answers (and request body, security): its successes, and propagate's errors."""
    body = JSON_API
    item = path.endswith("/{artifact_id}")
    collection = path.endswith("/{kind}")
    responses: dict[str, Any] = {}
    session = _session_answers(method, path, operation)
    if session is not None:
        responses.update(session)
    elif (item or path.endswith("/propagations")) and method == "POST":
        call = "RpcCall" if item else "RpcCallMany"
        operation["requestBody"] = {"required": True, "content": _content(call)}
        rpc = _content("RpcAnswer")
        responses["200"] = {"description": "The call's result", "content": rpc}
        responses["400"] = _error("400", RPC_OR_ERROR) | {
            "description": "A JSON-RPC error (-32700, -32600, -32602, -32008), or a bad request"
        }
        responses["404"] = _error("404", RPC_OR_ERROR) | {
            "description": "-32004: no such artifact (seed 004); -32601: no such method; or no such site"
        }
        responses["424"] = _error("400", RPC_OR_ERROR) | {
            "description": "The target failed: -32001, -32002, -32003, -32005, -32006, -32007 (`error.data`)"
        }
    elif path.endswith("/permissions"):
        if method == "PUT":
            operation["requestBody"] = {
                "required": True,
                "content": _content("AclWrite", body) | _content("AclWrite"),
            }
        responses["200"] = _ok("The artifact's admin permissions", "JsonApiDocument")
    elif item and method in ("PUT", "PATCH"):
        operation["requestBody"] = {
            "required": True,
            "content": _content("JsonApiWrite", body) | _content("JsonApiWrite"),
        }
        responses["200"] = _ok("Replaced", "JsonApiDocument", headers={"ETag": HEADER})
        if method == "PUT":
            responses["201"] = _ok(
                "Created with this id", "JsonApiDocument", headers={"ETag": HEADER, "Location": HEADER}
            )
    elif item and method == "DELETE":
        responses["204"] = _ok("Deleted", None)
    elif collection and method == "POST":
        operation["requestBody"] = {
            "required": True,
            "content": _content("JsonApiWrite", body) | _content("JsonApiWrite"),
        }
        responses["201"] = _ok("Created", "JsonApiDocument", headers={"ETag": HEADER, "Location": HEADER})
    elif path.endswith(("/propagations", "/propagation-targets")):
        responses["200"] = _ok("Newest first", "RecordList", "application/json")
    elif method == "GET" and (collection or path.endswith("/sites")):
        responses["200"] = _ok("The collection", "JsonApiList")
    else:
        responses["200"] = _ok("The resource", "JsonApiDocument", headers={"ETag": HEADER} if item else None)
    return responses


def describe(method: str, path: str, operation: dict[str, Any]) -> None:
    """Set the operation's request body, statuses and security (an admin API route)."""
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path" and parameter["name"] == "kind":
            parameter["schema"] = {"type": "string", "enum": KINDS}
    responses = _successes(method, path, operation)
    collection = path.endswith("/{kind}")
    if path != "/admin/v1/authentication":
        statuses = {"401", "403", "429"}
        if "{" in path:
            statuses |= {"400", "404"}
        if "requestBody" in operation:
            statuses |= {"400", "413", "415"}
        if method in ("PUT", "PATCH", "DELETE") or (collection and method == "POST"):
            statuses.add("409")
        for status in sorted(statuses):
            responses.setdefault(status, _error(status))
    operation["responses"] = dict(sorted(responses.items()))


def describe_all(document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        if is_admin(path):
            for method, operation in operations.items():
                describe(method.upper(), path, operation)
