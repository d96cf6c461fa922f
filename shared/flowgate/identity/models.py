"""Identity and tenancy: the domain model (seed 001, DESIGN §1) and the request models of its API.

Request models forbid unknown fields: ids, owner, contract and kind are never taken from a body that
does not name them as inputs (no mass assignment).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from flowgate.documents import DisplayName
from flowgate.identity.entities import (
    CONTRACT_ADMIN_ROLES,
    Contract,
    Member,
    Principal,
    Privilege,
    Role,
    Workspace,
    WorkspaceKind,
    WorkspaceRole,
)

__all__ = [
    "CONTRACT_ADMIN_ROLES",
    "Contract",
    "Member",
    "Principal",
    "Privilege",
    "Role",
    "Workspace",
    "WorkspaceKind",
    "WorkspaceRole",
]

# Contract, workspace and token names: text without control, formatting or line-break characters.
Name = DisplayName
Username = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9._@-]{3,64}$")]
# Long enough to resist guessing, short enough that hashing cannot be used to burn CPU.
Password = Annotated[str, StringConstraints(min_length=12, max_length=256)]

STRICT = ConfigDict(extra="forbid", str_strip_whitespace=False)


class WorkspaceAccess(BaseModel):
    workspace_id: str
    user_id: str
    role: WorkspaceRole
    granted_by: str
    granted_at: str


class ApiToken(BaseModel):
    id: str
    name: str
    kind: str
    created_at: str
    expires_at: str | None


class LoginResponse(BaseModel):
    token: str = Field(repr=False)
    expires_at: str | None


class IssuedToken(BaseModel):
    """Returned once when a token is created; the platform stores only its hash."""

    token: str = Field(repr=False)
    expires_at: str | None
    id: str | None = None
    name: str | None = None


# ---- request bodies ---------------------------------------------------------------------------


class LoginRequest(BaseModel):
    model_config = STRICT
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(repr=False)


class CreateApiTokenRequest(BaseModel):
    model_config = STRICT
    name: Name
    # None: a machine token that lives until it is revoked.
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class CreateContractRequest(BaseModel):
    model_config = STRICT
    name: Name


class UpdateContractRequest(BaseModel):
    model_config = STRICT
    name: Name | None = None


class CreateMemberRequest(BaseModel):
    model_config = STRICT
    username: Username
    password: Password = Field(repr=False)
    role: Role = Role.MEMBER
    privileges: list[Privilege] = Field(default_factory=list)

    @field_validator("privileges")
    @classmethod
    def _unique(cls, value: list[Privilege]) -> list[Privilege]:
        return sorted(set(value))


class UpdateMemberRequest(BaseModel):
    model_config = STRICT
    role: Role | None = None
    privileges: list[Privilege] | None = None
    password: Password | None = Field(default=None, repr=False)

    @field_validator("privileges")
    @classmethod
    def _unique(cls, value: list[Privilege] | None) -> list[Privilege] | None:
        return None if value is None else sorted(set(value))


class CreateWorkspaceRequest(BaseModel):
    model_config = STRICT
    name: Name
    # Seed 001: new workspaces are limited unless said otherwise.
    kind: WorkspaceKind = WorkspaceKind.LIMITED


class UpdateWorkspaceRequest(BaseModel):
    model_config = STRICT
    name: Name | None = None
    kind: WorkspaceKind | None = None


class GrantAccessRequest(BaseModel):
    model_config = STRICT
    role: WorkspaceRole = WorkspaceRole.MEMBER
