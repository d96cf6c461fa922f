"""Use cases of the connectors context: connectors, vault secrets, and preparing and running a connection.

Every method takes a workspace id that the caller (the handler, through the identity context) has
already authorized; everything read or written is keyed by it, so one workspace never reaches
another's connectors or secrets.

A connection runs in two steps, so the runner can record what it is about to do before doing it:
`prepare` loads the connector, reads its vault secrets, merges the inputs and validates them in full;
`execute` runs the type and returns outputs with every secret value scrubbed. No secret value leaves
this module except inside `Prepared.merged.inputs`, which is for running only.

A connector's value may name run-time variables (`url: https://%API_HOST%/v1`, the variables context
through `ports.Variables`): the value is saved as written, validated at save time with the workspace's
current values substituted, and substituted again when it runs (the value only, never vault secrets or
call inputs).

Connectors are addressed by name (the native API) or by id (the EFT-style API, through the propagation
context): `connector_by_id`, `put_connector_by_id` (create with that id, or replace and rename),
`delete_connector_by_id`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from flowgate.clock import iso
from flowgate.clock import now as utcnow
from flowgate.connectors import registry
from flowgate.connectors.merge import Merged, merge_inputs, scrub
from flowgate.connectors.models import (
    Connector,
    PutConnectorRequest,
    PutSecretRequest,
    SecretInfo,
)
from flowgate.connectors.ports import Variables
from flowgate.connectors.runtime import ConnectorError, RunContext
from flowgate.connectors.store import ConnectorStore, connector_from, secret_info_from
from flowgate.connectors.values import parse_value
from flowgate.connectors.vault import Vault
from flowgate.db import Item, StaleVersion
from flowgate.errors import BadRequest, Conflict, FlowgateError, NotFound, PreconditionFailed
from flowgate.names import NAME
from flowgate.url_guard import UrlNotAllowed

__all__ = ["ConnectorError", "ConnectorService", "Prepared", "RunContext", "check_name"]

# Saves without If-Match re-read and retry this often before answering 409.
UPDATE_ATTEMPTS = 3
CHANGED_MEANWHILE = "the connector was changed by another request; reload and retry"
# What %EXECUTION_ID% reads while a value is validated at save time (the real id is known at run time).
SAVE_TIME_EXECUTION_ID = "00000000-0000-4000-8000-000000000000"


def check_name(name: str, what: str) -> None:
    if not NAME.match(name):
        raise BadRequest(f"a {what} name is 1 to 128 letters, digits, '.', '_' or '-'", code="invalid_name")


def check_id(cid: str) -> None:
    if not NAME.match(cid):
        raise BadRequest("a connector id is 1 to 128 letters, digits, '.', '_' or '-'", code="invalid_id")


@dataclass(frozen=True)
class Prepared:
    """A connection ready to run: its type, merged inputs (validated) and which connector it uses.

    Store `merged.redacted` and `merged.sources` on the execution, never `merged.inputs`.
    """

    type: str
    merged: Merged
    model: BaseModel = field(repr=False)  # the merged inputs, validated against the type's schema
    connector_name: str | None = None
    connector_id: str | None = None
    connector_version: int | None = None


class ConnectorService:
    def __init__(
        self, store: ConnectorStore, vault: Vault, ctx: RunContext, variables: Variables | None = None
    ) -> None:
        self.store = store
        self.vault = vault
        # The platform's policy: save-time URL checks and local-repository rules use it.
        self.ctx = ctx
        # The workspace's run-time variables; None: values are taken as written (no substitution).
        self.variables = variables

    # ---- connectors ----------------------------------------------------------------------------
    def put_connector(
        self, wsid: str, name: str, request: PutConnectorRequest, actor_id: str, if_match: int | None = None
    ) -> Connector:
        """Create or replace the connector `name`: the value must be a mapping that is valid so far for
        its type (inputs may still come from secrets or the call), and every listed secret must exist.
        With `if_match`, a connector at another version (or none) answers 412 instead of being replaced.
        """
        check_name(name, "connector")
        spec, parsed = self._validated(wsid, request)
        for _ in range(UPDATE_ATTEMPTS):
            current = self.store.get_connector(wsid, name)
            if if_match is not None and (current is None or current["version"] != if_match):
                found = "does not exist" if current is None else f"is at version {current['version']}"
                raise PreconditionFailed(f"the connector {found}, not {if_match}; reload and retry")
            cid = current["id"] if current else str(uuid.uuid4())
            item = self._item(
                wsid,
                cid,
                name=name,
                type_=spec.name,
                request=request,
                parsed=parsed,
                current=current,
                actor_id=actor_id,
            )
            try:
                self.store.save_connector(item, current)
            except StaleVersion:
                if if_match is not None:
                    raise PreconditionFailed(CHANGED_MEANWHILE) from None
                continue
            return connector_from(item)
        raise Conflict("the connector kept changing while it was saved; retry")

    def _validated(
        self, wsid: str, request: PutConnectorRequest
    ) -> tuple[registry.ConnectorType[Any], dict[str, Any]]:
        """The type and the parsed value of a connector to save: the value valid so far for its type, with
        the workspace's run-time variables substituted (400 `unknown_variable` naming the field when it
        names one the workspace does not define), and every listed secret existing."""
        spec = registry.get_type(request.type)
        parsed = parse_value(request.value)
        checked = parsed
        if self.variables is not None:
            checked = self.variables.resolve(wsid, parsed, field="value", execution_id=SAVE_TIME_EXECUTION_ID)
        registry.validate_partial(spec, checked, self.ctx)
        self._require_secrets(wsid, request.secrets)
        return spec, parsed

    @staticmethod
    def _item(
        wsid: str,
        cid: str,
        *,
        name: str,
        type_: str,
        request: PutConnectorRequest,
        parsed: dict[str, Any],
        current: Item | None,
        actor_id: str,
    ) -> Item:
        """The connector item a save writes: `request` as a full representation (what it lacks takes its
        default), keeping the id and creation of `current`."""
        now = iso(utcnow())
        return ConnectorStore.connector_item(
            id=cid,
            workspace_id=wsid,
            name=name,
            type=type_,
            value=request.value,
            parsed_json=json.dumps(parsed, separators=(",", ":")),
            secrets=list(request.secrets),
            description=request.description,
            version=current["version"] + 1 if current else 1,
            created_at=current["created_at"] if current else now,
            created_by=current.get("created_by") if current else actor_id,
            updated_at=now,
            updated_by=actor_id,
        )

    # ---- connectors by id (the EFT-style API; the caller has authorized the workspace) --------------
    def connector_by_id(self, wsid: str, connector_id: str) -> Connector | None:
        """The workspace's connector of that id, or None (consistent: a save just answered is seen)."""
        check_id(connector_id)
        item = self.store.connector_by_id(wsid, connector_id)
        return connector_from(item) if item else None

    def put_connector_by_id(
        self, wsid: str, connector_id: str, name: str, request: PutConnectorRequest, actor_id: str
    ) -> tuple[Connector, bool]:
        """Create the connector `connector_id` named `name`, or replace it (the request is its full
        representation) and rename it when `name` differs; whether it was created.

        409 when another connector already has the name (on create or rename), or when a concurrent
        request created the same id first. The same 400s as `put_connector` otherwise.
        """
        check_id(connector_id)
        check_name(name, "connector")
        spec, parsed = self._validated(wsid, request)
        for _ in range(UPDATE_ATTEMPTS):
            current = self.store.connector_by_id(wsid, connector_id)
            if current is None or current["name"] != name:
                taken = self.store.get_connector(wsid, name)
                if taken is not None:
                    raise Conflict(
                        f"a connector named '{name}' already exists in this workspace (id {taken['id']})"
                    )
            item = self._item(
                wsid,
                connector_id,
                name=name,
                type_=spec.name,
                request=request,
                parsed=parsed,
                current=current,
                actor_id=actor_id,
            )
            try:
                self.store.save_connector(item, current, exclusive=True)
            except StaleVersion:
                continue
            return connector_from(item), current is None
        raise Conflict("the connector kept changing while it was saved; retry")

    def delete_connector_by_id(self, wsid: str, connector_id: str) -> None:
        """Delete the connector of that id (404 when the workspace has none), releasing its secrets."""
        check_id(connector_id)
        for _ in range(UPDATE_ATTEMPTS):
            current = self.store.connector_by_id(wsid, connector_id)
            if current is None:
                raise NotFound(f"connector with id '{connector_id}' not found")
            try:
                self.store.delete_connector(current)
            except StaleVersion:
                continue
            return
        raise Conflict("the connector kept changing while it was deleted; retry")

    def _require_secrets(self, wsid: str, names: list[str]) -> None:
        found = self.store.get_secrets(wsid, names)
        missing = [n for n in names if n not in found]
        if missing:
            listed = ", ".join(f"'{n}'" for n in missing)
            noun = "secret" if len(missing) == 1 else "secrets"
            raise BadRequest(f"secrets: no vault {noun} {listed} in this workspace", code="unknown_secret")

    def _connector_item(self, wsid: str, name: str) -> Item:
        check_name(name, "connector")
        item = self.store.get_connector(wsid, name)
        if item is None:
            raise NotFound(f"connector '{name}' not found")
        return item

    def exists(self, wsid: str, name: str) -> bool:
        """Whether the connector exists (the handler answers 201 or 200 to a PUT with it)."""
        check_name(name, "connector")
        return self.store.get_connector(wsid, name) is not None

    def get_connector(self, wsid: str, name: str) -> Connector:
        return connector_from(self._connector_item(wsid, name))

    def list_connectors(
        self, wsid: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Connector], str | None]:
        page = self.store.list_connectors(wsid, max(1, min(limit, 100)), cursor)
        return [connector_from(i) for i in page.items], page.next

    def delete_connector(self, wsid: str, name: str, if_match: int | None = None) -> None:
        for _ in range(UPDATE_ATTEMPTS):
            current = self._connector_item(wsid, name)
            if if_match is not None and current["version"] != if_match:
                raise PreconditionFailed(f"the connector is at version {current['version']}, not {if_match}")
            try:
                self.store.delete_connector(current)
            except StaleVersion:
                if if_match is not None:
                    raise PreconditionFailed(CHANGED_MEANWHILE) from None
                continue
            return
        raise Conflict("the connector kept changing while it was deleted; retry")

    # ---- vault secrets -------------------------------------------------------------------------
    def put_secret(self, wsid: str, name: str, request: PutSecretRequest) -> SecretInfo:
        """Create or replace a secret's value. The value goes to Secrets Manager first, then the metadata,
        so a listed secret always has a value; what comes back names its keys, never its values."""
        check_name(name, "secret")
        self.vault.put(wsid, name, request.value)
        item = self.store.record_secret(wsid, name, sorted(request.value), iso(utcnow()))
        return secret_info_from(item, self.store.user_names(wsid, [item]))

    def get_secret(self, wsid: str, name: str) -> SecretInfo:
        check_name(name, "secret")
        item = self.store.get_secret(wsid, name)
        if item is None:
            raise NotFound(f"secret '{name}' not found")
        return secret_info_from(item, self.store.user_names(wsid, [item]))

    def list_secrets(
        self, wsid: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[SecretInfo], str | None]:
        page = self.store.list_secrets(wsid, max(1, min(limit, 100)), cursor)
        names = self.store.user_names(wsid, page.items)
        return [secret_info_from(i, names) for i in page.items], page.next

    def delete_secret(self, wsid: str, name: str) -> None:
        """Delete a secret no connector lists (409 naming the connectors otherwise): the metadata first,
        conditionally, then the value, so a secret in use never loses its value."""
        info = self.get_secret(wsid, name)
        if info.used_by:
            users = ", ".join(f"'{c}'" for c in info.used_by)
            raise Conflict(
                f"the vault secret '{name}' is used by the connector(s) {users}; remove it from them first",
                code="secret_in_use",
            )
        self.store.delete_secret(wsid, name)
        self.vault.delete(wsid, name)

    # ---- running ---------------------------------------------------------------------------------
    def prepare(
        self,
        wsid: str,
        connector_name: str | None,
        connector_type: str | None,
        call_inputs: Mapping[str, Any],
        execution_id: str | None = None,
    ) -> Prepared:
        """Everything a connection needs before it runs, or BadRequest/NotFound saying what is wrong.

        With a connector name: its value (run-time variables substituted, %EXECUTION_ID% reading
        `execution_id`; a variable deleted since the save is a 400 `unknown_variable`), then its vault
        secrets (in the listed order), then the call's inputs. With only a type
        (`this.connect(connector_type='REST', ...)`): the call's inputs alone.
        """
        if connector_name is None:
            if not connector_type:
                raise BadRequest("name a connector or a connector type", code="invalid_connector_inputs")
            spec = registry.get_type(connector_type)
            merged = merge_inputs({}, {}, call_inputs)
            model = registry.validate_full(spec, merged.inputs, self.ctx)
            return Prepared(spec.name, merged, model)
        item = self._connector_item(wsid, connector_name)
        spec = registry.get_type(item["type"])
        if connector_type and registry.canonical_name(connector_type) != spec.name:
            raise BadRequest(
                f"the connector '{connector_name}' is of type {spec.name}, not {connector_type}",
                code="invalid_connector_inputs",
            )
        value: dict[str, Any] = json.loads(item["parsed_json"])
        if self.variables is not None:
            value = self.variables.resolve(wsid, value, field="value", execution_id=execution_id)
        vault = {name: self.vault.get(wsid, name) for name in item.get("secrets", [])}
        merged = merge_inputs(value, vault, call_inputs)
        try:
            model = registry.validate_full(spec, merged.inputs, self.ctx)
        except FlowgateError as exc:  # messages name fields, but a check may quote a URL from a secret
            raise type(exc)(scrub(exc.message, merged.secret_values), code=exc.code) from None
        return Prepared(spec.name, merged, model, item["name"], item["id"], item["version"])

    def execute(self, prepared: Prepared, ctx: RunContext | None = None) -> dict[str, Any]:
        """Run the connection; its outputs with every secret value scrubbed.

        Raises ConnectorError with a scrubbed, trace-free message when the call fails. `ctx` defaults to
        the service's; the runner passes one limited to the time it has left.
        """
        spec = registry.get_type(prepared.type)
        secrets = set(prepared.merged.secret_values)
        if spec.derived_secrets is not None:
            secrets |= spec.derived_secrets(prepared.model, frozenset(secrets))
        try:
            outputs = spec.run(prepared.model, ctx or self.ctx)
        except (ConnectorError, UrlNotAllowed) as exc:
            raise ConnectorError(scrub(exc.message, secrets)) from None
        except Exception as exc:  # a bug or an unforeseen library error: say which, never what it held
            message = f"the {spec.name} connector failed unexpectedly ({type(exc).__name__})"
            raise ConnectorError(message) from None
        scrubbed: dict[str, Any] = scrub(outputs, secrets)
        return scrubbed
