"""The approval workflow (seed 002, DESIGN §3.3): resources, tasks and their jobs, enterprise settings,
platform properties, and the request bodies of the API.

The task DTO keeps Abiquo's field names (`taskId`, `userId`, `ownerId`, ...) because workflow tools
written for Abiquo parse them. `Task` is at once the domain object and that DTO: the fields the domain
needs besides the wire ones (workspace, contract, request, flow, ...) are `exclude=True`, so
`task.model_dump(mode="json")` is exactly what goes on the wire and can never leak them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from flowgate.documents import DisplayName

STRICT = ConfigDict(extra="forbid")

# A VM's size bounds (seed 002 has none; these are what a hypervisor host of today can give one VM).
MIN_CPU, MAX_CPU = 1, 64
MIN_RAM_MB, MAX_RAM_MB = 128, 1_048_576
# An appliance's VMs are reserved in one DynamoDB transaction (two writes per VM plus two, at most 100).
MAX_APPLIANCE_VMS = 40
# A decision's message is stored on the task and in the audit; far below DynamoDB's 400 KB item size.
MAX_MESSAGE_CHARS = 16_384
# Approval timeouts: at least a minute (the template's MinValue), at most a year (Step Functions'
# longest Standard execution).
# Seconds are allowed (not only the template minimum of a minute) so that a test can watch a timeout.
MIN_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS = 1, 365 * 86_400
# An enterprise limit is stored as a DynamoDB number (at most 38 digits); no hypervisor fleet comes near.
MAX_LIMIT = 10**12

# VM and appliance names: text without control, formatting or line-break characters.
Name = DisplayName
TimeoutSeconds = Annotated[int, Field(ge=MIN_TIMEOUT_SECONDS, le=MAX_TIMEOUT_SECONDS)]
FlowName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,128}$")]


class TaskState(StrEnum):
    """Abiquo's task states, kept verbatim for workflow tools that compare them."""

    QUEUEING = "QUEUEING"  # held for review
    PENDING = "PENDING"  # approved (or never held), the jobs are about to start
    STARTED = "STARTED"
    FINISHED_SUCCESSFULLY = "FINISHED_SUCCESSFULLY"
    FINISHED_UNSUCCESSFULLY = "FINISHED_UNSUCCESSFULLY"
    ABORTED = "ABORTED"  # the jobs could not be started
    CANCELLED = "CANCELLED"
    ACK_ERROR = "ACK_ERROR"  # the hold could not be started, so nobody could review the task

    @property
    def final(self) -> bool:
        return self in FINAL_TASK_STATES


FINAL_TASK_STATES = frozenset(
    {
        TaskState.FINISHED_SUCCESSFULLY,
        TaskState.FINISHED_UNSUCCESSFULLY,
        TaskState.ABORTED,
        TaskState.CANCELLED,
        TaskState.ACK_ERROR,
    }
)


class Operation(StrEnum):
    """What a user asks for; the path segment of `.../action/{op}` and of `.../operations/{op}`."""

    DEPLOY = "deploy"
    UNDEPLOY = "undeploy"
    RECONFIGURE = "reconfigure"

    @property
    def task_type(self) -> TaskType:
        return TaskType(self.value.upper())


class TaskType(StrEnum):
    DEPLOY = "DEPLOY"
    UNDEPLOY = "UNDEPLOY"
    RECONFIGURE = "RECONFIGURE"


class JobType(StrEnum):
    SCHEDULE = "SCHEDULE"
    CONFIGURE = "CONFIGURE"
    POWER_ON = "POWER_ON"
    POWER_OFF = "POWER_OFF"
    DECONFIGURE = "DECONFIGURE"
    RECONFIGURE = "RECONFIGURE"


class JobState(StrEnum):
    PENDING = "PENDING"
    STARTED = "STARTED"
    DONE = "DONE"
    FAILED = "FAILED"
    ABORTED = "ABORTED"
    CANCELLED = "CANCELLED"


