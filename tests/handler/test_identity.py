"""The identity function against moto: auth, tenancy, roles, bad input and optimistic concurrency."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from flowgate.identity import auth
from flowgate.observability import logger
from tests.handler.conftest import ADMIN, Api, Tenant

A = "/api/latest"


# ---- health, OpenAPI -------------------------------------------------------------------------


def test_health_needs_no_token(api: Api):
    answer = api.call("GET", f"{A}/health")
    assert answer.status == 200
    assert answer.body == {"status": "ok"}
    assert answer.headers["X-Correlation-Id"]


def test_openapi_describes_the_routes_and_auth(api: Api):
    doc = api.call("GET", f"{A}/openapi.json").body
    assert doc["openapi"].startswith("3.")
    assert {
        "/api/latest/auth/login",
        "/api/latest/contracts/{cid}/workspaces",
        "/api/latest/workspaces/{ws}",
    } <= set(doc["paths"])
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "basic"}
    login_body = doc["paths"]["/api/latest/auth/login"]["post"]["requestBody"]
    assert login_body["required"] is True


# ---- login, tokens, Basic --------------------------------------------------------------------


def test_login_issues_an_expiring_bearer_token(api: Api):
    answer = api.call("POST", f"{A}/auth/login", {"username": ADMIN[0], "password": ADMIN[1]})
    assert answer.status == 200
    assert set(answer.body) == {"token", "expires_at"}
    expires = dt.datetime.fromisoformat(answer.body["expires_at"].replace("Z", "+00:00"))
    assert dt.timedelta(minutes=59) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=1)
    me = api.call("GET", f"{A}/auth/me", token=answer.body["token"])
    assert me.status == 200
    assert me.body["username"] == ADMIN[0]
    assert me.body["platform_admin"] is True


@pytest.mark.parametrize(
    "credentials",
    [(ADMIN[0], "wrong-password-123"), ("nobody-here", ADMIN[1]), (ADMIN[0].upper(), "x")],
)
def test_wrong_credentials_are_one_and_the_same_401(api: Api, credentials):
    answer = api.call("POST", f"{A}/auth/login", {"username": credentials[0], "password": credentials[1]})
    assert answer.status == 401
    assert answer.body["error"] == {"code": "invalid_credentials", "message": "invalid username or password"}


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ('{"username": "a", "password": ', "malformed_json"),
        ('["a", "b"]', "validation_error"),
        ('{"username": "a"}', "validation_error"),
        ('{"username": "a", "password": "b", "admin": true}', "validation_error"),
        ('{"username": 5, "password": "b"}', "validation_error"),
        ("", "validation_error"),
    ],
)
def test_login_bad_input(api: Api, raw, code):
    answer = api.call("POST", f"{A}/auth/login", raw=raw, headers={"Content-Type": "application/json"})
    assert answer.status == 400
    assert answer.error_code == code
    assert answer.body["error"]["message"]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer nonsense", "Bearer fgt_unknown", "Token abc", "Basic !!!", "Basic " + "Zm9v"],
)
def test_bad_authorization_is_401_with_a_challenge(api: Api, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    answer = api.call("GET", f"{A}/auth/me", headers=headers)
    assert answer.status == 401
    assert "Bearer" in answer.headers["WWW-Authenticate"]


def test_expired_token_is_refused(api: Api, monkeypatch: pytest.MonkeyPatch):
    token = api.login(*ADMIN)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1, seconds=1)
    monkeypatch.setattr(auth, "now", lambda: later)
    answer = api.call("GET", f"{A}/auth/me", token=token)
    assert answer.status == 401
    assert answer.error_code == "token_expired"


def test_http_basic_works_beside_bearer(api: Api, tenants: tuple[Tenant, Tenant]):
    a, _ = tenants
    answer = api.call("GET", f"{A}/workspaces/{a.workspace_id}", basic=("admin-a", "admin-a-password"))
    assert answer.status == 200
    wrong = api.call("GET", f"{A}/workspaces/{a.workspace_id}", basic=("admin-a", "not-the-password"))
    assert wrong.status == 401
    colonless = api.call(
        "GET", f"{A}/auth/me", headers={"Authorization": "Basic " + base64.b64encode(b"x").decode()}
    )
    assert colonless.status == 401


def test_machine_api_tokens_are_shown_once_listed_without_secret_and_revocable(api: Api, tenants):
    a, _ = tenants
    made = api.call("POST", f"{A}/auth/tokens", {"name": "ci-bot"}, token=a.member_token)
    assert made.status == 201
    assert made.body["expires_at"] is None
    machine = made.body["token"]
    assert api.call("GET", f"{A}/auth/me", token=machine).body["username"] == "member-a"
    listed = api.call("GET", f"{A}/auth/tokens", token=machine).body["items"]
    assert [t["name"] for t in listed] == ["ci-bot"]
    assert machine not in str(listed)
    # another user cannot revoke it
    assert api.call("DELETE", f"{A}/auth/tokens/{made.body['id']}", token=a.admin_token).status == 404
    assert api.call("DELETE", f"{A}/auth/tokens/{made.body['id']}", token=machine).status == 204
    assert api.call("GET", f"{A}/auth/me", token=machine).status == 401


# ---- contracts and members -------------------------------------------------------------------


def test_only_the_platform_admin_creates_contracts(api: Api, tenants):
    a, _ = tenants
    assert api.call("POST", f"{A}/contracts", {"name": "mine"}, token=a.admin_token).status == 403


def test_contract_names_are_unique(api: Api, root_token: str, tenants):
    again = api.call("POST", f"{A}/contracts", {"name": "CONTRACT-A"}, token=root_token)
    assert again.status == 409
    assert "already exists" in again.body["error"]["message"]


def test_contract_listing(api: Api, root_token: str, tenants):
    a, _ = tenants
    everything = api.call("GET", f"{A}/contracts", token=root_token).body["items"]
    assert [c["name"] for c in everything] == ["contract-a", "contract-b"]
    own = api.call("GET", f"{A}/contracts", token=a.member_token).body["items"]
    assert [c["id"] for c in own] == [a.contract_id]


def test_member_creation_rules(api: Api, tenants):
    a, _ = tenants
    path = f"{A}/contracts/{a.contract_id}/members"
    body = {"username": "carol", "password": "carol-password-1", "role": "member"}
    assert api.call("POST", path, body, token=a.member_token).status == 403
    made = api.call("POST", path, {**body, "privileges": ["WORKFLOW_OVERRIDE"]}, token=a.admin_token)
    assert made.status == 201
    assert made.body["privileges"] == ["WORKFLOW_OVERRIDE"]
    assert "password" not in str(made.body).lower()
    assert api.call("POST", path, body, token=a.admin_token).status == 409  # username taken
    # an org admin may not create owners
    assert (
        api.call("POST", path, {**body, "username": "dave", "role": "owner"}, token=a.admin_token).status
        == 403
    )
    # mass assignment is refused
    sneaky = api.call("POST", path, {**body, "username": "eve", "contract_id": "other"}, token=a.admin_token)
    assert sneaky.status == 400
    assert "contract_id: unknown field" in sneaky.body["error"]["message"]


def test_role_changes_and_own_password(api: Api, tenants):
    a, _ = tenants
    path = f"{A}/contracts/{a.contract_id}/members/{a.member_id}"
    assert api.call("PATCH", path, {"role": "org_admin"}, token=a.member_token).status == 403
    promoted = api.call("PATCH", path, {"privileges": ["WORKFLOW_OVERRIDE"]}, token=a.admin_token)
    assert promoted.status == 200
    assert promoted.body["version"] == 2
    changed = api.call("PATCH", path, {"password": "a-brand-new-password"}, token=a.member_token)
    assert changed.status == 200
    assert (
        api.call("POST", f"{A}/auth/login", {"username": "member-a", "password": "member-a-password"}).status
        == 401
    )
    assert api.login("member-a", "a-brand-new-password")
    # a plain member cannot change someone else's password
    other = f"{A}/contracts/{a.contract_id}/members/{a.admin_id}"
    assert api.call("PATCH", other, {"password": "taking-over-now"}, token=a.member_token).status == 403


# ---- workspaces ------------------------------------------------------------------------------


def test_any_member_creates_a_workspace_and_owns_it(api: Api, tenants):
    a, _ = tenants
    made = api.call(
        "POST", f"{A}/contracts/{a.contract_id}/workspaces", {"name": "sandbox"}, token=a.member_token
    )
    assert made.status == 201
    assert made.headers["Location"] == f"{A}/workspaces/{made.body['id']}"
    assert made.body["kind"] == "limited"
    assert made.body["owner_id"] == a.member_id
    access = api.call("GET", f"{A}/workspaces/{made.body['id']}/access", token=a.member_token).body["items"]
    assert [(g["user_id"], g["role"]) for g in access] == [(a.member_id, "workspace_owner")]


def test_workspace_names_are_unique_per_contract_only(api: Api, tenants):
    a, b = tenants
    dup = api.call("POST", f"{A}/contracts/{a.contract_id}/workspaces", {"name": "WS-A"}, token=a.admin_token)
    assert dup.status == 409
    elsewhere = api.call(
        "POST", f"{A}/contracts/{b.contract_id}/workspaces", {"name": "ws-a"}, token=b.admin_token
    )
    assert elsewhere.status == 201


def test_only_the_platform_admin_sets_the_kind(api: Api, root_token: str, tenants):
    a, _ = tenants
    path = f"{A}/workspaces/{a.workspace_id}"
    for token in (a.member_token, a.admin_token):
        answer = api.call("PATCH", path, {"kind": "full"}, token=token)
        assert answer.status == 403
    assert api.call("GET", path, token=a.admin_token).body["kind"] == "limited"
    full = api.call(
        "POST",
        f"{A}/contracts/{a.contract_id}/workspaces",
        {"name": "prod", "kind": "full"},
        token=a.admin_token,
    )
    assert full.status == 403
    changed = api.call("PATCH", path, {"kind": "full"}, token=root_token)
    assert changed.status == 200
    assert changed.body["kind"] == "full"


def test_members_need_access_to_a_workspace(api: Api, tenants):
    a, _ = tenants
    path = f"{A}/workspaces/{a.workspace_id}"
    assert api.call("GET", path, token=a.member_token).status == 403
    listed = api.call("GET", f"{A}/contracts/{a.contract_id}/workspaces", token=a.member_token).body["items"]
    assert listed == []
    granted = api.call("PUT", f"{path}/access/{a.member_id}", {"role": "member"}, token=a.admin_token)
    assert granted.status == 200
    assert api.call("GET", path, token=a.member_token).status == 200
    listed = api.call("GET", f"{A}/contracts/{a.contract_id}/workspaces", token=a.member_token).body["items"]
    assert [w["id"] for w in listed] == [a.workspace_id]
    # a member (not owner) of the workspace cannot rename it or manage access
    assert api.call("PATCH", path, {"name": "mine-now"}, token=a.member_token).status == 403
    assert api.call("PUT", f"{path}/access/{a.admin_id}", {}, token=a.member_token).status == 403
    assert api.call("DELETE", f"{path}/access/{a.member_id}", token=a.admin_token).status == 204
    assert api.call("GET", path, token=a.member_token).status == 403


def test_optimistic_concurrency_on_workspaces(api: Api, tenants):
    a, _ = tenants
    path = f"{A}/workspaces/{a.workspace_id}"
    renamed = api.call("PATCH", path, {"name": "renamed"}, token=a.admin_token, headers={"If-Match": '"1"'})
    assert renamed.status == 200
    assert renamed.body["version"] == 2
    stale = api.call("PATCH", path, {"name": "again"}, token=a.admin_token, headers={"If-Match": "1"})
    assert stale.status == 412
    assert (
        api.call("PATCH", path, {"name": "x"}, token=a.admin_token, headers={"If-Match": "v1"}).status == 400
    )
    # the old name is free again, the new one is taken
    free = api.call(
        "POST", f"{A}/contracts/{a.contract_id}/workspaces", {"name": "ws-a"}, token=a.admin_token
    )
    assert free.status == 201
    taken = api.call("PATCH", f"{A}/workspaces/{free.body['id']}", {"name": "RENAMED"}, token=a.admin_token)
    assert taken.status == 409


def test_pagination_by_cursor(api: Api, tenants):
    a, _ = tenants
    for name in ("w1", "w2", "w3"):
        api.call("POST", f"{A}/contracts/{a.contract_id}/workspaces", {"name": name}, token=a.admin_token)
    path = f"{A}/contracts/{a.contract_id}/workspaces"
    first = api.call("GET", path, token=a.admin_token, query={"limit": "2"}).body
    assert len(first["items"]) == 2
    second = api.call("GET", path, token=a.admin_token, query={"limit": "2", "cursor": first["next"]}).body
    names = [w["name"] for w in first["items"] + second["items"]]
    assert names == ["w1", "w2", "w3", "ws-a"]
    assert api.call("GET", path, token=a.admin_token, query={"cursor": "garbage"}).status == 400
    assert api.call("GET", path, token=a.admin_token, query={"limit": "0"}).status == 400


# ---- tenancy: every route, from the other contract, is 404 -----------------------------------


def _routes(t: Tenant) -> list[tuple[str, str, dict | None]]:
    ws, cid = t.workspace_id, t.contract_id
    return [
        ("GET", f"{A}/contracts/{cid}", None),
        ("PATCH", f"{A}/contracts/{cid}", {"name": "hijacked"}),
        ("POST", f"{A}/contracts/{cid}/members", {"username": "intruder", "password": "intruder-password"}),
        ("GET", f"{A}/contracts/{cid}/members", None),
        ("GET", f"{A}/contracts/{cid}/members/{t.member_id}", None),
        ("PATCH", f"{A}/contracts/{cid}/members/{t.member_id}", {"password": "intruder-password"}),
        ("PATCH", f"{A}/contracts/{cid}/members/{t.member_id}", {"role": "member"}),
        ("POST", f"{A}/contracts/{cid}/workspaces", {"name": "planted"}),
        ("GET", f"{A}/contracts/{cid}/workspaces", None),
        ("GET", f"{A}/workspaces/{ws}", None),
        ("PATCH", f"{A}/workspaces/{ws}", {"name": "hijacked"}),
        ("PATCH", f"{A}/workspaces/{ws}", {"kind": "full"}),
        ("GET", f"{A}/workspaces/{ws}/access", None),
        ("PUT", f"{A}/workspaces/{ws}/access/{t.member_id}", {"role": "workspace_owner"}),
        ("DELETE", f"{A}/workspaces/{ws}/access/{t.admin_id}", None),
    ]


def test_another_contract_sees_nothing(api: Api, tenants):
    a, b = tenants
    for method, path, body in _routes(a):
        for token in (b.admin_token, b.member_token):
            answer = api.call(method, path, body, token=token)
            assert answer.status == 404, (method, path, answer.body)
    # and nothing changed
    assert api.call("GET", f"{A}/workspaces/{a.workspace_id}", token=a.admin_token).body["name"] == "ws-a"
    assert api.call("GET", f"{A}/contracts/{a.contract_id}", token=a.admin_token).body["name"] == "contract-a"


def test_granting_access_to_a_foreign_user_is_refused(api: Api, tenants):
    a, b = tenants
    answer = api.call("PUT", f"{A}/workspaces/{a.workspace_id}/access/{b.member_id}", {}, token=a.admin_token)
    assert answer.status == 404


# ---- body guards -----------------------------------------------------------------------------


def test_oversized_bodies_are_413(api: Api, root_token: str):
    answer = api.call(
        "POST",
        f"{A}/contracts",
        raw='{"name": "' + "x" * 70_000 + '"}',
        token=root_token,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status == 413
    assert answer.error_code == "payload_too_large"


def test_non_json_bodies_are_415(api: Api, root_token: str):
    answer = api.call(
        "POST",
        f"{A}/contracts",
        raw="name=x",
        token=root_token,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status == 415


# ---- secrets never leak ----------------------------------------------------------------------


def test_passwords_and_tokens_never_reach_logs_or_answers(
    api: Api, tenants, caplog: pytest.LogCaptureFixture
):
    a, _ = tenants
    made = api.call(
        "POST",
        f"{A}/contracts/{a.contract_id}/members",
        {"username": "frank", "password": "frank-secret-pass"},
        token=a.admin_token,
    )
    api.call("POST", f"{A}/auth/login", {"username": "frank", "password": "frank-wrong-guess"})
    api.call("POST", f"{A}/auth/login", {"username": "frank", "password": "short"})
    token = api.login("frank", "frank-secret-pass")
    api.call("GET", f"{A}/auth/me", token=token + "tampered")
    listed = api.call("GET", f"{A}/contracts/{a.contract_id}/members", token=a.admin_token)
    # the JSON lines exactly as the function writes them to CloudWatch
    logs = "\n".join(logger.registered_formatter.format(record) for record in caplog.records)
    everything = logs + str(made.body) + str(listed.body)
    assert "correlation_id" in logs  # the logger did run
    for secret in ("frank-secret-pass", "frank-wrong-guess", token, "argon2"):
        assert secret not in everything


def test_an_org_admin_cannot_take_over_an_owner(api: Api, root_token: str, tenants):
    a, _ = tenants
    owner = api.call(
        "POST",
        f"{A}/contracts/{a.contract_id}/members",
        {"username": "the-owner", "password": "owner-password-1", "role": "owner"},
        token=root_token,
    )
    path = f"{A}/contracts/{a.contract_id}/members/{owner.body['id']}"
    for change in (
        {"password": "pwned-by-org-admin"},
        {"role": "member"},
        {"privileges": ["WORKFLOW_OVERRIDE"]},
    ):
        assert api.call("PATCH", path, change, token=a.admin_token).status == 403, change
    assert api.login("the-owner", "owner-password-1")
    # the owner still changes their own password
    own = api.login("the-owner", "owner-password-1")
    assert api.call("PATCH", path, {"password": "owner-password-2"}, token=own).status == 200
