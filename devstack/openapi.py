"""The API description of the whole application, produced from the code.

Each REST function's powertools resolver describes its own routes (request and response models come
from the pydantic types of the handlers). This merges them into one OpenAPI document, written into
the SharedLayer (`shared/flowgate/openapi.json`) so that `GET /api/latest/openapi.json` serves it
without importing every function. `python -m devstack.openapi --check` fails when the file is stale;
`--write` renews it. The template's routes and the resolvers' routes must be the same set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from devstack.lambdas import add_layer_paths, load_handler_module
from devstack.model import FunctionSpec
from devstack.provision import DEFAULT_TEMPLATE
from devstack.template import load_template

DOCUMENT = DEFAULT_TEMPLATE.parent / "shared" / "flowgate" / "openapi.json"
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "basic": {"type": "http", "scheme": "basic"},
}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _resolver_document(spec: FunctionSpec) -> tuple[dict[str, Any], dict[tuple[str, str], str]]:
    """The resolver's own document, and the return annotation of each route's handler."""
    module = load_handler_module(spec, f"openapi_{spec.logical_id}")
    try:
        app = module.app
        returns = {
            (route.method, route.openapi_path): str(route.func.__annotations__.get("return", ""))
            for route in [*app._static_routes, *app._dynamic_routes]
        }
        return dict(json.loads(app.get_openapi_json_schema(title="Flowgate API", version="latest"))), returns
    finally:
        sys.modules.pop(f"openapi_{spec.logical_id}", None)


def build_document(template_path: Path = DEFAULT_TEMPLATE) -> dict[str, Any]:
    """One OpenAPI 3.1 document for every REST function of the template."""
    functions = [f for f in load_template(template_path).functions() if f.api_routes]
    add_layer_paths(functions)
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    returns: dict[tuple[str, str], str] = {}
    for spec in sorted(functions, key=lambda f: f.logical_id):
        part, part_returns = _resolver_document(spec)
        returns.update(part_returns)
        for path, operations in part.get("paths", {}).items():
            for method, operation in operations.items():
                if method in paths.get(path, {}):
                    raise ValueError(f"{method.upper()} {path} is routed by two functions")
                paths.setdefault(path, {})[method] = operation
        for name, schema in part.get("components", {}).get("schemas", {}).items():
            if schemas.setdefault(name, schema) != schema:
                raise ValueError(f"two functions define the schema {name} differently")
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "Flowgate API",
            "version": "latest",
            "summary": "Native API of the Flowgate automation platform",
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.items())), "securitySchemes": SECURITY_SCHEMES},
        "security": [{"bearer": []}, {"basic": []}],
    }
    return tell_the_truth(document, returns)


# ---- what the resolvers cannot say: the statuses each route really answers -----------------------------
# powertools documents every route as "200 or 422"; the API never sends 422 (a refused input is a 400 of
# `{"error": {"code", "message"}}`, flowgate.http) and answers 201, 202 and 204 where a handler returns a
# `Response`. So the generated document is corrected here, route by route, from these rules and tables.

ERROR_SCHEMA = {
    "type": "object",
    "title": "Error",
    "description": "Every refusal: a stable machine-readable `code` and a message for people.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "examples": ["validation_error", "not_found", "too_deep"]},
                "message": {"type": "string"},
            },
        }
    },
}
# What API Gateway itself answers, before any function runs: `{"message": ...}` (devstack.apigw).
GATEWAY_ERROR_SCHEMA = {
    "type": "object",
    "title": "GatewayError",
    "description": "An answer of API Gateway itself, before the request reached Flowgate.",
    "required": ["message"],
    "properties": {"message": {"type": "string"}},
}
GATEWAY_ERRORS = {
    "431": "The request line and headers exceed API Gateway's quota (answered by the gateway)",
}
ERROR_DESCRIPTIONS = {
    "400": "The request is invalid (validation_error, malformed_json, too_deep, unstorable_number, "
    "empty_key, invalid_text, invalid_name, invalid_cursor, invalid_time, ...); nothing was changed",
    "401": "No valid credentials (a bearer token, or HTTP Basic)",
    "403": "The caller may not do this here",
    "404": "No such resource, or one of another contract",
    "409": "It conflicts with the resource's state or a concurrent change",
    "410": "The task was already decided or is over",
    "412": "If-Match names a version that is no longer current",
    "413": "The body (or a message in it) is too large",
    "415": "The body is not JSON",
    "429": "Too many attempts; retry after Retry-After seconds",
}
RETRY_AFTER = {"description": "Seconds to wait", "schema": {"type": "integer", "minimum": 1}}
LOCATION = {"description": "Where the new or queued resource lives", "schema": {"type": "string"}}
WWW_AUTHENTICATE = {"description": "The schemes accepted: Bearer, Basic", "schema": {"type": "string"}}

HEALTH = ("GET", "/api/latest/health")
LOGIN = ("POST", "/api/latest/auth/login")
DECISION = ("POST", "/api/object/task/{uuid}/action/{decision}")
SYNC_EXCHANGE = ("POST", "/api/latest/sync_config/{name}/sync")  # authenticated by its RFC 9421 signature
PUBLIC = {HEALTH, LOGIN, SYNC_EXCHANGE}
NEVER_FORBIDDEN = {HEALTH, LOGIN, ("GET", "/api/latest/auth/me")}
# Routes whose handler returns a `Response`: the statuses it answers with, and its body schema, as a
# schema reference name, "anyOf:<name>|<name>", None for no body, or "" for the resolver's own schema.
SUCCESS: dict[tuple[str, str], dict[str, str | None]] = {
    ("PUT", "/api/latest/workspaces/{ws}/flows/{name}"): {"200": "", "201": ""},
    ("DELETE", "/api/latest/workspaces/{ws}/flows/{name}"): {"204": None},
    ("POST", "/api/latest/workspaces/{ws}/flows/{name}/messages"): {"202": ""},
    ("POST", "/api/latest/workspaces/{ws}/executions"): {"202": ""},
    ("PUT", "/api/latest/workspaces/{ws}/connectors/{name}"): {"200": "", "201": ""},
    ("DELETE", "/api/latest/workspaces/{ws}/connectors/{name}"): {"204": None},
    ("POST", "/api/latest/workspaces/{ws}/connectors/{name}/run"): {"202": ""},
    ("DELETE", "/api/latest/workspaces/{ws}/secrets/{name}"): {"204": None},
    ("PUT", "/api/latest/workspaces/{ws}/variables/{name}"): {"200": "", "201": ""},
    ("DELETE", "/api/latest/workspaces/{ws}/variables/{name}"): {"204": None},
    ("POST", "/api/latest/auth/tokens"): {"201": ""},
    ("DELETE", "/api/latest/auth/tokens/{token_id}"): {"204": None},
    ("POST", "/api/latest/contracts"): {"201": ""},
    ("POST", "/api/latest/contracts/{cid}/members"): {"201": ""},
    ("POST", "/api/latest/contracts/{cid}/workspaces"): {"201": ""},
    ("DELETE", "/api/latest/workspaces/{ws}/access/{uid}"): {"204": None},
    ("POST", "/api/cloud/workspaces/{ws}/virtualmachines"): {"201": ""},
    ("POST", "/api/cloud/workspaces/{ws}/virtualappliances"): {"201": ""},
    ("POST", "/api/cloud/workspaces/{ws}/virtualmachines/{vm}/action/{op}"): {"202": "Task"},
    ("POST", "/api/cloud/workspaces/{ws}/virtualappliances/{vapp}/action/{op}"): {
        "202": "anyOf:Task|TaskCollection"  # one task per VM: an appliance of one VM answers the task
    },
    DECISION: {"200": "", "202": ""},  # 202: a continue won (the jobs start next); 200: a cancel, a repeat
    ("PUT", "/api/latest/workspaces/{ws}/sync_config/{name}"): {"200": "", "201": ""},
    ("DELETE", "/api/latest/workspaces/{ws}/sync_config/{name}"): {"204": None},
    SYNC_EXCHANGE: {"200": "Envelope"},  # the answering envelope, as the signed bytes
}
# Routes that take `If-Match: <version>` (optimistic concurrency, 412 when stale).
IF_MATCH = {
    ("PATCH", "/api/latest/contracts/{cid}"),
    ("PATCH", "/api/latest/contracts/{cid}/members/{uid}"),
    ("PATCH", "/api/latest/workspaces/{ws}"),
}
# The exchange reads its body as the signed bytes (no model the resolver sees): an Envelope.
SYNC_EXCHANGE_BODY = {
    "required": True,
    "description": "An Envelope, signed (RFC 9421: Signature, Signature-Input, Content-Digest headers)",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
}
# A decision's optional body: nothing, `{}`, any JSON, or a text/plain message (flowgate.http).
DECISION_BODY = {
    "required": False,
    "content": {
        "application/json": {"schema": {"description": "`{}`, or a message as JSON (kept as its text)"}},
        "text/plain": {"schema": {"type": "string", "maxLength": 16384}},
    },
}


RAW_BODIES = {DECISION: DECISION_BODY, SYNC_EXCHANGE: SYNC_EXCHANGE_BODY}


def _query_schemas() -> dict[str, dict[str, Any]]:
    """The query parameters the resolvers take as plain types, described as the code checks them."""
    from flowgate.workflow.common import MAX_EPOCH_MS, MIN_EPOCH_MS
    from flowgate.workflow.models import TaskType

    epoch = {"type": "integer", "minimum": MIN_EPOCH_MS, "maximum": MAX_EPOCH_MS}
    kinds = [t.value for t in TaskType]
    return {
        "type": {
            "anyOf": [{"type": "string", "enum": kinds + [k.lower() for k in kinds]}, {"type": "null"}],
            "title": "Type",
            "description": "the task's type (either case)",
        },
        "since": {"anyOf": [epoch, {"type": "null"}], "title": "Since", "description": "epoch ms, inclusive"},
        "until": {"anyOf": [epoch, {"type": "null"}], "title": "Until", "description": "epoch ms, inclusive"},
    }


def _success_body(generated: dict[str, Any] | None, schema: str | None) -> dict[str, Any] | None:
    if schema is None:
        return None
    if schema == "":
        return generated
    if schema.startswith("anyOf:"):
        refs = [{"$ref": f"#/components/schemas/{name}"} for name in schema.removeprefix("anyOf:").split("|")]
        return {"application/json": {"schema": {"anyOf": refs}}}
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


def _successes(route: tuple[str, str], operation: dict[str, Any], returns: str) -> dict[str, dict[str, Any]]:
    generated = (operation.get("responses", {}).get("200") or {}).get("content")
    table = SUCCESS.get(route)
    if table is None:
        if returns.startswith("Response["):
            raise ValueError(
                f"{route[0]} {route[1]} returns a Response: add its statuses to devstack.openapi.SUCCESS"
            )
        table = {"200": ""}
    answers: dict[str, dict[str, Any]] = {}
    for status, schema in table.items():
        answer: dict[str, Any] = {
            "description": {"200": "OK", "201": "Created", "202": "Accepted"}.get(status, "No content")
        }
        content = _success_body(generated, schema)
        if content is not None:
            answer["content"] = content
        if status in ("201", "202") and route != DECISION:
            answer["headers"] = {"Location": LOCATION}
        answers[status] = answer
    return answers


def _error_statuses(route: tuple[str, str], operation: dict[str, Any]) -> set[str]:
    method = route[0]
    params = operation.get("parameters", [])
    has_body = "requestBody" in operation
    statuses: set[str] = set()
    if has_body:
        statuses |= {"400", "413", "415"}
    if params:
        statuses.add("400")
    if route != HEALTH:
        statuses |= {"401", "429"}  # login, and every route that takes HTTP Basic, is throttled
    if route not in NEVER_FORBIDDEN:
        statuses.add("403")
    if any(p["in"] == "path" for p in params):
        statuses.add("404")
    if method in ("POST", "PUT", "PATCH", "DELETE") and route not in PUBLIC:
        statuses.add("409")
    if route == DECISION:
        statuses.add("410")
    if route in IF_MATCH:
        statuses.add("412")
    return statuses


def _error_answer(status: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": ERROR_DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if status == "429":
        answer["headers"] = {"Retry-After": RETRY_AFTER}
    if status == "401":
        answer["headers"] = {"WWW-Authenticate": WWW_AUTHENTICATE}
    return answer


def _model_schemas(model: type[BaseModel]) -> dict[str, Any]:
    """A model's schema and those it refers to, as components."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {model.__name__: schema, **defs}