class VmState(StrEnum):
    """What a VM shows. Only NOT_ALLOCATED and ON are settled; the others last while a task is active."""

    NOT_ALLOCATED = "NOT_ALLOCATED"
    ON = "ON"
    WAITING_FOR_REVIEW = "WAITING_FOR_REVIEW"
    DEPLOYING = "DEPLOYING"
    UNDEPLOYING = "UNDEPLOYING"
    RECONFIGURING = "RECONFIGURING"


class Decision(StrEnum):
    CONTINUE = "continue"
    CANCEL = "cancel"


class TimeoutAction(StrEnum):
    """What happens to a held task nobody decided in time (Abiquo had none; cancel is the safe default)."""

    CANCEL = "cancel"
    CONTINUE = "continue"


class Target(StrEnum):
    VM = "vm"
    VAPP = "vapp"


class PropertyName(StrEnum):
    """The platform properties of the workflow (Abiquo's names)."""

    ENDPOINT = "client.main.workflowEndPoint"
    ENABLED = "client.main.workflowEnabled"
    SIGNING_SECRET = "client.main.workflowSigningSecret"  # noqa: S105 - a property's name, not a secret


# ---- the task DTO -----------------------------------------------------------------------------------


class Link(BaseModel):
    """A link of the DTO; `href` is a path relative to the API root (`/api`), never a host (seed 002)."""

    rel: str
    href: str


class Job(BaseModel):
    id: str
    parentTaskId: str
    type: JobType
    description: str
    state: JobState
    creationTimestamp: int
    timestamp: int
    # Only a reconfigure's job carries the new size; other jobs leave the keys out rather than send
    # null, whichever serializer (ours, the HTTP layer's) dumps the task.
    cpu: int | None = Field(default=None, exclude_if=lambda v: v is None)
    ram: int | None = Field(default=None, exclude_if=lambda v: v is None)


class JobCollection(BaseModel):
    """Abiquo wraps a task's jobs as `{"collection": [...]}`."""

    collection: list[Job]


class Task(BaseModel):
    """One operation on one VM: Abiquo's task DTO, plus the domain's own fields (never serialised)."""

    taskId: str
    userId: str
    ownerId: str  # the VM the task acts on (Abiquo: the owner entity of the task)
    type: TaskType
    state: TaskState
    timestamp: int  # last change, epoch milliseconds
    creationTimestamp: int  # epoch milliseconds
    jobs: JobCollection
    links: list[Link]
    extradata: dict[str, str] = Field(default_factory=dict)

    # ---- domain fields: excluded from every dump ----
    contract_id: str = Field(exclude=True)
    workspace_id: str = Field(exclude=True)
    vm_name: str = Field(exclude=True)
    operation: Operation = Field(exclude=True)
    request_id: str = Field(exclude=True)
    flow: str = Field(exclude=True)  # the flow bound to the operation when the task was requested
    held: bool = Field(exclude=True)
    cpu: int = Field(exclude=True)  # the VM's size when the task was requested
    ram: int = Field(exclude=True)
    new_cpu: int | None = Field(default=None, exclude=True)  # reconfigure only
    new_ram: int | None = Field(default=None, exclude=True)
    execution_id: str | None = Field(default=None, exclude=True)
    decision: Decision | None = Field(default=None, exclude=True)
    decided_by: str | None = Field(default=None, exclude=True)  # username, or "system" on timeout
    decided_at: int | None = Field(default=None, exclude=True)
    timed_out: bool = Field(default=False, exclude=True)

    @property
    def vm_id(self) -> str:
        return self.ownerId

    def dto(self) -> dict[str, Any]:
        """The wire form: one task as the workflow tool and the API see it."""
        return self.model_dump(mode="json", exclude_none=True)


def collection(tasks: list[Task]) -> dict[str, Any]:
    """Several tasks on the wire: `{"collection": [...]}` (Abiquo's shape)."""
    return {"collection": [t.dto() for t in tasks]}


@dataclass(frozen=True)
class DecisionOutcome:
    """The answer to a continue or cancel: 202 when a continue won (the task is PENDING, its jobs start
    next), 200 when a cancel won or when the same decision was already recorded."""

    status_code: int
    task: Task


