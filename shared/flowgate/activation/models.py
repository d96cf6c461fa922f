"""Active flows (seed 001, DESIGN §3.4): the activation state of a flow, its queued messages, the stop
record and the audit, as the API and the flows GET show them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from flowgate.documents import storable


class ActivationStatus(StrEnum):
    INACTIVE = "inactive"
    ACTIVE = "active"
    STOPPED = "stopped"  # by the runtime limit of a limited workspace; restarts only by hand


class StopReason(StrEnum):
    RUNTIME_LIMIT = "runtime_limit"
    DEACTIVATED = "deactivated"


class MessageStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    DISCARDED = "discarded"


# The body of `POST .../flows/{name}/messages`: any JSON object DynamoDB can hold (flowgate.documents);
# its size is checked by the service against the workspace's limit.
MessageBody = Annotated[dict[str, Any], AfterValidator(storable)]


class StopRecord(BaseModel):
    """The last time the flow stopped: when, why, and how many queued messages were discarded."""

    at: str
    reason: StopReason
    discarded: int = 0
    activated_at: str | None = None  # the activation that this stop ended
    by: str | None = None  # the user who deactivated it; None for the runtime limit


class FlowActivation(BaseModel):
    """A flow's activation state; its own item, so script changes and activation never race."""

    workspace_id: str
    flow: str
    status: ActivationStatus = ActivationStatus.INACTIVE
    activated_at: str | None = None
    activated_by: str | None = None
    stops_at: str | None = None  # limited workspaces only
    warn_at: str | None = None
    warned_at: str | None = None
    stop: StopRecord | None = None
    version: int = 0
    seconds_left: int | None = None  # computed when read: active and limited only


class QueuedMessage(BaseModel):
    id: str
    workspace_id: str
    flow: str
    received_at: str
    status: MessageStatus
    body: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 0
    execution_id: str | None = None
    error: str | None = None
    posted_by: str | None = None
    ended_at: str | None = None
    discarded_at: str | None = None
    discard_reason: str | None = None
    ttl: int | None = None  # epoch seconds when the record goes (retention of the workspace's kind)


class AuditRecord(BaseModel):
    """One append-only line of a flow's activation history."""

    workspace_id: str
    flow: str
    at: str
    event: str  # "activated" | "deactivated" | "stopped"
    reason: str | None = None
    discarded: int | None = None
    activated_at: str | None = None
    actor: str | None = None


class ActivationSettings(BaseModel):
    """The limits of active flows (template parameters, set as the functions' environment)."""

    model_config = ConfigDict(frozen=True)

    max_runtime_seconds: int = Field(default=28800, ge=1)
    warning_seconds: int = Field(default=900, ge=0)
    retention_days_limited: int = Field(default=7, ge=1)
    retention_days_full: int = Field(default=90, ge=1)
    max_active_flows_limited: int = Field(default=5, ge=0)
    # A message becomes the inputs of an execution, whose item holds at most 64 KiB of inputs
    # (flows.models.MAX_INPUT_BYTES): a larger message could be stored but never run.
    max_message_bytes: int = Field(default=64 * 1024 - 256, ge=2)
    max_attempts: int = Field(default=5, ge=1)  # = the message queue's maxReceiveCount
    message_queue_url: str = ""
    event_bus_name: str = "default"
    # A stop left half done (its enforcer died after the stop write) is finished by a later run after this.
    stop_lease_seconds: int = Field(default=300, ge=1)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ActivationSettings:
        def number(name: str, default: int) -> int:
            return int(environ.get(name) or default)

        return cls(
            max_runtime_seconds=number("LIMITED_MAX_RUNTIME_SECONDS", 28800),
            warning_seconds=number("STOP_WARNING_SECONDS", 900),
            retention_days_limited=number("EXECUTION_RETENTION_DAYS_LIMITED", 7),
            retention_days_full=number("EXECUTION_RETENTION_DAYS_FULL", 90),
            max_active_flows_limited=number("MAX_ACTIVE_FLOWS_LIMITED", 5),
            max_message_bytes=number("MAX_MESSAGE_BYTES", 64 * 1024 - 256),
            max_attempts=number("MESSAGE_MAX_ATTEMPTS", 5),
            message_queue_url=environ.get("MESSAGE_QUEUE_URL", ""),
            event_bus_name=environ.get("EVENT_BUS_NAME") or "default",
        )

    def retention_days(self, kind: str) -> int:
        return self.retention_days_full if kind == "full" else self.retention_days_limited


@dataclass(frozen=True)
class MessageRun:
    """What running one message through its flow came to."""

    execution_id: str | None
    succeeded: bool
    error: str | None = None


@dataclass
class StoppedFlow:
    workspace_id: str
    flow: str
    at: str
    discarded: int


@dataclass
class WarnedFlow:
    workspace_id: str
    flow: str
    stops_at: str
    seconds_left: int


@dataclass(frozen=True)
class FailedEntry:
    """A due entry the enforcer could not handle: logged, counted, and left for the next run."""

    workspace_id: str
    flow: str
    action: str  # "stop" | "warn"
    error: str  # the exception's type, never its text (it may quote a tenant's data)


@dataclass
class EnforcerReport:
    stopped: list[StoppedFlow] = field(default_factory=list)
    warned: list[WarnedFlow] = field(default_factory=list)
    failed: list[FailedEntry] = field(default_factory=list)


class MessageFailed(Exception):
    """Processing a message failed; raising it makes SQS deliver the message again (then to its DLQ)."""
