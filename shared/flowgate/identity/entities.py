"""Who calls and what they belong to: the identity types other contexts see (through
`flowgate.identity.ports`), kept apart from identity's request models so that importing them is cheap."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Role(StrEnum):
    """A member's role in their contract, strongest first."""

    OWNER = "owner"  # the contract's owner: everything, including other owners
    ORG_ADMIN = "org_admin"  # members, every workspace, sync configs
    WORKSPACE_OWNER = "workspace_owner"  # owner-level access to every workspace of the contract
    MEMBER = "member"  # the workspaces they created or were given access to


CONTRACT_ADMIN_ROLES = frozenset({Role.OWNER, Role.ORG_ADMIN})


class WorkspaceRole(StrEnum):
    """Access one member has to one workspace."""

    WORKSPACE_OWNER = "workspace_owner"  # full access, manages who else has access
    MEMBER = "member"  # works in the workspace


class Privilege(StrEnum):
    WORKFLOW_OVERRIDE = "WORKFLOW_OVERRIDE"  # decide (continue/cancel) held operation requests


class WorkspaceKind(StrEnum):
    LIMITED = "limited"
    FULL = "full"


class Principal(BaseModel):
    """Who is calling: the user behind a token or Basic credentials."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    username: str
    contract_id: str | None
    role: Role | None
    privileges: frozenset[Privilege] = frozenset()
    platform_admin: bool = False

    @property
    def is_contract_admin(self) -> bool:
        return self.platform_admin or self.role in CONTRACT_ADMIN_ROLES


# ---- resources as the API shows them ----------------------------------------------------------


class Contract(BaseModel):
    id: str
    name: str
    created_at: str
    version: int


class Member(BaseModel):
    id: str
    username: str
    contract_id: str | None
    role: Role | None
    privileges: list[Privilege]
    platform_admin: bool = False
    created_at: str
    version: int


class Workspace(BaseModel):
    id: str
    contract_id: str
    name: str
    kind: WorkspaceKind
    owner_id: str
    created_at: str
    version: int
