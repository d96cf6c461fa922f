"""HTTP Basic through the identity function against moto: a repeated header makes no AWS call inside the
TTL, and a member's changes made through this container's identity service take effect at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.client import BaseClient

from tests.handler.conftest import Api, Tenant

A = "/api/latest"


@pytest.fixture
def aws_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the AWS operations made from now on, in order."""
    calls: list[str] = []
    real: Callable[..., Any] = BaseClient._make_api_call  # type: ignore[attr-defined]  # private: every client calls it

    def counting(self: BaseClient, operation: str, params: Any) -> Any:
        calls.append(operation)
        return real(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counting)
    return calls


def test_a_repeated_basic_header_makes_no_aws_call(
    api: Api, tenants: tuple[Tenant, Tenant], aws_calls: list[str]
):
    # Given a member who called once with HTTP Basic
    basic = ("member-a", "member-a-password")
    assert api.call("GET", f"{A}/auth/me", basic=basic).status == 200
    # the username with the account's and the source's throttle counters (one read), then the member
    assert aws_calls == ["BatchGetItem", "GetItem"]
    # When the same credentials come again
    aws_calls.clear()
    again = api.call("GET", f"{A}/auth/me", basic=basic)
    # Then the caller is known without a single AWS call
    assert again.status == 200
    assert again.body["username"] == "member-a"
    assert aws_calls == []


def test_a_password_change_refuses_the_old_basic_credentials_at_once(
    api: Api, tenants: tuple[Tenant, Tenant]
):
    # Given a member whose Basic credentials are cached
    a, _ = tenants
    old = ("member-a", "member-a-password")
    assert api.call("GET", f"{A}/auth/me", basic=old).status == 200
    # When their admin changes the password
    path = f"{A}/contracts/{a.contract_id}/members/{a.member_id}"
    assert api.call("PATCH", path, {"password": "a-brand-new-password"}, token=a.admin_token).status == 200
    # Then the old credentials are refused on the very next call, and the new ones work
    refused = api.call("GET", f"{A}/auth/me", basic=old)
    assert refused.status == 401
    assert refused.error_code == "invalid_credentials"
    assert api.call("GET", f"{A}/auth/me", basic=("member-a", "a-brand-new-password")).status == 200


def test_a_role_change_shows_on_the_next_basic_call(api: Api, tenants: tuple[Tenant, Tenant]):
    a, _ = tenants
    basic = ("member-a", "member-a-password")
    assert api.call("GET", f"{A}/auth/me", basic=basic).body["role"] == "member"
    path = f"{A}/contracts/{a.contract_id}/members/{a.member_id}"
    changed = api.call(
        "PATCH", path, {"role": "org_admin", "privileges": ["WORKFLOW_OVERRIDE"]}, token=a.admin_token
    )
    assert changed.status == 200
    me = api.call("GET", f"{A}/auth/me", basic=basic).body
    assert me["role"] == "org_admin"
    assert me["privileges"] == ["WORKFLOW_OVERRIDE"]


def test_wrong_basic_passwords_are_refused_every_time(
    api: Api, tenants: tuple[Tenant, Tenant], aws_calls: list[str]
):
    # Given a member whose right credentials are cached
    assert api.call("GET", f"{A}/auth/me", basic=("member-a", "member-a-password")).status == 200
    # When a wrong password is tried twice
    aws_calls.clear()
    for _ in range(2):
        assert api.call("GET", f"{A}/auth/me", basic=("member-a", "not-the-password")).status == 401
    # Then each attempt read the member again and was counted: a failure is never cached
    assert aws_calls == ["BatchGetItem", "GetItem", "UpdateItem", "UpdateItem"] * 2
