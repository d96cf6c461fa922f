"""The exchange's wire format, version 1: one signed envelope carries many messages, each with an id.

The side that can reach the other POSTs an `Envelope` (its messages for the peer, the ids of the peer's
messages it has applied, and how long it is willing to wait for work); the peer answers with a signed
`Envelope` of its own (its messages, and the ids of the caller's messages it applied). A message stays
in its sender's outbox until the peer acknowledges it, so a lost answer means a repeat, and applying a
message twice changes nothing.

Message kinds:
- `run` (controlling → controlled): run this script with these inputs; `execution_id` is the
  controlling side's child execution.
- `cancel` (controlling → controlled): cancel the run of `execution_id`.
- `status` (controlled → controlling): the run of `execution_id` is running or has ended.
- `mirror` (controlling → controlled, with send_all_executions): a read-only copy of an execution.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

VERSION = 1
MAX_MESSAGES = 200
MAX_ENVELOPE_BYTES = 2 * 1024 * 1024  # well inside Lambda's 6 MB payload, with room for JSON escaping
MAX_WAIT_SECONDS = 25  # API Gateway answers within 29 s
STRICT = ConfigDict(extra="forbid")

Id = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9:._-]+$")]
Text = Annotated[str, StringConstraints(max_length=4096)]


class Run(BaseModel):
    model_config = STRICT
    kind: Literal["run"] = "run"
    id: Id
    execution_id: Id
    flow: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    script: Annotated[str, StringConstraints(min_length=1, max_length=128 * 1024)]
    inputs: dict[str, Any] = Field(default_factory=dict)
    started_by: Annotated[str, StringConstraints(max_length=256)] = ""


class Cancel(BaseModel):
    model_config = STRICT
    kind: Literal["cancel"] = "cancel"
    id: Id
    execution_id: Id


class Status(BaseModel):
    model_config = STRICT
    kind: Literal["status"] = "status"
    id: Id
    execution_id: Id
    remote_execution_id: Id
    status: Literal["pending", "running", "waiting", "success", "error", "cancelled"]
    outputs: dict[str, Any] = Field(default_factory=dict)
    message: Text | None = None
    log: list[Annotated[str, StringConstraints(max_length=64 * 1024)]] = Field(default_factory=list)
    log_truncated: bool = False
    duration_ms: int | None = None


class Mirror(BaseModel):
    model_config = STRICT
    kind: Literal["mirror"] = "mirror"
    id: Id
    execution: dict[str, Any]  # the execution as the API shows it; checked when applied


Message = Annotated[Run | Cancel | Status | Mirror, Field(discriminator="kind")]


class Envelope(BaseModel):
    model_config = STRICT
    v: Literal[1] = 1  # VERSION
    messages: Annotated[list[Message], Field(max_length=MAX_MESSAGES)] = Field(default_factory=list)
    acks: Annotated[list[Id], Field(max_length=MAX_MESSAGES)] = Field(default_factory=list)
    wait_seconds: Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS)] = 0

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_defaults=False).encode()
