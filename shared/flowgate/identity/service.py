"""Use cases of the identity context, each one authorized here (not in the handler).

Tenancy rule for every resource: a caller outside the resource's contract gets NotFound (404), as if
it did not exist; a caller inside the contract without the needed role gets Forbidden (403).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from flowgate import passwords
from flowgate.clock import iso, now
from flowgate.db import Item, Page, StaleVersion, Write
from flowgate.errors import BadRequest, Conflict, Forbidden, NotFound, PreconditionFailed
from flowgate.identity.models import (
    CONTRACT_ADMIN_ROLES,
    Contract,
    CreateContractRequest,
    CreateMemberRequest,
    CreateWorkspaceRequest,
    GrantAccessRequest,
    Member,
    Principal,
    Role,
    UpdateContractRequest,
    UpdateMemberRequest,
    UpdateWorkspaceRequest,
    Workspace,
    WorkspaceAccess,
    WorkspaceKind,
    WorkspaceRole,
)
from flowgate.identity.store import (
    IdentityStore,
    access_from,
    contract_from,
    member_from,
    workspace_from,
)

T = TypeVar("T")

# Optimistic updates without If-Match re-read and retry this often before answering 409.
UPDATE_ATTEMPTS = 3


def _new_id() -> str:
    return str(uuid.uuid4())


def _check_version(item: Item, if_match: int | None) -> None:
    if if_match is not None and item["version"] != if_match:
        raise PreconditionFailed(f"version is {item['version']}, not {if_match}; reload and retry")


KindChanged = Callable[[str, str], None]


class IdentityService:
    def __init__(self, store: IdentityStore, on_kind_changed: KindChanged | None = None) -> None:
        self.store = store
        # Told (workspace id, new kind) after a kind change: limited -> full clears pending flow stops.
        self.on_kind_changed = on_kind_changed

    # ---- platform admin ----------------------------------------------------------------------
    def ensure_platform_admin(self, username: str, password: str) -> bool:
        """Create the platform admin once; True when created, False when it already existed."""
        if self.store.find_user_id(username):
            return False
        item = {
            "id": _new_id(),
            "username": username,
            "password_hash": passwords.hash_password(password),
            "platform_admin": True,
            "privileges": [],
            "created_at": iso(now()),
            "version": 1,
        }
        try:
            self.store.create_user(item)
        except Conflict:
            return False  # created concurrently by another container
        return True

    # ---- contracts ---------------------------------------------------------------------------
    def _contract_item(self, principal: Principal, cid: str) -> Item:
        item = self.store.get_contract(cid)
        if item is None or not (principal.platform_admin or principal.contract_id == cid):
            raise NotFound("contract not found")
        return item

    def _require_contract_admin(self, principal: Principal, cid: str) -> Item:
        item = self._contract_item(principal, cid)
        if not principal.is_contract_admin:
            raise Forbidden("only the contract's owner or an org admin may do this")
        return item

    def create_contract(self, principal: Principal, request: CreateContractRequest) -> Contract:
        if not principal.platform_admin:
            raise Forbidden("only the platform admin creates contracts")
        item = {"id": _new_id(), "name": request.name, "created_at": iso(now()), "version": 1}
        self.store.create_contract(item)
        return contract_from(item)

    def get_contract(self, principal: Principal, cid: str) -> Contract:
        return contract_from(self._contract_item(principal, cid))

    def list_contracts(
        self, principal: Principal, limit: int, cursor: str | None
    ) -> tuple[list[Contract], str | None]:
        if principal.platform_admin:
            page = self.store.list_contracts(limit, cursor)
            return [contract_from(i) for i in page.items], page.next
        own = self.store.get_contract(principal.contract_id) if principal.contract_id else None
        return ([contract_from(own)] if own else []), None

    def update_contract(
        self, principal: Principal, cid: str, request: UpdateContractRequest, if_match: int | None
    ) -> Contract:
        if not principal.platform_admin and principal.role != Role.OWNER:
            self._contract_item(principal, cid)  # 404 outside the tenant before 403 inside it
            raise Forbidden("only the contract's owner or the platform admin renames a contract")

        def attempt() -> Item:
            item = self._contract_item(principal, cid)
            _check_version(item, if_match)
            if request.name is not None and request.name != item["name"]:
                self.store.rename_contract(item, request.name)
                item = {**item, "name": request.name, "version": item["version"] + 1}
            return item

        return contract_from(self._retrying(attempt, if_match))

    # ---- members -----------------------------------------------------------------------------
    def _member_item(self, principal: Principal, cid: str, uid: str) -> Item:
        self._contract_item(principal, cid)
        item = self.store.get_user(uid)
        if item is None or item.get("contract_id") != cid:
            raise NotFound("member not found")
        return item

    @staticmethod
    def _may_assign(principal: Principal, role: Role) -> None:
        if role == Role.OWNER and not (principal.platform_admin or principal.role == Role.OWNER):
            raise Forbidden("only an owner or the platform admin makes someone an owner")

    def create_member(self, principal: Principal, cid: str, request: CreateMemberRequest) -> Member:
        self._require_contract_admin(principal, cid)
        self._may_assign(principal, request.role)
        item = {
            "id": _new_id(),
            "username": request.username,
            "contract_id": cid,
            "role": request.role.value,
            "privileges": [p.value for p in request.privileges],
            "password_hash": passwords.hash_password(request.password),
            "created_at": iso(now()),
            "version": 1,
        }
        self.store.create_user(item)
        return member_from(item)

    def get_member(self, principal: Principal, cid: str, uid: str) -> Member:
        item = self._member_item(principal, cid, uid)
        if uid != principal.user_id and not principal.is_contract_admin:
            raise Forbidden("only contract admins read other members")
        return member_from(item)

    def list_members(
        self, principal: Principal, cid: str, limit: int, cursor: str | None
    ) -> tuple[list[Member], str | None]:
        self._require_contract_admin(principal, cid)
        page = self.store.list_members(cid, limit, cursor)
        return [member_from(i) for i in page.items], page.next

    def update_member(
        self, principal: Principal, cid: str, uid: str, request: UpdateMemberRequest, if_match: int | None
    ) -> Member:
        changes_role = request.role is not None or request.privileges is not None
        if changes_role:
            self._require_contract_admin(principal, cid)
            if request.role is not None:
                self._may_assign(principal, request.role)
        elif uid != principal.user_id:
            self._require_contract_admin(principal, cid)

        def attempt() -> Item:
            item = self._member_item(principal, cid, uid)
            _check_version(item, if_match)
            if item.get("role") == Role.OWNER and uid != principal.user_id:
                self._may_assign(principal, Role.OWNER)  # only owners change owners (role or password)
            changes: dict[str, Any] = {}
            if request.role is not None:
                changes["role"] = request.role.value
            if request.privileges is not None:
                changes["privileges"] = [p.value for p in request.privileges]
            if request.password is not None:
                changes["password_hash"] = passwords.hash_password(request.password)
            if changes:
                self.store.update_user(item, changes)
                item = {**item, **changes, "version": item["version"] + 1}
            return item

        return member_from(self._retrying(attempt, if_match))

    # ---- workspaces --------------------------------------------------------------------------
    def _workspace_access(self, principal: Principal, wsid: str) -> tuple[Item, WorkspaceRole]:
        """The workspace and the caller's access to it: 404 outside its contract, 403 without access."""
        item = self.store.get_workspace(wsid)
        if item is None or not (principal.platform_admin or principal.contract_id == item["contract_id"]):
            raise NotFound("workspace not found")
        if principal.platform_admin or principal.role in CONTRACT_ADMIN_ROLES | {Role.WORKSPACE_OWNER}:
            return item, WorkspaceRole.WORKSPACE_OWNER
        grant = self.store.get_grant(wsid, principal.user_id)
        if grant is None:
            raise Forbidden("you have no access to this workspace; ask its owner")
        return item, WorkspaceRole(grant["role"])

    def authorize_workspace(self, principal: Principal, wsid: str, *, manage: bool = False) -> Workspace:
        """For other contexts: the workspace when the caller may work in it (or manage it)."""
        item, role = self._workspace_access(principal, wsid)
        if manage and role != WorkspaceRole.WORKSPACE_OWNER:
            raise Forbidden("only the workspace's owner may do this")
        return workspace_from(item)

    # ---- lookups for other contexts (identity.ports.Directory) --------------------------------
    def find_contract(self, cid: str) -> Contract | None:
        item = self.store.get_contract(cid)
        return contract_from(item) if item else None

    def find_member(self, uid: str) -> Member | None:
        item = self.store.get_user(uid)
        return member_from(item) if item else None

    def workspace_kind(self, wsid: str) -> WorkspaceKind | None:
        item = self.store.get_workspace(wsid)
        return WorkspaceKind(item["kind"]) if item and item.get("kind") else None

    def workspace_name(self, wsid: str) -> str | None:
        item = self.store.get_workspace(wsid)
        return str(item["name"]) if item and item.get("name") else None

    def workspace_exists(self, wsid: str) -> Write:
        return self.store.workspace_exists(wsid)

    def contract_exists(self, cid: str) -> Write:
        return self.store.contract_exists(cid)

    def create_workspace(self, principal: Principal, cid: str, request: CreateWorkspaceRequest) -> Workspace:
        self._contract_item(principal, cid)
        owner = principal.user_id
        if request.kind == WorkspaceKind.FULL and not principal.platform_admin:
            raise Forbidden("new workspaces are limited; only the platform admin creates full ones")
        created = iso(now())
        item = {
            "id": _new_id(),
            "contract_id": cid,
            "name": request.name,
            "kind": request.kind.value,
            "owner_id": owner,
            "created_at": created,
            "version": 1,
        }
        grant = {
            "workspace_id": item["id"],
            "user_id": owner,
            "role": WorkspaceRole.WORKSPACE_OWNER.value,
            "granted_by": principal.user_id,
            "granted_at": created,
        }
        self.store.create_workspace(item, grant)
        return workspace_from(item)

    def get_workspace(self, principal: Principal, wsid: str) -> Workspace:
        return workspace_from(self._workspace_access(principal, wsid)[0])

    def list_workspaces(
        self, principal: Principal, cid: str, limit: int, cursor: str | None
    ) -> tuple[list[Workspace], str | None]:
        self._contract_item(principal, cid)
        if principal.platform_admin or principal.role in CONTRACT_ADMIN_ROLES | {Role.WORKSPACE_OWNER}:
            page = self.store.list_contract_workspaces(cid, limit, cursor)
            return [workspace_from(i) for i in page.items], page.next
        grants = self.store.list_user_grants(principal.user_id, limit, cursor)
        items = self.store.get_workspaces([g["workspace_id"] for g in grants.items])
        return sorted((workspace_from(i) for i in items), key=lambda w: w.name.lower()), grants.next

    def update_workspace(
        self, principal: Principal, wsid: str, request: UpdateWorkspaceRequest, if_match: int | None
    ) -> Workspace:
        if request.name is None and request.kind is None:
            raise BadRequest("nothing to change: give name or kind")

        def attempt() -> Item:
            item, role = self._workspace_access(principal, wsid)
            if (
                request.kind is not None
                and request.kind.value != item["kind"]
                and not principal.platform_admin
            ):
                raise Forbidden("only the platform admin changes a workspace's kind")
            if request.name is not None and role != WorkspaceRole.WORKSPACE_OWNER:
                raise Forbidden("only the workspace's owner renames it")
            _check_version(item, if_match)
            changes: dict[str, Any] = {}
            if request.name is not None and request.name != item["name"]:
                changes["name"] = request.name
            if request.kind is not None and request.kind.value != item["kind"]:
                changes["kind"] = request.kind.value
            if changes:
                self.store.update_workspace(item, changes)
                item = {**item, **changes, "version": item["version"] + 1}
            return item

        updated = self._retrying(attempt, if_match)
        if request.kind is not None and self.on_kind_changed is not None:
            self.on_kind_changed(wsid, updated["kind"])  # idempotent, so a no-op change may repeat it
        return workspace_from(updated)

    # ---- workspace access --------------------------------------------------------------------
    def list_access(
        self, principal: Principal, wsid: str, limit: int, cursor: str | None
    ) -> tuple[list[WorkspaceAccess], str | None]:
        self._workspace_access(principal, wsid)
        page: Page = self.store.list_grants(wsid, limit, cursor)
        return [access_from(i) for i in page.items], page.next

    def grant_access(
        self, principal: Principal, wsid: str, uid: str, request: GrantAccessRequest
    ) -> WorkspaceAccess:
        ws = self.authorize_workspace(principal, wsid, manage=True)
        user = self.store.get_user(uid)
        if user is None or user.get("contract_id") != ws.contract_id:
            raise NotFound("member not found in this workspace's contract")
        grant = {
            "workspace_id": wsid,
            "user_id": uid,
            "role": request.role.value,
            "granted_by": principal.user_id,
            "granted_at": iso(now()),
        }
        self.store.put_grant(grant)
        return WorkspaceAccess.model_validate(grant)

    def revoke_access(self, principal: Principal, wsid: str, uid: str) -> None:
        ws = self.authorize_workspace(principal, wsid, manage=True)
        if uid == ws.owner_id:
            raise Conflict("the workspace's owner keeps access; transfer ownership first")
        if self.store.get_grant(wsid, uid) is None:
            raise NotFound("no access to revoke")
        self.store.delete_grant(wsid, uid)

    # ---- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _retrying(attempt: Callable[[], T], if_match: int | None) -> T:
        """Run a read-modify-write; with If-Match the caller chose the version, so never retry."""
        for remaining in range(UPDATE_ATTEMPTS - 1, -1, -1):
            try:
                return attempt()
            except StaleVersion:
                if if_match is not None or remaining == 0:
                    raise
        raise AssertionError("unreachable")
