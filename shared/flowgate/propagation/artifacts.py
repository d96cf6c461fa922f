"""The three artifact kinds of the EFT-style API, each over its own storage, and their use cases: get,
list, create (POST), create-or-replace by id (PUT, seed 004), partial update (PATCH) and delete.

A kind turns its artifact into EFT's attributes and back. Flows and connectors stay in their own
contexts (so the same artifact is reachable by name through the native API); custom commands live here.
Every write goes through the same validation as the native API's (names, scripts, connector values,
run-time variables) and is audited.
"""

from __future__ import annotations

import builtins
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ValidationError

from flowgate.clock import iso, now
from flowgate.db import StaleVersion
from flowgate.errors import BadRequest, Conflict, Forbidden, NotFound
from flowgate.identity.ports import Principal, Role, Workspace
from flowgate.propagation.models import (
    ROOT_FOLDER,
    UUID_TEXT,
    AclAttributes,
    AclDocument,
    AweFolderAttributes,
    AweTaskAttributes,
    ConnectionProfileAttributes,
    CustomCommandAttributes,
    ResourceDocument,
    UserGroupAttributes,
)
from flowgate.propagation.ports import Connectors, Flows, Members, Sites, Variables
from flowgate.propagation.store import PropagationStore

Attributes = dict[str, Any]
AUDIT_DAYS = 90


def check_id(artifact_id: str, label: str) -> str:
    if not UUID_TEXT.match(artifact_id):
        raise BadRequest(f"the {label} id must be a UUID (8-4-4-4-12 hex digits)", code="invalid_id")
    return artifact_id.lower()


def attributes_error(exc: ValidationError, where: str = "data.attributes") -> BadRequest:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err.get("loc", ())) or "attributes"
        msg = (
            "unknown field: the artifact has no such attribute"
            if err["type"] == "extra_forbidden"
            else err["msg"]
        )
        parts.append(f"{where}.{field}: {msg}")
    return BadRequest("; ".join(parts), code="validation_error")


class Kind(ABC):
    """One artifact kind: EFT's `type`, the path segment, the label of its messages, its attributes."""

    type: ClassVar[str]
    path: ClassVar[str]
    label: ClassVar[str]
    model: ClassVar[builtins.type[BaseModel]]  # `type` is EFT's name for the kind, in this class

    @abstractmethod
    def find(self, wsid: str, artifact_id: str) -> Attributes | None: ...

    @abstractmethod
    def page(
        self, wsid: str, limit: int, cursor: str | None
    ) -> tuple[list[tuple[str, Attributes]], str | None]: ...

    aliases: ClassVar[tuple[str, ...]] = ()  # other `data.type` names a write may use
    propagates: ClassVar[bool] = True  # seed 004's three kinds; user groups and folders stay where they are

    @abstractmethod
    def save(
        self,
        wsid: str,
        artifact_id: str,
        attributes: Any,
        actor: Principal,
        relationships: dict[str, Any] | None = None,
    ) -> tuple[Attributes, bool]:
        """Create the artifact with this id, or replace it (a full representation of its attributes;
        relationships change only when the write names them, so a propagation keeps the target's)."""

    @abstractmethod
    def delete(self, wsid: str, artifact_id: str) -> None: ...

    def relationships(self, wsid: str, artifact_id: str) -> dict[str, Any]:
        """What the artifact refers to that is not propagated (seed 004's exceptions)."""
        return {}

    def comparable(self, attributes: Attributes) -> Attributes:
        """The attributes a propagation compares (read-only ones left out)."""
        return attributes


