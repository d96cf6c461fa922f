"""The ports of the workflow context: what it needs from the infrastructure and from other contexts.

The domain decides; the adapters pause Step Functions executions (flowgate.workflow.adapters) and
run the jobs' flows (flowgate.bridges). Authorization and lookups come through identity's ports.
Tests put recording fakes behind the same protocols.
"""

from __future__ import annotations

from typing import Protocol

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
    def start(self, task: Task, flow: str, execution_id: str) -> None:
        """Run the task's jobs through the bound flow as the execution `execution_id`, and queue it for
        the runner. Starting it again with the same id must not run the jobs twice: the execution is
        created once, and one created by an attempt that died before queueing it is queued again."""
        ...


class FlowLookup(Protocol):
    """Whether a flow exists (the flows service)."""

    def flow_exists(self, wsid: str, name: str) -> bool: ...


class SecretValue(Protocol):
    """One secret string kept outside the table (Secrets Manager): the webhook signing secret."""

    def get(self) -> str | None: ...

    def put(self, value: str) -> None: ...

    def delete(self) -> None: ...
