"""The ports of the sync context: what it needs from the flows context and from the infrastructure.

The composition root (flowgate.wiring) plugs in the flows service (through flowgate.bridges), the
identity service (authorization), Secrets Manager (the keys), SQS (the sender's trigger) and an HTTP
transport; tests put fakes or real peers behind the same protocols.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from flowgate.errors import FlowgateError
from flowgate.identity.ports import Principal, WorkspaceAuthorizer

__all__ = [
    "Answer",
    "Executions",
    "KeyVault",
    "Principal",
    "SyncFailed",
    "Transport",
    "Trigger",
    "WorkspaceAuthorizer",
]


class Executions(Protocol):
    """The executions the exchange creates and updates (the flows context)."""

    def receive_run(
        self,
        workspace_id: str,
        execution_id: str,
        *,
        flow: str,
        script: str,
        inputs: Mapping[str, Any],
        started_by: str,
        origin: Mapping[str, Any],
    ) -> None:
        """Create (once: a repeat of the same id changes nothing) and queue a remote run."""
        ...

    def cancel_run(self, execution_id: str, message: str) -> None:
        """Cancel an execution if it is still active; nothing if it ended or does not exist."""
        ...

    def linked_execution(self, execution_id: str) -> Mapping[str, Any] | None:
        """An execution's `workspace_id`, `status` and `remote` (the link that runs it), or None."""
        ...

    def apply_remote_status(self, execution_id: str, status: str, fields: Mapping[str, Any]) -> None:
        """Move an execution run by a peer to `status` if it is still active (a repeat changes nothing)."""
        ...

    def mirror(
        self, workspace_id: str, execution_id: str, snapshot: Mapping[str, Any], origin: Mapping[str, Any]
    ) -> None:
        """Store a read-only copy of a peer's execution, unless a newer copy is stored already."""
        ...

    def executions_page(
        self, workspace_id: str, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of a workspace's executions, newest first (for mirroring the past ones)."""
        ...


class KeyVault(Protocol):
    """A config's keys, kept in Secrets Manager: one secret per set of keys (`keys_ref`)."""

    def put(self, config_id: str, keys_ref: str, keys: Mapping[str, str | None]) -> None: ...

    def get(self, config_id: str, keys_ref: str) -> dict[str, str | None]: ...

    def delete(self, config_id: str, keys_ref: str) -> None: ...


class Trigger(Protocol):
    def exchange(self, name: str, delay_seconds: int = 0) -> None:
        """Have the sender open an exchange for the config `name` after `delay_seconds`."""
        ...


class SyncFailed(FlowgateError):
    """An exchange did not complete (the peer unreachable or refusing, or its answer not verified)."""

    status = 502
    code = "sync_failed"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Transport(Protocol):
    def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        ca_certificate: str | None,
        verify_ssl: bool,
        timeout: float,
    ) -> Answer:
        """POST through the outbound-URL guard, redirects not followed; SyncUnreachable when it fails."""
        ...