class NamedKind(Kind):
    """A kind kept in this context by id (custom commands, user groups, AWE folders)."""

    prefix: ClassVar[str]

    def __init__(self, store: PropagationStore) -> None:
        self.store = store

    def values(self, item: dict[str, Any]) -> Attributes:
        return {k: item[k] for k in self.model.model_fields if k in item}

    def find(self, wsid: str, artifact_id: str) -> Attributes | None:
        item = self.store.get_named(wsid, self.prefix, artifact_id)
        return self.values(item) if item else None

    def page(
        self, wsid: str, limit: int, cursor: str | None
    ) -> tuple[list[tuple[str, Attributes]], str | None]:
        page = self.store.list_named(wsid, self.prefix, limit, cursor)
        return [(i["id"], self.values(i)) for i in page.items], page.next

    def check(self, wsid: str, attributes: Any, actor: Principal) -> None:
        """The kind's own checks of a write (run-time variables, references)."""

    def kept(
        self, wsid: str, current: dict[str, Any] | None, relationships: dict[str, Any] | None
    ) -> dict[str, Any]:
        """What the item keeps beside its attributes (its relationships)."""
        return {}

    def save(
        self,
        wsid: str,
        artifact_id: str,
        attributes: Any,
        actor: Principal,
        relationships: dict[str, Any] | None = None,
    ) -> tuple[Attributes, bool]:
        self.check(wsid, attributes, actor)
        for _ in range(3):
            current = self.store.get_named(wsid, self.prefix, artifact_id)
            values = attributes.model_dump(mode="json")
            extra = self.kept(wsid, current, relationships)
            if (
                current is not None
                and self.values(current) == values
                and all(current.get(k) == v for k, v in extra.items())
            ):
                return values, False
            stamp = iso(now())
            item = {
                **values,
                **extra,
                "id": artifact_id,
                "workspace_id": wsid,
                "version": current["version"] + 1 if current else 1,
                "created_at": current["created_at"] if current else stamp,
                "updated_at": stamp,
                "updated_by": actor.user_id,
            }
            try:
                self.store.save_named(self.prefix, item, current, label=self.label)
            except StaleVersion:
                continue
            return values, current is None
        raise Conflict(f"the {self.label} kept changing while it was saved; retry")

    def delete(self, wsid: str, artifact_id: str) -> None:
        current = self.store.get_named(wsid, self.prefix, artifact_id)
        if current is None:
            raise NotFound(f"Not found: {self.label} ({artifact_id})")
        try:
            self.store.delete_named(self.prefix, current, label=self.label)
        except StaleVersion:
            raise Conflict(f"the {self.label} was changed by another request; retry") from None


def _related(relationships: dict[str, Any] | None, name: str, type_: str, *, many: bool) -> list[str] | None:
    """The ids a write's `relationships.<name>` names (None: not given), each of type `type_`."""
    if relationships is None or name not in relationships:
        return None
    data = relationships[name].get("data") if isinstance(relationships[name], dict) else None
    if many and not isinstance(data, list):
        raise BadRequest(f"relationships.{name}.data must be a list", code="validation_error")
    refs: list[Any] = data if isinstance(data, list) else [data]
    ids = []
    for ref in refs:
        if ref is None and not many:
            return []
        if not isinstance(ref, dict) or ref.get("type") != type_ or not isinstance(ref.get("id"), str):
            raise BadRequest(
                f'relationships.{name}.data holds {{"type": "{type_}", "id": ...}}', code="validation_error"
            )
        ids.append(check_id(ref["id"], type_))
    return ids


class UserGroups(NamedKind):
    """Named sets of the contract's members, which custom commands' execution permissions name."""

    type, path, label, model, prefix = (
        "userGroup",
        "user-groups",
        "user-group",
        UserGroupAttributes,
        "USERGROUP",
    )
    propagates = False

    def __init__(self, store: PropagationStore, members: Members) -> None:
        super().__init__(store)
        self.members = members

    def check(self, wsid: str, attributes: Any, actor: Principal) -> None:
        """Members are members of the site's contract (the actor administers it): by id."""
        for uid in attributes.members:
            member = self.members.find_member(uid)
            if member is None or member.contract_id != actor.contract_id:
                raise BadRequest(f"no member {uid} in this site's contract", code="unknown_member")


