"""The ports of active flows: what the domain needs from other contexts and from the infrastructure.

The adapters (flowgate.activation.adapters) are SQS FIFO, EventBridge and the flows runner; tests put
recording fakes behind the same protocols.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from flowgate.activation.models import MessageRun


class FlowLookup(Protocol):
    """Whether a flow exists (the flows service)."""

    def flow_exists(self, wsid: str, name: str) -> bool: ...


class MessageQueue(Protocol):
    def send(self, workspace_id: str, flow: str, message_id: str) -> None:
        """Queue a stored message for processing, in order of arrival per flow, one at a time."""
        ...


class EventPublisher(Protocol):
    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        """Emit one event users can subscribe to (EventBridge)."""
        ...


class MessageRunner(Protocol):
    def run(
        self, workspace_id: str, flow: str, inputs: Mapping[str, Any], started_by: str, execution_id: str
    ) -> MessageRun:
        """Run the flow's current script once with `inputs`, inline, as execution `execution_id`."""
        ...

    def outcome(self, execution_id: str) -> MessageRun | None:
        """How an earlier run ended (succeeded or not), or None while it runs or if it never started."""
        ...