def _references(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[-1]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_references(v) for k, v in node.items() if k != "$ref"))
    if isinstance(node, list):
        return set().union(*(_references(v) for v in node))
    return set()


def tell_the_truth(document: dict[str, Any], returns: dict[tuple[str, str], str]) -> dict[str, Any]:
    """Each operation answers exactly its statuses: its successes (200, 201, 202, 204), and its refusals,
    each `{"error": {"code", "message"}}`; no 422. Query parameters the resolvers take as plain types get
    their enums and ranges; the public routes need no credentials; If-Match and the decision's optional
    body (JSON or text/plain) are described."""
    from devstack import openapi_admin  # it reads flowgate's models: after the layer paths are set

    queries = _query_schemas()
    openapi_admin.describe_all(document)  # the EFT-style admin API describes itself
    native = {p: ops for p, ops in document["paths"].items() if not openapi_admin.is_admin(p)}
    for path, operations in native.items():
        for method, operation in operations.items():
            route = (method.upper(), path)
            if route in RAW_BODIES:  # bodies the handlers read themselves
                operation["requestBody"] = RAW_BODIES[route]
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and parameter["name"] in queries and "pendingtasks" in path:
                    parameter["schema"] = queries[parameter["name"]]
            if route in IF_MATCH:
                operation.setdefault("parameters", []).append(
                    {
                        "name": "If-Match",
                        "in": "header",
                        "required": False,
                        "description": 'the version read (`3` or `"3"`): refused with 412 if it changed',
                        "schema": {"type": "string"},
                    }
                )
            if route in PUBLIC:
                operation["security"] = []
            responses = _successes(route, operation, returns.get(route, ""))
            for status in sorted(_error_statuses(route, operation)):
                responses[status] = _error_answer(status)
            if route == SYNC_EXCHANGE:  # no credentials but the signature: no WWW-Authenticate either
                responses["401"] = {
                    "description": "The signature does not verify for this config, or there is no such "
                    "config (the same answer): invalid_signature, stale_signature, replayed_nonce",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
            gateway_error = {"application/json": {"schema": {"$ref": "#/components/schemas/GatewayError"}}}
            for status, description in GATEWAY_ERRORS.items():
                responses[status] = {"description": description, "content": gateway_error}
            operation["responses"] = dict(sorted(responses.items()))
    schemas = document["components"]["schemas"]
    schemas["Error"] = ERROR_SCHEMA
    schemas.update(openapi_admin.SCHEMAS)
    schemas["GatewayError"] = GATEWAY_ERROR_SCHEMA
    from flowgate.sync.protocol import Envelope

    schemas.update(
        _model_schemas(Envelope)
    )  # the exchange answers signed bytes, not a model the resolver sees
    used = _references(document["paths"])
    pending = list(used)
    while pending:  # what the schemas used refer to, in turn
        for name in _references(schemas.get(pending.pop(), {})) - used:
            used.add(name)
            pending.append(name)
    document["components"]["schemas"] = {k: v for k, v in sorted(schemas.items()) if k in used}
    return document


def documented_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, ops in document["paths"].items() for m in ops if m in METHODS}


def template_routes(template_path: Path = DEFAULT_TEMPLATE) -> set[tuple[str, str]]:
    return {(r.method, r.path) for f in load_template(template_path).functions() for r in f.api_routes}


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, sort_keys=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="renew shared/flowgate/openapi.json")
    args = parser.parse_args()
    document = build_document()
    text = render(document)
    undocumented = template_routes() - documented_routes(document) - {("GET", "/api/latest/openapi.json")}
    if undocumented:
        sys.stderr.write(f"template routes no resolver serves: {sorted(undocumented)}\n")
        return 1
    if args.write:
        DOCUMENT.write_text(text)
        return 0
    if not DOCUMENT.is_file() or DOCUMENT.read_text() != text:
        sys.stderr.write(f"{DOCUMENT} is stale: run `make openapi`\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
