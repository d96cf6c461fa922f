"""Use cases of the connectors context: connectors, vault secrets, and preparing and running a connection.

Every method takes a workspace id that the caller (the handler, through the identity context) has
already authorized; everything read or written is keyed by it, so one workspace never reaches
another's connectors or secrets.

A connection runs in two steps, so the runner can record what it is about to do before doing it:
`prepare` loads the connector, reads its vault secrets, merges the inputs and validates them in full;
`execute` runs the type and returns outputs with every secret value scrubbed. No secret value leaves
this module except inside `Prepared.merged.inputs`, which is for running only.
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


def check_name(name: str, what: str) -> None:
    if not NAME.match(name):
        raise BadRequest(f"a {what} name is 1 to 128 letters, digits, '.', '_' or '-'", code="invalid_name")


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
    def __init__(self, store: ConnectorStore, vault: Vault, ctx: RunContext) -> None:
        self.store = store
        self.vault = vault
        # The platform's policy: save-time URL checks and local-repository rules use it.
        self.ctx = ctx

    # ---- connectors ----------------------------------------------------------------------------
    def put_connector(
        self, wsid: str, name: str, request: PutConnectorRequest, actor_id: str, if_match: int | None = None
    ) -> Connector:
        """Create or replace the connector `name`: the value must be a mapping that is valid so far for
        its type (inputs may still come from secrets or the call), and every listed secret must exist.
        With `if_match`, a connector at another version (or none) answers 412 instead of being replaced.
        """
        check_name(name, "connector")
        spec = registry.get_type(request.type)
        parsed = parse_value(request.value)
        registry.validate_partial(spec, parsed, self.ctx)
        self._require_secrets(wsid, request.secrets)
        for _ in range(UPDATE_ATTEMPTS):
            current = self.store.get_connector(wsid, name)
            if if_match is not None and (current is None or current["version"] != if_match):
                found = "does not exist" if current is None else f"is at version {current['version']}"
                raise PreconditionFailed(f"the connector {found}, not {if_match}; reload and retry")
            now = iso(utcnow())
            item = self.store.connector_item(
                id=current["id"] if current else str(uuid.uuid4()),
                workspace_id=wsid,
                name=name,
                type=spec.name,
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
            try:
                self.store.save_connector(item, current)
            except StaleVersion:
                if if_match is not None:
                    raise PreconditionFailed(CHANGED_MEANWHILE) from None
                continue
            return connector_from(item)
        raise Conflict("the connector kept changing while it was saved; retry")

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
        return secret_info_from(item)

    def get_secret(self, wsid: str, name: str) -> SecretInfo:
        check_name(name, "secret")
        item = self.store.get_secret(wsid, name)
        if item is None:
            raise NotFound(f"secret '{name}' not found")
        return secret_info_from(item)

    def list_secrets(
        self, wsid: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[SecretInfo], str | None]:
        page = self.store.list_secrets(wsid, max(1, min(limit, 100)), cursor)
        return [secret_info_from(i) for i in page.items], page.next

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
    ) -> Prepared:
        """Everything a connection needs before it runs, or BadRequest/NotFound saying what is wrong.

        With a connector name: its value, then its vault secrets (in the listed order), then the call's
        inputs. With only a type (`this.connect(connector_type='REST', ...)`): the call's inputs alone.
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
        vault = {name: self.vault.get(wsid, name) for name in item.get("secrets", [])}
        merged = merge_inputs(json.loads(item["parsed_json"]), vault, call_inputs)
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
