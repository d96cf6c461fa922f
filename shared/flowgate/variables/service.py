"""Use cases of run-time variables: a workspace's variables (create, replace, read, list, delete), checking
the references of artifact fields against them, and the values a run substitutes.

Every method takes a workspace id the caller has already authorized (the handler, through the identity
context; the propagation context for the artifacts it writes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flowgate.clock import iso
from flowgate.clock import now as utcnow
from flowgate.db import StaleVersion
from flowgate.errors import BadRequest, Conflict, NotFound
from flowgate.identity.ports import Directory
from flowgate.variables import rules
from flowgate.variables.models import PutVariableRequest, Variable
from flowgate.variables.rules import BUILTINS, UnknownVariable
from flowgate.variables.store import VariableStore, variable_from

# Saves re-read and retry this often before answering 409.
UPDATE_ATTEMPTS = 3


def check_name(name: str) -> None:
    """A workspace variable's name: a variable name that is not a built-in's (400 `invalid_name`)."""
    if not rules.is_name(name):
        raise BadRequest(
            "a variable name is 1 to 128 letters, digits, '_' or '.', and starts with a letter or '_'",
            code="invalid_name",
        )
    if rules.is_builtin(name):
        raise BadRequest(
            f"'{name}' is a built-in variable's name ({', '.join(BUILTINS)}); choose another",
            code="invalid_name",
        )


class VariableService:
    def __init__(self, store: VariableStore, directory: Directory) -> None:
        self.store = store
        self.directory = directory

    # ---- the workspace's variables ----------------------------------------------------------------
    def put(self, wsid: str, name: str, request: PutVariableRequest, actor_id: str) -> tuple[Variable, bool]:
        """Create or replace the variable; whether it was created. A PUT that changes nothing is not a
        new version (it answers the variable as it is)."""
        check_name(name)
        for _ in range(UPDATE_ATTEMPTS):
            current = self.store.get(wsid, name)
            now = iso(utcnow())
            try:
                if current is None:
                    item = {
                        "workspace_id": wsid,
                        "name": name,
                        "value": request.value,
                        "description": request.description,
                        "version": 1,
                        "created_at": now,
                        "updated_at": now,
                        "updated_by": actor_id,
                    }
                    self.store.create(item)
                    return variable_from(item), True
                if current["value"] == request.value and current.get("description") == request.description:
                    return variable_from(current), False
                changes = {
                    "value": request.value,
                    "description": request.description,
                    "updated_at": now,
                    "updated_by": actor_id,
                }
                self.store.replace(current, changes)
                return variable_from({**current, **changes, "version": current["version"] + 1}), False
            except StaleVersion:
                continue
        raise Conflict("the variable kept changing while it was saved; retry")

    def get(self, wsid: str, name: str) -> Variable:
        return variable_from(self._item(wsid, name))

    def list(
        self, wsid: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Variable], str | None]:
        page = self.store.page(wsid, max(1, min(limit, 100)), cursor)
        return [variable_from(i) for i in page.items], page.next

    def delete(self, wsid: str, name: str) -> None:
        for _ in range(UPDATE_ATTEMPTS):
            current = self._item(wsid, name)
            try:
                self.store.delete(current)
            except StaleVersion:
                continue
            return
        raise Conflict("the variable kept changing while it was deleted; retry")

    def _item(self, wsid: str, name: str) -> dict[str, Any]:
        if not rules.is_name(name):
            check_name(name)
        item = self.store.get(wsid, name)
        if item is None:
            raise NotFound(f"variable '{name}' not found")
        return item

    # ---- references ------------------------------------------------------------------------------
    def check(self, wsid: str, fields: Mapping[str, str]) -> None:
        """Every variable each field's text names must be a built-in or one of the workspace's variables;
        else 400 `unknown_variable` naming the field and the variable (one Query of the variables)."""
        named = {field: rules.references(text) for field, text in fields.items()}
        if not any(named.values()):
            return
        defined = {item["name"] for item in self.store.all(wsid)} | set(BUILTINS)
        self._require(wsid, named, defined)

    def values(self, wsid: str, execution_id: str | None = None) -> dict[str, str]:
        """What references resolve to: the workspace's variables, WORKSPACE_ID, WORKSPACE_NAME and, when
        given, EXECUTION_ID."""
        out = {item["name"]: item["value"] for item in self.store.all(wsid)}
        out["WORKSPACE_ID"] = wsid
        name = self.directory.workspace_name(wsid)
        if name is not None:
            out["WORKSPACE_NAME"] = name
        if execution_id is not None:
            out["EXECUTION_ID"] = execution_id
        return out

    def resolve(
        self, wsid: str, document: Mapping[str, Any], *, field: str = "value", execution_id: str | None = None
    ) -> dict[str, Any]:
        """`document` with every reference in its string values substituted; 400 `unknown_variable` naming
        the field (`<field>.<path>`) and the variable when one has no value. One Query of the variables.

        Without `execution_id`, %EXECUTION_ID% has no value: it is known only while a connection runs.
        """
        values = self.values(wsid, execution_id)
        named = {
            f"{field}.{path}" if path else field: rules.references(text)
            for path, text in rules.strings_in(document)
        }
        self._require(wsid, named, set(values))
        resolved: dict[str, Any] = rules.substitute_document(document, values)
        return resolved

    def _require(self, wsid: str, named: Mapping[str, Sequence[str]], defined: set[str]) -> None:
        missing = [(field, name) for field, names in named.items() for name in names if name not in defined]
        if not missing:
            return
        where = self.directory.workspace_name(wsid) or wsid
        lines = []
        for field, name in missing:
            if name == "EXECUTION_ID":
                lines.append(f"{field} names %EXECUTION_ID%, which has a value only while a connection runs")
            elif name in BUILTINS:
                lines.append(f"{field} names %{name}%, which has no value in workspace '{where}'")
            else:
                lines.append(
                    f"{field} names the run-time variable %{name}%, which workspace '{where}' does not define"
                )
        names = list(dict.fromkeys(name for _, name in missing))
        fields = list(dict.fromkeys(field for field, _ in missing))
        raise UnknownVariable(names[0], "; ".join(lines), names=names, fields=fields)
