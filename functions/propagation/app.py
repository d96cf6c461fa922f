"""Propagation function: the EFT-style admin API (seed 004) — admin login, sites, the three artifact kinds
(`custom-commands`, `awe-tasks`, `connection-profiles`) by id with create-or-replace PUT, and the
JSON-RPC `propagate` call on an artifact's path.

Thin by design: read the token (`EFTAdminAuthToken` or `Bearer`, of a password login), parse, call
flowgate.propagation, shape JSON:API answers (`application/vnd.api+json`). Paths are served under both
`/admin/v2` and EFT's `/Admin/v2`.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from pydantic import ValidationError

from flowgate.errors import BadRequest, Unauthorized
from flowgate.http import Cursor, Limit, create_app, entry, invalid_body
from flowgate.propagation.models import JSON_API, AuthenticationRequest
from flowgate.wiring import container

app = create_app()
PREFIXES = ("/admin/v2", "/Admin/v2")
LOGIN = "/admin/v1/authentication"
SCHEMES = ("eftadminauthtoken", "bearer")


def _token() -> str:
    raw = (app.current_event.headers.get("authorization") or "").strip()
    scheme, _, token = raw.partition(" ")
    if scheme.lower() not in SCHEMES or not token.strip():
        raise Unauthorized(
            "send 'Authorization: EFTAdminAuthToken <authToken>' (POST /admin/v1/authentication)",
            code="missing_credentials",
        )
    return token.strip()


def admin() -> Any:
    principal, _ = container().authenticator.session_principal(_token())
    return principal


def jsonapi(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(status_code=status, content_type=JSON_API, body=json.dumps(body), headers=headers or {})


def permissions(principal: Any) -> list[dict[str, str]]:
    return [
        {"policy": "ServerAdmin" if principal.is_contract_admin and not principal.platform_admin else "None"}
    ]


@app.post(LOGIN, tags=["admin api"])
def authenticate() -> Response[Any]:
    """EFT's admin login: `{"userName", "password", "authType": "EFT"}`, with any content type."""
    raw = app.current_event.body or ""
    try:
        request = AuthenticationRequest.model_validate_json(raw or "null")
    except ValidationError as exc:
        raise invalid_body(exc.errors()) from None
    if request.authType.upper() != "EFT":
        raise BadRequest(
            "authType must be 'EFT' (password-managed administrator accounts)", code="validation_error"
        )
    identity = (app.current_event.raw_event.get("requestContext") or {}).get("identity") or {}
    issued = container().authenticator.login(
        request.userName, request.password.get_secret_value(), identity.get("sourceIp"), name="eft-admin"
    )
    principal, _ = container().authenticator.session_principal(issued.token)
    body = {"authToken": issued.token, "permissions": permissions(principal)}
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=json.dumps(body))


@app.get("/admin/v2/authentication", tags=["admin api"])
def session() -> Response[Any]:
    token = _token()
    principal, expires = container().authenticator.session_principal(token)
    data = {"authToken": token, "username": principal.username, "expiresAt": expires}
    body = {"data": data, "permissions": permissions(principal)}
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=json.dumps(body))


@app.route("/admin/v2/keep-alive", method="HEAD", tags=["admin api"])
def keep_alive() -> Response[str]:
    container().authenticator.session_principal(_token())
    return Response(status_code=200, content_type=content_types.TEXT_PLAIN, body="")  # EFT: 200, no body


@app.post("/admin/v2/logout", tags=["admin api"])
def logout() -> Response[str]:
    container().authenticator.logout(_token())
    return Response(status_code=200, content_type=content_types.TEXT_PLAIN, body="")  # EFT: 200, no body


def _site(workspace: Any) -> dict[str, Any]:
    return {
        "type": "site",
        "id": workspace.id,
        "attributes": {"name": workspace.name, "kind": workspace.kind.value},
        "links": {"self": f"/admin/v2/sites/{workspace.id}"},
    }


def list_sites() -> Response[Any]:
    sites = container().site_admin.list(admin())
    return jsonapi({"data": [_site(w) for w in sites], "links": {"self": "/admin/v2/sites"}})


def get_site(site: str) -> Response[Any]:
    workspace = container().site_admin.site(admin(), site)
    return jsonapi({"data": _site(workspace), "links": {"self": f"/admin/v2/sites/{site}"}})


def list_artifacts(site: str, kind: str, limit: Limit = 100, cursor: Cursor = None) -> Response[Any]:
    shown, nxt = container().artifacts.list(admin(), site, _kind(kind), limit, cursor)
    links: dict[str, Any] = {"self": f"/admin/v2/sites/{site}/{kind}"}
    if nxt:
        links["next"] = f"/admin/v2/sites/{site}/{kind}?cursor={nxt}"
    return jsonapi({"data": [s.resource() for s in shown], "links": links})


def create_artifact(site: str, kind: str) -> Response[Any]:
    shown = container().artifacts.create(admin(), site, _kind(kind), app.current_event.body)
    return jsonapi(shown.document(), 201, {"Location": shown.self_link, "ETag": _etag(shown)})


def get_artifact(site: str, kind: str, artifact_id: str) -> Response[Any]:
    shown = container().artifacts.get(admin(), site, _kind(kind), artifact_id)
    return jsonapi(shown.document(), 200, {"ETag": _etag(shown)})


