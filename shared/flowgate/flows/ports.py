"""The ports of the flows context: what it needs from other contexts and from the infrastructure.

The composition root (flowgate.wiring) plugs in the identity service (authorization and workspace
kinds), the connectors service (flowgate.bridges.ConnectorCalls), the activation service and the
workflow service (flowgate.bridges) and the run-time variables service; tests put fakes behind the
same protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from flowgate.identity.ports import WorkspaceAuthorizer, WorkspaceKind

__all__ = [
    "ConnectionRun",
    "Connections",
    "IsActive",
    "KindOf",
    "Links",
    "Queue",
    "TaskDone",
    "Variables",
    "WorkspaceAuthorizer",
]


class Queue(Protocol):
    def send(self, execution_id: str, workspace_id: str) -> None:
        """Hand a stored pending execution to the runner."""
        ...


@dataclass
class ConnectionRun:
    """How one connection call went: the merged inputs as they may be stored (secrets redacted) with
    each key's provenance, then the outputs or why it failed. `inputs` is None when the call never got
    as far as merging them (an unknown connector, say)."""

    inputs: dict[str, Any] | None = None
    input_sources: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Any] | None = None
    error: str | None = None


class Connections(Protocol):
    """The connectors a flow script reaches (`this.connect`, `system.connector`), in its own workspace."""

    def connector_type(self, wsid: str, name: str) -> str:
        """The type of a stored connector; NotFound if there is none of that name."""
        ...

    def describe(self, wsid: str, name: str) -> dict[str, Any]: ...

    def secret_names(self, wsid: str) -> list[str]: ...

    def run(
        self,
        wsid: str,
        connector: str | None,
        connector_type: str | None,
        inputs: Mapping[str, Any],
        *,
        seconds: float,
        merged: Callable[[ConnectionRun], None],
        execution_id: str | None = None,
    ) -> ConnectionRun:
        """Merge the inputs (value, vault, call), tell `merged` (so they are stored before the call),
        then make the call within `seconds`; `execution_id` is the run-time variable %EXECUTION_ID%."""
        ...


# Whether a flow is active (activation): an active flow is not deleted under it.
IsActive = Callable[[str, str], bool]
# A workspace's kind, for the retention rules (identity).
KindOf = Callable[[str], WorkspaceKind | None]
# An execution that runs an operation task's jobs ended: (task id, success, message) (workflow).
TaskDone = Callable[[str, bool, str | None], None]


class Links(Protocol):
    """Workspace links (the sync context): remote runs go out through them, and every change of an
    execution is told to them (a remote run's status goes back to its origin; mirrored workspaces get
    a copy)."""

    def check_link(self, workspace_id: str, name: str) -> str:
        """The id of the workspace's sync config `name` if it may start remote runs; NotFound or
        Conflict (disabled, or a controlled config) otherwise."""
        ...

    def send_run(self, execution: Mapping[str, Any]) -> None:
        """Send a stored pending remote execution (its `remote` names the link) to the peer."""
        ...

    def send_cancel(self, execution: Mapping[str, Any]) -> None: ...

    def changed(self, execution: Mapping[str, Any]) -> None:
        """An execution was created or changed status."""
        ...


class Variables(Protocol):
    """A workspace's run-time variables (the variables context): a flow's `log_directory` may name them."""

    def check(self, wsid: str, fields: Mapping[str, str]) -> None:
        """Every variable each field's text names (`%NAME%`) is a built-in or one of the workspace's;
        else BadRequest `unknown_variable` naming the field and the variable."""
        ...
