"""What other contexts may use of identity: the caller's identity and the workspace authorizer.

Contexts import identity only through this module; the composition root (flowgate.wiring) hands them
the identity service, which implements these protocols.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from flowgate.identity.entities import Contract, Member, Principal, Privilege, Role, Workspace, WorkspaceKind

if TYPE_CHECKING:
    from flowgate.db import Write

__all__ = [
    "Contract",
    "Directory",
    "Member",
    "Principal",
    "Privilege",
    "Role",
    "Workspace",
    "WorkspaceAuthorizer",
    "WorkspaceKind",
]


class WorkspaceAuthorizer(Protocol):
    """404 outside the workspace's contract, 403 without access (or without owning it, `manage`)."""

    def authorize_workspace(self, principal: Principal, wsid: str, *, manage: bool = False) -> Workspace: ...


class Directory(Protocol):
    """Lookups for contexts that have already decided who may act (no authorization here)."""

    def find_contract(self, cid: str) -> Contract | None: ...

    def find_member(self, uid: str) -> Member | None: ...

    def workspace_kind(self, wsid: str) -> WorkspaceKind | None: ...

    def workspace_name(self, wsid: str) -> str | None: ...

    def workspace_exists(self, wsid: str) -> Write:
        """A transaction condition that holds while the workspace exists."""
        ...

    def contract_exists(self, cid: str) -> Write:
        """A transaction condition that holds while the contract exists."""
        ...