def put_artifact(site: str, kind: str, artifact_id: str) -> Response[Any]:
    shown, was_created = container().artifacts.put(
        admin(), site, _kind(kind), artifact_id, app.current_event.body
    )
    headers = {"ETag": _etag(shown)} | ({"Location": shown.self_link} if was_created else {})
    return jsonapi(shown.document(), 201 if was_created else 200, headers)


def patch_artifact(site: str, kind: str, artifact_id: str) -> Response[Any]:
    shown = container().artifacts.patch(admin(), site, _kind(kind), artifact_id, app.current_event.body)
    return jsonapi(shown.document(), 200, {"ETag": _etag(shown)})


def delete_artifact(site: str, kind: str, artifact_id: str) -> Response[None]:
    container().artifacts.delete(admin(), site, _kind(kind), artifact_id)
    return Response(status_code=204)


def call_artifact(site: str, kind: str, artifact_id: str) -> Response[Any]:
    """JSON-RPC 2.0 on the artifact: `propagate` (seed 004)."""
    from flowgate.propagation.jsonrpc import RpcError, parse_call

    principal = admin()
    try:
        call = parse_call(app.current_event.body)
        answer = container().propagator.propagate(principal, site, _kind(kind), artifact_id, call)
    except RpcError as exc:
        return Response(
            status_code=exc.status, content_type=content_types.APPLICATION_JSON, body=json.dumps(exc.answer())
        )
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=json.dumps(answer))


def propagate_many(site: str) -> Response[Any]:
    """JSON-RPC 2.0 `propagate` of many artifacts to one or several targets (beyond EFT)."""
    from flowgate.propagation.jsonrpc import RpcError, parse_call

    principal = admin()
    try:
        answer = container().propagator.propagate_many(principal, site, parse_call(app.current_event.body))
    except RpcError as exc:
        return Response(
            status_code=exc.status, content_type=content_types.APPLICATION_JSON, body=json.dumps(exc.answer())
        )
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=json.dumps(answer))


def get_permissions(site: str, kind: str, artifact_id: str) -> Response[Any]:
    acl = container().artifacts.get_permissions(admin(), site, _kind(kind), artifact_id)
    return jsonapi(_acl(site, kind, artifact_id, acl))


def put_permissions(site: str, kind: str, artifact_id: str) -> Response[Any]:
    acl = container().artifacts.put_permissions(
        admin(), site, _kind(kind), artifact_id, app.current_event.body
    )
    return jsonapi(_acl(site, kind, artifact_id, acl))


def _acl(site: str, kind: str, artifact_id: str, acl: Any) -> dict[str, Any]:
    link = f"/admin/v2/sites/{site}/{kind}/{artifact_id.lower()}/permissions"
    resource = {"type": "permissions", "id": artifact_id.lower(), "attributes": acl.model_dump(mode="json")}
    return {"data": resource, "links": {"self": link}}


def list_propagations(site: str, limit: Limit = 50, cursor: Cursor = None) -> Response[Any]:
    items, nxt = container().propagator.records(admin(), site, limit, cursor)
    return Response(
        status_code=200,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"items": items, "next": nxt}),
    )


def list_targets(site: str, limit: Limit = 50, cursor: Cursor = None) -> Response[Any]:
    items, nxt = container().propagator.targets(admin(), site, limit, cursor)
    return Response(
        status_code=200,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"items": items, "next": nxt}),
    )


KINDS = ("custom-commands", "awe-tasks", "connection-profiles", "user-groups", "awe-tasks-folders")


def _kind(kind: str) -> str:
    if kind not in KINDS:
        from flowgate.errors import NotFound

        raise NotFound(f"no such collection '{kind[:64]}'; the kinds are {', '.join(KINDS)}")
    return kind


def _etag(shown: Any) -> str:
    import hashlib

    return '"' + hashlib.sha256(json.dumps(shown.attributes, sort_keys=True).encode()).hexdigest()[:32] + '"'


for prefix in PREFIXES:
    sites = f"{prefix}/sites"
    item = f"{sites}/<site>/<kind>/<artifact_id>"
    app.get(sites, tags=["admin api"])(list_sites)
    app.get(f"{sites}/<site>", tags=["admin api"])(get_site)
    app.get(f"{sites}/<site>/propagations", tags=["admin api"])(list_propagations)
    app.post(f"{sites}/<site>/propagations", tags=["admin api"])(propagate_many)
    app.get(f"{sites}/<site>/propagation-targets", tags=["admin api"])(list_targets)
    app.get(f"{sites}/<site>/<kind>", tags=["admin api"])(list_artifacts)
    app.post(f"{sites}/<site>/<kind>", tags=["admin api"])(create_artifact)
    app.get(item, tags=["admin api"])(get_artifact)
    app.put(item, tags=["admin api"])(put_artifact)
    app.patch(item, tags=["admin api"])(patch_artifact)
    app.delete(item, tags=["admin api"])(delete_artifact)
    app.post(item, tags=["admin api"])(call_artifact)
    app.get(f"{item}/permissions", tags=["admin api"])(get_permissions)
    app.put(f"{item}/permissions", tags=["admin api"])(put_permissions)

# Vendor scripts post the login, and seed 004's JSON-RPC calls, without a JSON content type (curl's
# default is a form's): those bodies are read as JSON whatever their declared type.
LENIENT = frozenset(
    {LOGIN}
    | {f"{p}/sites/{{site}}/{{kind}}/{{artifact_id}}" for p in PREFIXES}
    | {f"{p}/sites/{{site}}/propagations" for p in PREFIXES}
)
handler = entry(app, any_type_resources=LENIENT)
