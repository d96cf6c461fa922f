"""Flows and executions (DESIGN §1, §3.1): the domain model and the request models of their API."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from flowgate.documents import document_error, storable
from flowgate.names import ArtifactName

# An execution is one DynamoDB item (400 KB at most) holding the script it ran, its inputs, outputs and log,
# so each has a share: script 128 KiB, inputs 64 KiB, outputs 64 KiB, log 64 KiB.
MAX_SCRIPT_BYTES = 128 * 1024
MAX_INPUT_BYTES = 64 * 1024
MAX_OUTPUT_BYTES = 64 * 1024
MAX_LOG_BYTES = 64 * 1024
FlowName = ArtifactName
STRICT = ConfigDict(extra="forbid")


class ExecutionType(StrEnum):
    FLOW = "flow"
    CONNECTION = "connection"


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCESS = "success"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({ExecutionStatus.SUCCESS, ExecutionStatus.ERROR, ExecutionStatus.CANCELLED})


class LogLevel(StrEnum):
    """How much an execution of the flow logs (EFT's aweTask `logLevel`)."""

    NONE = "none"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"


MAX_TIMEOUT_SECONDS = 86400
MAX_LOG_DIRECTORY = 1024


# What makes two versions of a flow the same: a PUT that changes none of them is no new version.
FLOW_CONTENT = (
    "script",
    "description",
    "timeout_seconds",
    "log_level",
    "log_directory",
    "retain_successful_logs",
    "retain_failed_logs",
)


class Flow(BaseModel):
    """A flow: its script and its settings (EFT's aweTask attributes under Flowgate's names), whose
    defaults are what a flow saved without them has. `timeout_seconds` None: no time limit of its own
    (the platform's applies). `log_directory` may name run-time variables (`%NAME%`; periods in their
    names are stored as underscores)."""

    id: str
    workspace_id: str
    name: str
    script: str
    description: str | None = None
    timeout_seconds: int | None = None
    log_level: LogLevel = LogLevel.INFO
    log_directory: str | None = None
    retain_successful_logs: bool = False
    retain_failed_logs: bool = True
    version: int
    created_at: str
    updated_at: str
    updated_by: str


class FlowSummary(BaseModel):
    id: str
    name: str
    description: str | None = None
    version: int
    updated_at: str


class ExecutionOrigin(BaseModel):
    """Where an execution made by a workspace link came from: the link (this side's sync config), the
    key that signed the request, and the execution on the other side. A mirror is read-only."""

    sync_config: str
    key_fingerprint: str
    execution_id: str
    mirrored: bool = False


class RemoteTarget(BaseModel):
    """Where an execution runs when it runs in a linked workspace: this side's sync config, and the
    execution the peer made for it once it reported."""

    sync_config: str
    remote_execution_id: str | None = None


class Execution(BaseModel):
    id: str
    workspace_id: str
    type: ExecutionType
    status: ExecutionStatus
    flow: str | None = None  # the flow's name (type flow)
    flow_id: str | None = None
    flow_version: int | None = None
    connector: str | None = None  # the connector's name (type connection), or None for a bare type
    connector_type: str | None = None
    script: str | None = None  # the exact script this execution ran (type flow)
    inputs: dict[str, Any] = Field(default_factory=dict)  # vault-supplied values are stored as "***"
    input_sources: dict[str, str] = Field(default_factory=dict)  # key -> value | vault | call
    outputs: dict[str, Any] = Field(default_factory=dict)
    message: str | None = None
    log: list[str] = Field(default_factory=list)
    log_truncated: bool = False
    parent: str | None = None
    root: str | None = None
    task_id: str | None = None  # the operation request task whose jobs this execution runs
    origin: ExecutionOrigin | None = None  # made by a workspace link (a remote run or a mirror)
    remote: RemoteTarget | None = None  # runs in a linked workspace
    started_by: str
    created_at: str
    started_at: str | None = None
    ended_at: str | None = None
    duration_ms: int | None = None
    version: int


class ExecutionSummary(BaseModel):
    id: str
    type: ExecutionType
    status: ExecutionStatus
    flow: str | None = None
    connector: str | None = None
    connector_type: str | None = None
    parent: str | None = None
    origin: ExecutionOrigin | None = None
    remote: RemoteTarget | None = None
    created_at: str
    ended_at: str | None = None


# ---- request bodies ---------------------------------------------------------------------------


def _script_bytes(script: str) -> str:
    size = len(script.encode())
    if size > MAX_SCRIPT_BYTES:
        raise ValueError(f"the script is {size} bytes in UTF-8; at most {MAX_SCRIPT_BYTES} are accepted")
    return script


class PutFlowRequest(BaseModel):
    model_config = STRICT
    script: Annotated[str, StringConstraints(min_length=1), AfterValidator(_script_bytes)]
    description: Annotated[str, StringConstraints(max_length=1024)] | None = None
    timeout_seconds: Annotated[int, Field(ge=1, le=MAX_TIMEOUT_SECONDS, strict=True)] | None = Field(
        default=None, description="the flow's own time limit in seconds (none: the platform's limit)"
    )
    log_level: LogLevel = LogLevel.INFO
    log_directory: Annotated[str, StringConstraints(max_length=MAX_LOG_DIRECTORY)] | None = Field(
        default=None,
        description="may name run-time variables (%NAME%); periods in their names are stored as underscores",
    )
    retain_successful_logs: Annotated[bool, Field(strict=True)] = False
    retain_failed_logs: Annotated[bool, Field(strict=True)] = True


def _small(inputs: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(inputs))
    if size > MAX_INPUT_BYTES:
        raise ValueError(f"inputs are {size} bytes as JSON; at most {MAX_INPUT_BYTES} are accepted")
    return inputs


# What DynamoDB can hold (flowgate.documents: numbers, empty keys, text, depth), then the size.
Inputs = Annotated[dict[str, Any], AfterValidator(storable), AfterValidator(_small)]


class StartExecutionRequest(BaseModel):
    model_config = STRICT
    flow: FlowName
    inputs: Inputs = Field(default_factory=dict)
    remote_workspace_name: ArtifactName | None = Field(
        default=None,
        description="run the flow's script in the linked workspace of this sync config (workspace linking)",
    )


class RunConnectorRequest(BaseModel):
    model_config = STRICT
    inputs: Inputs = Field(default_factory=dict)


def outputs_problem(outputs: Any) -> str | None:
    """Why an execution's outputs cannot be stored (too large, or a value DynamoDB cannot hold), or None."""
    size = len(json.dumps(outputs))
    if size > MAX_OUTPUT_BYTES:
        return f"the outputs are {size} bytes; at most {MAX_OUTPUT_BYTES} can be stored"
    error = document_error(outputs)
    return None if error is None else f"the outputs cannot be stored: {error.under('outputs')}"


def capped_log(lines: list[str]) -> tuple[list[str], bool]:
    """The first lines of a log that fit its share of the item (MAX_LOG_BYTES), and whether some were cut."""
    kept: list[str] = []
    size = 0
    for line in lines:
        size += len(line.encode("utf-8", "surrogatepass")) + 1
        if size > MAX_LOG_BYTES:
            return kept, True
        kept.append(line)
    return kept, False