class AuditRecord(BaseModel):
    """One attempt to decide a task, whatever its outcome; records are only ever added."""

    at: str
    actor_id: str
    actor: str
    source_ip: str
    decision: str
    message: str | None = None
    status: int
    outcome: str


# ---- resources ---------------------------------------------------------------------------------------


class VirtualMachine(BaseModel):
    id: str
    name: str
    cpu: int
    ram: int
    state: VmState
    workspaceId: str
    virtualApplianceId: str | None = None
    taskId: str | None = None  # the task held or running on it
    links: list[Link] = Field(default_factory=list)


class VirtualAppliance(BaseModel):
    id: str
    name: str
    workspaceId: str
    virtualmachines: list[str]
    links: list[Link] = Field(default_factory=list)


class OperationBinding(BaseModel):
    operation: Operation
    flow: str
    workspaceId: str


class CreateVirtualMachineRequest(BaseModel):
    model_config = STRICT
    name: Name
    cpu: Annotated[int, Field(ge=MIN_CPU, le=MAX_CPU)]
    ram: Annotated[int, Field(ge=MIN_RAM_MB, le=MAX_RAM_MB, description="MB")]


class CreateVirtualApplianceRequest(BaseModel):
    model_config = STRICT
    name: Name
    virtualmachines: Annotated[list[str], Field(min_length=1, max_length=MAX_APPLIANCE_VMS)]

    @field_validator("virtualmachines")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a virtual machine is listed twice")
        return value


class ReconfigureRequest(BaseModel):
    """The body of `.../action/reconfigure`: the new size (a missing field keeps the current value)."""

    model_config = STRICT
    cpu: Annotated[int, Field(ge=MIN_CPU, le=MAX_CPU)] | None = None
    ram: Annotated[int, Field(ge=MIN_RAM_MB, le=MAX_RAM_MB)] | None = None

    @model_validator(mode="after")
    def _something(self) -> ReconfigureRequest:
        if self.cpu is None and self.ram is None:
            raise ValueError("give the new cpu, ram or both")
        return self


class BindOperationRequest(BaseModel):
    model_config = STRICT
    flow: FlowName


# ---- enterprise settings -----------------------------------------------------------------------------


class Limits(BaseModel):
    """Resources an enterprise may use at once (deployed VMs plus those with a deploy under way);
    None is unlimited."""

    model_config = STRICT
    maxVirtualMachines: Annotated[int, Field(ge=0, le=MAX_LIMIT)] | None = None
    maxCpu: Annotated[int, Field(ge=0, le=MAX_LIMIT)] | None = None
    maxRamMb: Annotated[int, Field(ge=0, le=MAX_LIMIT)] | None = None


class EnterpriseSettings(BaseModel):
    """The workflow part of an enterprise (= contract). A PUT is the full representation: a field left
    out takes its default, not its current value (the `GET`, modify, `PUT` of seed 002)."""

    model_config = STRICT
    workflow: bool = False
    limits: Limits = Field(default_factory=Limits)
    approvalTimeoutSeconds: TimeoutSeconds | None = None
    approvalTimeoutAction: TimeoutAction = TimeoutAction.CANCEL


class PutEnterpriseRequest(EnterpriseSettings):
    """`PUT /api/admin/enterprises/{id}`: what `GET` answered, modified. `id` and `name` are read-only
    here (the contract is renamed through the native API) and `links` are ignored."""

    id: str | None = None
    name: str | None = None
    links: list[Link] | None = None


class Enterprise(EnterpriseSettings):
    id: str
    name: str
    links: list[Link] = Field(default_factory=list)


# ---- platform properties -----------------------------------------------------------------------------


class Property(BaseModel):
    """A platform property as listed; a write-only one shows only whether it is set."""

    name: PropertyName
    value: str | None
    writeOnly: bool = False
    isSet: bool


class SetPropertyRequest(BaseModel):
    """`POST /api/config/properties` `{"name", "value"}`; a number or boolean value is read as text."""

    model_config = STRICT
    name: str
    value: str = Field(repr=False)  # may be the webhook signing secret

    @field_validator("value", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, int):
            return str(value)
        return value
