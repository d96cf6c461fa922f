"""The queue messages between Flowgate's functions: one versioned model per message, used by the
sender to write the body and by the receiver to read it.

A receiver refuses a version it does not know (a partial batch failure, so the record is retried and
ends in the dead-letter queue rather than being misread). Bump `version` only with a receiver that
reads both.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class QueueMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    version: Literal[1] = 1

    def body(self) -> str:
        return self.model_dump_json()


class ExecutionQueued(QueueMessage):
    """A pending execution for the runner (ExecutionQueue)."""

    execution_id: str
    workspace_id: str


class FlowMessageQueued(QueueMessage):
    """A stored message of an active flow for the message processor (FlowMessageQueue, FIFO)."""

    workspace_id: str
    flow: str
    message_id: str


class ApprovalEvent(QueueMessage):
    """What the approval state machine puts on the approval queue (statemachine/approval.asl.json
    writes the body): `held` with the hold's token when it starts waiting, `continued` when a continue
    released it (the notifier starts the jobs), `timed_out` when nobody decided in time."""

    event: Literal["held", "continued", "timed_out"]
    task_id: str
    request_id: str
    token: str | None = None


class SyncDue(QueueMessage):
    """A sync config whose peer has messages waiting, for the sync sender (SyncQueue)."""

    sync_config: str
