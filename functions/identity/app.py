"""Identity function: health, OpenAPI, login and tokens, contracts, members, workspaces and access.

Thin by design: parse (pydantic, via the resolver), authenticate, call the identity service, shape
the answer. It also answers the AdminBootstrap custom resource on deploy.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

from flowgate import cfn
from flowgate.http import (
    API_ROOT,
    Cursor,
    Limit,
    Listing,
    create_app,
    created,
    entry,
    if_match,
    openapi_document,
)
from flowgate.identity.models import (
    ApiToken,
    Contract,
    CreateApiTokenRequest,
    CreateContractRequest,
    CreateMemberRequest,
    CreateWorkspaceRequest,
    GrantAccessRequest,
    IssuedToken,
    LoginRequest,
    LoginResponse,
    Member,
    Principal,
    UpdateContractRequest,
    UpdateMemberRequest,
    UpdateWorkspaceRequest,
    Workspace,
    WorkspaceAccess,
)
from flowgate.rest import caller as principal_of
from flowgate.wiring import container

app = create_app()


def caller() -> Principal:
    return principal_of(app)


# ---- public ----------------------------------------------------------------------------------


@app.get(f"{API_ROOT}/health", include_in_schema=True, tags=["platform"])
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get(f"{API_ROOT}/openapi.json", include_in_schema=False)
def openapi() -> Response[str]:
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=openapi_document())


@app.post(f"{API_ROOT}/auth/login", tags=["auth"])
def login(body: LoginRequest) -> LoginResponse:
    identity = (app.current_event.raw_event.get("requestContext") or {}).get("identity") or {}
    issued = container().authenticator.login(body.username, body.password, identity.get("sourceIp"))
    return LoginResponse(token=issued.token, expires_at=issued.expires_at)


# ---- the caller and their tokens -------------------------------------------------------------


@app.get(f"{API_ROOT}/auth/me", tags=["auth"])
def whoami() -> Principal:
    return caller()


@app.post(f"{API_ROOT}/auth/tokens", tags=["auth"])
def create_api_token(body: CreateApiTokenRequest) -> Response[IssuedToken]:
    issued = container().authenticator.create_api_token(caller(), body.name, body.expires_in_days)
    return created(issued, f"{API_ROOT}/auth/tokens/{issued.id}")


@app.get(f"{API_ROOT}/auth/tokens", tags=["auth"])
def list_api_tokens(limit: Limit = 50, cursor: Cursor = None) -> Listing[ApiToken]:
    page = container().authenticator.list_api_tokens(caller(), limit, cursor)
    from flowgate.identity.store import token_from  # the store (and the table adapter) load on use

    return Listing(items=[token_from(i) for i in page.items], next=page.next)


@app.delete(f"{API_ROOT}/auth/tokens/<token_id>", tags=["auth"])
def revoke_api_token(token_id: str) -> Response[None]:
    container().authenticator.revoke_api_token(caller(), token_id)
    return Response(status_code=204)


# ---- contracts -------------------------------------------------------------------------------


@app.post(f"{API_ROOT}/contracts", tags=["contracts"])
def create_contract(body: CreateContractRequest) -> Response[Contract]:
    contract = container().identity.create_contract(caller(), body)
    return created(contract, f"{API_ROOT}/contracts/{contract.id}")


@app.get(f"{API_ROOT}/contracts", tags=["contracts"])
def list_contracts(limit: Limit = 50, cursor: Cursor = None) -> Listing[Contract]:
    items, nxt = container().identity.list_contracts(caller(), limit, cursor)
    return Listing(items=items, next=nxt)


@app.get(f"{API_ROOT}/contracts/<cid>", tags=["contracts"])
def get_contract(cid: str) -> Contract:
    return container().identity.get_contract(caller(), cid)


@app.patch(f"{API_ROOT}/contracts/<cid>", tags=["contracts"])
def update_contract(cid: str, body: UpdateContractRequest) -> Contract:
    return container().identity.update_contract(caller(), cid, body, if_match(app))


# ---- members ---------------------------------------------------------------------------------


@app.post(f"{API_ROOT}/contracts/<cid>/members", tags=["members"])
def create_member(cid: str, body: CreateMemberRequest) -> Response[Member]:
    member = container().identity.create_member(caller(), cid, body)
    return created(member, f"{API_ROOT}/contracts/{cid}/members/{member.id}")


@app.get(f"{API_ROOT}/contracts/<cid>/members", tags=["members"])
def list_members(cid: str, limit: Limit = 50, cursor: Cursor = None) -> Listing[Member]:
    items, nxt = container().identity.list_members(caller(), cid, limit, cursor)
    return Listing(items=items, next=nxt)


@app.get(f"{API_ROOT}/contracts/<cid>/members/<uid>", tags=["members"])
def get_member(cid: str, uid: str) -> Member:
    return container().identity.get_member(caller(), cid, uid)


@app.patch(f"{API_ROOT}/contracts/<cid>/members/<uid>", tags=["members"])
def update_member(cid: str, uid: str, body: UpdateMemberRequest) -> Member:
    return container().identity.update_member(caller(), cid, uid, body, if_match(app))


# ---- workspaces ------------------------------------------------------------------------------


@app.post(f"{API_ROOT}/contracts/<cid>/workspaces", tags=["workspaces"])
def create_workspace(cid: str, body: CreateWorkspaceRequest) -> Response[Workspace]:
    workspace = container().identity.create_workspace(caller(), cid, body)
    return created(workspace, f"{API_ROOT}/workspaces/{workspace.id}")


@app.get(f"{API_ROOT}/contracts/<cid>/workspaces", tags=["workspaces"])
def list_workspaces(cid: str, limit: Limit = 50, cursor: Cursor = None) -> Listing[Workspace]:
    items, nxt = container().identity.list_workspaces(caller(), cid, limit, cursor)
    return Listing(items=items, next=nxt)


@app.get(f"{API_ROOT}/workspaces/<ws>", tags=["workspaces"])
def get_workspace(ws: str) -> Workspace:
    return container().identity.get_workspace(caller(), ws)


@app.patch(f"{API_ROOT}/workspaces/<ws>", tags=["workspaces"])
def update_workspace(ws: str, body: UpdateWorkspaceRequest) -> Workspace:
    return container().identity.update_workspace(caller(), ws, body, if_match(app))


@app.get(f"{API_ROOT}/workspaces/<ws>/access", tags=["workspaces"])
def list_access(ws: str, limit: Limit = 50, cursor: Cursor = None) -> Listing[WorkspaceAccess]:
    items, nxt = container().identity.list_access(caller(), ws, limit, cursor)
    return Listing(items=items, next=nxt)


@app.put(f"{API_ROOT}/workspaces/<ws>/access/<uid>", tags=["workspaces"])
def grant_access(ws: str, uid: str, body: GrantAccessRequest) -> WorkspaceAccess:
    return container().identity.grant_access(caller(), ws, uid, body)


@app.delete(f"{API_ROOT}/workspaces/<ws>/access/<uid>", tags=["workspaces"])
def revoke_access(ws: str, uid: str) -> Response[None]:
    container().identity.revoke_access(caller(), ws, uid)
    return Response(status_code=204)


# ---- entry point -----------------------------------------------------------------------------

rest_handler = entry(app)


def _bootstrap_admin(properties: Any) -> None:
    from flowgate.secrets import read_json_secret

    secret = read_json_secret(str(properties["SecretId"]))
    container().identity.ensure_platform_admin(secret["username"], secret["password"])


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any] | None:
    if cfn.is_custom_resource_event(event):
        cfn.handle(event, _bootstrap_admin)
        return None
    return rest_handler(event, context)