class AweFolders(NamedKind):
    type, path, label, model, prefix = (
        "aweFolder",
        "awe-tasks-folders",
        "awe-folder",
        AweFolderAttributes,
        "AWEFOLDER",
    )
    aliases = ("aweTaskFolder",)  # EFT's requests name folders so; its answers, aweFolder
    propagates = False


class CustomCommands(NamedKind):
    type, path, label, model, prefix = (
        "customCommand",
        "custom-commands",
        "custom-command",
        CustomCommandAttributes,
        "COMMAND",
    )

    def __init__(self, store: PropagationStore, variables: Variables | None) -> None:
        super().__init__(store)
        self.variables = variables

    def check(self, wsid: str, attributes: Any, actor: Principal) -> None:
        assert isinstance(attributes, CustomCommandAttributes)
        if self.variables is not None:
            self.variables.check(
                wsid, {"executable": attributes.executable, "logFileName": attributes.logFileName}
            )

    def kept(
        self, wsid: str, current: dict[str, Any] | None, relationships: dict[str, Any] | None
    ) -> dict[str, Any]:
        # Not propagated (seed 004): a write without executionPermissions (a propagation's) keeps them.
        data = (relationships or {}).get("executionPermissions")
        groups = None
        if data is not None:
            inner = data.get("data") if isinstance(data, dict) else None
            if not isinstance(inner, dict):
                raise BadRequest(
                    "relationships.executionPermissions.data holds users and userGroups",
                    code="validation_error",
                )
            groups = _related(
                {"userGroups": {"data": inner.get("userGroups", [])}}, "userGroups", "userGroup", many=True
            )
            if inner.get("users"):
                raise BadRequest("execution permissions name user groups, not users", code="validation_error")
        if groups is None:
            return {"user_groups": current.get("user_groups", []) if current else []}
        found = {i["id"] for i in self.store.get_many(wsid, "USERGROUP", groups)}
        missing = [g for g in groups if g not in found]
        if missing:
            raise BadRequest(f"no user group {missing[0]} in this site", code="unknown_user_group")
        return {"user_groups": list(dict.fromkeys(groups))}

    def relationships(self, wsid: str, artifact_id: str) -> dict[str, Any]:
        item = self.store.get_named(wsid, self.prefix, artifact_id) or {}
        groups = [{"type": "userGroup", "id": g} for g in item.get("user_groups", [])]
        return {"executionPermissions": {"data": {"users": [], "userGroups": groups}}}


class AweTasks(Kind):
    """Flows. A flow's folder is not propagated; folders are not built yet, so every flow is in the root."""

    type, path, label, model = "aweTask", "awe-tasks", "awe-task", AweTaskAttributes

    def __init__(self, flows: Flows, request_model: Callable[..., Any], store: PropagationStore) -> None:
        self.flows = flows
        self.request_model = request_model  # flows.models.PutFlowRequest, plugged in by the container
        self.store = store  # a flow's folder

    def find(self, wsid: str, artifact_id: str) -> Attributes | None:
        flow = self.flows.flow_by_id(wsid, artifact_id)
        return _awe_task(flow) if flow is not None else None

    def page(
        self, wsid: str, limit: int, cursor: str | None
    ) -> tuple[list[tuple[str, Attributes]], str | None]:
        flows, nxt = self.flows.flows_page(wsid, limit, cursor)
        return [(f.id, _awe_task(f)) for f in flows], nxt

    def save(
        self,
        wsid: str,
        artifact_id: str,
        attributes: Any,
        actor: Principal,
        relationships: dict[str, Any] | None = None,
    ) -> tuple[Attributes, bool]:
        assert isinstance(attributes, AweTaskAttributes)
        try:
            request = self.request_model(
                script=attributes.script,
                description=attributes.description or None,
                timeout_seconds=attributes.timeout if attributes.useTimeout else None,
                log_level=attributes.logLevel.value,
                log_directory=attributes.logDirectory or None,
                retain_successful_logs=attributes.retainSuccessfulLogs,
                retain_failed_logs=attributes.retainFailedLogs,
            )
        except ValidationError as exc:
            raise attributes_error(exc) from None
        folder = _related(relationships, "aweFolder", "aweFolder", many=False)
        if folder and folder[0] != ROOT_FOLDER and self.store.get_named(wsid, "AWEFOLDER", folder[0]) is None:
            raise BadRequest(f"no AWE folder {folder[0]} in this site", code="unknown_folder")
        flow, created = self.flows.put_flow_by_id(wsid, artifact_id, attributes.name, request, actor.user_id)
        if folder is not None:  # not given (a propagation's write): the flow stays in its folder
            self.store.set_folder(
                wsid, artifact_id, folder[0] if folder and folder[0] != ROOT_FOLDER else None
            )
        return _awe_task(flow), created

    def relationships(self, wsid: str, artifact_id: str) -> dict[str, Any]:
        folder = self.store.folder_of(wsid, artifact_id)
        if folder is not None and self.store.get_named(wsid, "AWEFOLDER", folder) is None:
            folder = None  # its folder was deleted: the flow is in the root
        return {"aweFolder": {"data": {"type": "aweFolder", "id": folder or ROOT_FOLDER}}}

    def delete(self, wsid: str, artifact_id: str) -> None:
        self.flows.delete_flow_by_id(wsid, artifact_id)
        self.store.set_folder(wsid, artifact_id, None)

    def comparable(self, attributes: Attributes) -> Attributes:
        return {k: v for k, v in attributes.items() if k != "created"}


