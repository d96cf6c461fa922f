"""The ports of the workflow context: what it needs from the infrastructure and from other contexts.

The domain decides; the adapters (flowgate.workflow.adapters) pause Step Functions executions and run
flows. Tests put recording fakes behind the same protocols.
"""

from __future__ import annotations

from typing import Protocol

from flowgate.db import Item
from flowgate.identity.models import Principal, Workspace
from flowgate.workflow.models import Task


class Holds(Protocol):
    """The pause of a held task: one named state machine execution per task."""

    def hold(self, task_id: str, request_id: str, timeout_seconds: int) -> None:
        """Start the pause of one task; starting it again for the same task must be harmless."""
        ...

    def release(self, token: str, decision: str) -> None:
        """The one token call; `decision` is "continue", "cancel" or "timeout". A token already used
        (or timed out) must not raise."""
        ...


class Jobs(Protocol):
    def start(self, task: Task, flow: str) -> str:
        """Run the task's jobs through the bound flow; the id of the execution that runs them."""
        ...


class WorkspaceAuthorizer(Protocol):
    """The identity service's check: 404 outside the workspace's contract, 403 without access."""

    def authorize_workspace(self, principal: Principal, wsid: str, *, manage: bool = False) -> Workspace: ...


class Directory(Protocol):
    """Reads of contracts and users (the identity store)."""

    def get_contract(self, cid: str) -> Item | None: ...

    def get_user(self, uid: str) -> Item | None: ...


class FlowLookup(Protocol):
    """Whether a flow exists (the flows store)."""

    def get_flow(self, wsid: str, name: str) -> Item | None: ...
