import pytest
from pydantic import ValidationError

from flowgate.identity.models import (
    CreateMemberRequest,
    CreateWorkspaceRequest,
    Principal,
    Privilege,
    Role,
    UpdateWorkspaceRequest,
    WorkspaceKind,
)


def test_new_workspaces_are_limited_by_default():
    assert CreateWorkspaceRequest(name="staging").kind == WorkspaceKind.LIMITED


@pytest.mark.parametrize("field", ["id", "owner_id", "contract_id", "created_at", "version"])
def test_workspace_bodies_refuse_server_owned_fields(field):
    with pytest.raises(ValidationError) as err:
        CreateWorkspaceRequest.model_validate({"name": "ws", field: "x"})
    assert err.value.errors()[0]["type"] == "extra_forbidden"
    with pytest.raises(ValidationError):
        UpdateWorkspaceRequest.model_validate({field: "x"})


@pytest.mark.parametrize(
    "body",
    [
        {"username": "ab", "password": "long-enough-password"},  # username too short
        {"username": "has space", "password": "long-enough-password"},
        {"username": "alice", "password": "short"},
        {"username": "alice", "password": "long-enough-password", "role": "root"},
        {"username": "alice", "password": "long-enough-password", "privileges": ["SUDO"]},
        {"username": "alice", "password": "long-enough-password", "contract_id": "c1"},
    ],
)
def test_member_bodies_are_validated(body):
    with pytest.raises(ValidationError):
        CreateMemberRequest.model_validate(body)


def test_member_privileges_are_deduplicated():
    req = CreateMemberRequest(
        username="alice",
        password="long-enough-password",
        privileges=[Privilege.WORKFLOW_OVERRIDE, Privilege.WORKFLOW_OVERRIDE],
    )
    assert req.privileges == [Privilege.WORKFLOW_OVERRIDE]


@pytest.mark.parametrize(
    ("role", "admin", "expected"),
    [
        (Role.OWNER, False, True),
        (Role.ORG_ADMIN, False, True),
        (Role.WORKSPACE_OWNER, False, False),
        (Role.MEMBER, False, False),
        (None, True, True),
    ],
)
def test_contract_admins(role, admin, expected):
    p = Principal(
        user_id="u", username="u", contract_id=None if admin else "c", role=role, platform_admin=admin
    )
    assert p.is_contract_admin is expected