def _awe_task(flow: Any) -> Attributes:
    import base64

    timeout = getattr(flow, "timeout_seconds", None)
    level = getattr(flow, "log_level", "info")
    return {
        "name": flow.name,
        "created": flow.created_at,
        "description": flow.description or "",
        "useTimeout": timeout is not None,
        "timeout": timeout if timeout is not None else 60,
        "logLevel": getattr(level, "value", level),
        "logDirectory": getattr(flow, "log_directory", None) or "",
        "retainSuccessfulLogs": bool(getattr(flow, "retain_successful_logs", False)),
        "retainFailedLogs": bool(getattr(flow, "retain_failed_logs", True)),
        "code": base64.b64encode(flow.script.encode()).decode(),
    }


class ConnectionProfiles(Kind):
    """Connectors: `connectionSettings` is the parsed value; `value` its text, kept verbatim."""

    type, path, label, model = (
        "connectionProfile",
        "connection-profiles",
        "connection-profile",
        ConnectionProfileAttributes,
    )

    def __init__(self, connectors: Connectors, request_model: Callable[..., Any]) -> None:
        self.connectors = connectors
        self.request_model = request_model  # connectors.models.PutConnectorRequest

    def find(self, wsid: str, artifact_id: str) -> Attributes | None:
        connector = self.connectors.connector_by_id(wsid, artifact_id)
        return _profile(connector) if connector is not None else None

    def page(
        self, wsid: str, limit: int, cursor: str | None
    ) -> tuple[list[tuple[str, Attributes]], str | None]:
        items, nxt = self.connectors.list_connectors(wsid, limit, cursor)
        return [(c.id, _profile(c)) for c in items], nxt

    def save(
        self,
        wsid: str,
        artifact_id: str,
        attributes: Any,
        actor: Principal,
        relationships: dict[str, Any] | None = None,
    ) -> tuple[Attributes, bool]:
        assert isinstance(attributes, ConnectionProfileAttributes)
        text = attributes.value
        if text is None:
            text = yaml.safe_dump(attributes.connectionSettings, sort_keys=False, allow_unicode=True)
        elif attributes.connectionSettings and _parsed(text) != attributes.connectionSettings:
            raise BadRequest(
                "data.attributes.value and connectionSettings differ: send one of them, or both alike",
                code="validation_error",
            )
        try:
            request = self.request_model(
                type=attributes.type,
                value=text,
                secrets=list(attributes.secrets),
                description=attributes.description or None,
            )
        except ValidationError as exc:
            raise attributes_error(exc) from None
        connector, created = self.connectors.put_connector_by_id(
            wsid, artifact_id, attributes.name, request, actor.user_id
        )
        return _profile(connector), created

    def delete(self, wsid: str, artifact_id: str) -> None:
        self.connectors.delete_connector_by_id(wsid, artifact_id)


def _parsed(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _profile(connector: Any) -> Attributes:
    return {
        "type": connector.type,
        "name": connector.name,
        "description": connector.description or "",
        "connectionSettings": connector.parsed,
        "value": connector.value,
        "secrets": list(connector.secrets),
    }


@dataclass(frozen=True)
class Shown:
    """An artifact as a JSON:API resource object."""

    kind: Kind
    site: str
    id: str
    attributes: Attributes
    relationships: dict[str, Any]

    @property
    def self_link(self) -> str:
        return f"/admin/v2/sites/{self.site}/{self.kind.path}/{self.id}"

    def resource(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.kind.type, "id": self.id, "attributes": self.attributes}
        if self.relationships:
            body["relationships"] = self.relationships
        body["links"] = {"self": self.self_link}
        return body

    def document(self) -> dict[str, Any]:
        return {"data": self.resource(), "links": {"self": self.self_link}}


class SiteAdmin:
    """Who may use the admin API on a site: org admins (owner, org_admin) of the site's contract, signed
    in with a password (the function checks the token). Another contract's site is not found."""

    def __init__(self, sites: Sites) -> None:
        self.sites = sites

    def site(self, principal: Principal, site_id: str) -> Workspace:
        workspace = self.sites.authorize_workspace(principal, site_id)
        self.require_admin(principal)
        return workspace

    @staticmethod
    def require_admin(principal: Principal) -> None:
        if principal.platform_admin or not principal.is_contract_admin:
            raise Forbidden(
                "the admin API is for the administrators (owner, org_admin) of the site's contract"
            )

    def list(self, principal: Principal) -> list[Workspace]:
        self.require_admin(principal)
        assert principal.contract_id is not None
        found: list[Workspace] = []
        cursor: str | None = None
        while True:
            page, cursor = self.sites.list_workspaces(principal, principal.contract_id, 100, cursor)
            found += page
            if not cursor:
                return found


class Audit:
    """The admin API's record of every write (who, what, outcome), readable per site."""

    def __init__(self, store: PropagationStore) -> None:
        self.store = store

    def write(self, wsid: str, kind: str, **fields: Any) -> None:
        stamp = now()
        expires = int(stamp.timestamp()) + AUDIT_DAYS * 86400
        at = stamp.isoformat(timespec="microseconds")  # records sort by it, newest first
        self.store.record(wsid, kind, at=at, record_id=str(uuid.uuid4()), fields=fields, ttl=expires)


class Artifacts:
    """The artifact API's use cases, for one kind at a time."""

    def __init__(
        self, admin: SiteAdmin, kinds: dict[str, Kind], audit: Audit, store: PropagationStore
    ) -> None:
        self.admin = admin
        self.kinds = kinds
        self.audit = audit
        self.store = store  # the artifacts' admin permissions

    # ---- admin permissions (ACLs) ----
    def allowed(self, principal: Principal, acl: dict[str, Any] | None, permission: str) -> bool:
        if acl is None or acl.get("inherited", True) or principal.role == Role.OWNER:
            return True
        return any(
            e.get("member") == principal.user_id and permission in e.get("permissions", [])
            for e in acl.get("entries", [])
        )

    def require(self, principal: Principal, kind: Kind, site: str, artifact_id: str, permission: str) -> None:
        if not self.allowed(principal, self.store.get_acl(site, kind.type, artifact_id), permission):
            raise Forbidden(
                f"the {kind.label}'s permissions do not let you {permission} it", code="acl_denied"
            )

    def get_permissions(self, principal: Principal, site: str, path: str, artifact_id: str) -> AclAttributes:
        kind = self.kind(path)
        self.get(principal, site, path, artifact_id)  # exists, and readable
        acl = self.store.get_acl(site, kind.type, artifact_id.lower())
        return AclAttributes.model_validate(
            {k: acl[k] for k in ("inherited", "entries") if k in acl} if acl else {}
        )

    def put_permissions(
        self, principal: Principal, site: str, path: str, artifact_id: str, body: str | None
    ) -> AclAttributes:
        kind = self.kind(path)
        self.get(principal, site, path, artifact_id)
        artifact_id = artifact_id.lower()
        self.require(principal, kind, site, artifact_id, "write")
        try:
            document = AclDocument.model_validate_json(body or "null")
        except ValidationError as exc:
            raise attributes_error(exc, "body") from None
        acl = document.data.attributes
        for entry in acl.entries:
            member = self.admin.sites.find_member(entry.member)
            if member is None or member.contract_id != principal.contract_id:
                raise BadRequest(f"no member {entry.member} in this site's contract", code="unknown_member")
        self.store.put_acl(site, kind.type, artifact_id, acl.model_dump(mode="json"))
        self.audit.write(
            site,
            "ADMINAUDIT",
            user=principal.username,
            user_id=principal.user_id,
            action="permissions",
            type=kind.type,
            artifact=artifact_id,
            outcome="replaced",
        )
        return acl

    def kind(self, path: str) -> Kind:
        return self.kinds[path]

    def shown(self, kind: Kind, wsid: str, artifact_id: str, attributes: Attributes) -> Shown:
        return Shown(kind, wsid, artifact_id, attributes, kind.relationships(wsid, artifact_id))

    def get(self, principal: Principal, site: str, path: str, artifact_id: str) -> Shown:
        kind = self.kind(path)
        self.admin.site(principal, site)
        artifact_id = check_id(artifact_id, kind.label)
        found = kind.find(site, artifact_id)
        if found is None:
            raise NotFound(f"Not found: {kind.label} ({artifact_id})")
        self.require(principal, kind, site, artifact_id, "read")
        return self.shown(kind, site, artifact_id, found)

    def list(
        self, principal: Principal, site: str, path: str, limit: int, cursor: str | None
    ) -> tuple[list[Shown], str | None]:
        kind = self.kind(path)
        self.admin.site(principal, site)
        items, nxt = kind.page(site, limit, cursor)
        acls = self.store.get_acls(site, kind.type, [i for i, _ in items])  # one BatchGetItem a page
        readable = [(i, a) for i, a in items if self.allowed(principal, acls.get(i), "read")]
        return [self.shown(kind, site, i, a) for i, a in readable], nxt

    def parse(self, kind: Kind, body: str | None, artifact_id: str | None) -> ResourceDocument:
        if not body:
            raise BadRequest('a JSON:API document {"data": {...}} is required', code="validation_error")
        try:
            document = ResourceDocument.model_validate_json(body)
        except ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                raise BadRequest("the body is not valid JSON", code="malformed_json") from None
            raise attributes_error(exc, "body") from None
        if document.data.type != kind.type and document.data.type not in kind.aliases:
            raise BadRequest(f"data.type must be '{kind.type}' on this path", code="validation_error")
        if (
            artifact_id is not None
            and document.data.id is not None
            and document.data.id.lower() != artifact_id
        ):
            raise BadRequest("data.id differs from the id in the path", code="validation_error")
        return document

    def attributes(self, kind: Kind, values: dict[str, Any]) -> BaseModel:
        try:
            return kind.model.model_validate(values)
        except ValidationError as exc:
            raise attributes_error(exc) from None

    def create(self, principal: Principal, site: str, path: str, body: str | None) -> Shown:
        """POST on the collection: a new artifact; `data.id`, when given, is its id."""
        kind = self.kind(path)
        self.admin.site(principal, site)
        document = self.parse(kind, body, None)
        artifact_id = check_id(document.data.id, kind.label) if document.data.id else str(uuid.uuid4())
        attributes = self.attributes(kind, document.data.attributes)
        if kind.find(site, artifact_id) is not None:
            raise Conflict(
                f"a {kind.label} with id {artifact_id} already exists; PUT replaces it", code="id_taken"
            )
        return self._save(
            principal,
            kind,
            site,
            artifact_id=artifact_id,
            attributes=attributes,
            action="create",
            relationships=document.data.relationships,
        )

    def put(
        self, principal: Principal, site: str, path: str, artifact_id: str, body: str | None
    ) -> tuple[Shown, bool]:
        """Seed 004's create-or-replace: the body is the full representation (missing fields: defaults)."""
        kind = self.kind(path)
        self.admin.site(principal, site)
        artifact_id = check_id(artifact_id, kind.label)
        document = self.parse(kind, body, artifact_id)
        attributes = self.attributes(kind, document.data.attributes)
        existed = kind.find(site, artifact_id) is not None
        if existed:
            self.require(principal, kind, site, artifact_id, "write")
        shown = self._save(
            principal,
            kind,
            site,
            artifact_id=artifact_id,
            attributes=attributes,
            action="replace" if existed else "create",
            relationships=document.data.relationships,
        )
        return shown, not existed

    def patch(self, principal: Principal, site: str, path: str, artifact_id: str, body: str | None) -> Shown:
        """A partial update: the fields sent change, the others keep their current values."""
        kind = self.kind(path)
        self.admin.site(principal, site)
        artifact_id = check_id(artifact_id, kind.label)
        document = self.parse(kind, body, artifact_id)
        current = kind.find(site, artifact_id)
        if current is None:
            raise NotFound(f"Not found: {kind.label} ({artifact_id})")
        self.require(principal, kind, site, artifact_id, "write")
        unknown = sorted(set(document.data.attributes) - set(kind.model.model_fields))
        if unknown:
            raise BadRequest(
                "; ".join(
                    f"data.attributes.{u}: unknown field: the artifact has no such attribute" for u in unknown
                ),
                code="validation_error",
            )
        merged = {**current, **document.data.attributes}
        if (
            kind.type == "connectionProfile"
            and "connectionSettings" in document.data.attributes
            and "value" not in document.data.attributes
        ):
            merged.pop("value", None)  # new settings replace the text they came from
        attributes = self.attributes(kind, merged)
        return self._save(
            principal,
            kind,
            site,
            artifact_id=artifact_id,
            attributes=attributes,
            action="update",
            relationships=document.data.relationships,
        )

    def delete(self, principal: Principal, site: str, path: str, artifact_id: str) -> None:
        kind = self.kind(path)
        self.admin.site(principal, site)
        artifact_id = check_id(artifact_id, kind.label)
        if kind.find(site, artifact_id) is None:
            raise NotFound(f"Not found: {kind.label} ({artifact_id})")
        self.require(principal, kind, site, artifact_id, "delete")
        kind.delete(site, artifact_id)
        self.store.put_acl(site, kind.type, artifact_id, {"inherited": True})
        self.audit.write(
            site,
            "ADMINAUDIT",
            user=principal.username,
            user_id=principal.user_id,
            action="delete",
            type=kind.type,
            artifact=artifact_id,
            outcome="deleted",
        )

    def _save(
        self,
        principal: Principal,
        kind: Kind,
        site: str,
        *,
        artifact_id: str,
        attributes: BaseModel,
        action: str,
        relationships: dict[str, Any] | None,
    ) -> Shown:
        try:
            saved, created = kind.save(site, artifact_id, attributes, principal, relationships)
        except (BadRequest, Conflict, NotFound) as exc:
            self.audit.write(
                site,
                "ADMINAUDIT",
                user=principal.username,
                user_id=principal.user_id,
                action=action,
                type=kind.type,
                artifact=artifact_id,
                outcome="refused",
                error=exc.message[:500],
            )
            raise
        self.audit.write(
            site,
            "ADMINAUDIT",
            user=principal.username,
            user_id=principal.user_id,
            action=action,
            type=kind.type,
            artifact=artifact_id,
            name=saved.get("name"),
            outcome="created" if created else "replaced",
        )
        return self.shown(kind, site, artifact_id, saved)
