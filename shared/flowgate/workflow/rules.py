"""The pure rules of the approval workflow: which operation a VM allows, what it reserves against the
enterprise's limits, who may decide or read a task, and the links a task carries. No I/O here, so each
rule is unit-tested on its own and the service only sequences reads, rules and conditional writes.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from flowgate.clock import iso_of_ms
from flowgate.errors import BadRequest, Conflict, Forbidden, NotFound
from flowgate.identity.ports import Principal, Privilege
from flowgate.workflow.models import (
    Decision,
    JobState,
    JobType,
    Limits,
    Link,
    Operation,
    TaskState,
    TimeoutAction,
    VmState,
)

HELD_TASK = "a held task cannot be modified, only continued or cancelled"
SYSTEM = "system"  # who decides when the approval times out

# The jobs of each operation, in order (seed 002: deploy = schedule, configure, power on).
JOBS: dict[Operation, tuple[tuple[JobType, str], ...]] = {
    Operation.DEPLOY: (
        (JobType.SCHEDULE, "choose a host for the virtual machine"),
        (JobType.CONFIGURE, "configure the virtual machine on its host"),
        (JobType.POWER_ON, "power the virtual machine on"),
    ),
    Operation.UNDEPLOY: (
        (JobType.POWER_OFF, "power the virtual machine off"),
        (JobType.DECONFIGURE, "remove the virtual machine from its host"),
    ),
    Operation.RECONFIGURE: ((JobType.RECONFIGURE, "apply the new size to the virtual machine"),),
}

REQUIRED_STATE = {
    Operation.DEPLOY: VmState.NOT_ALLOCATED,
    Operation.UNDEPLOY: VmState.ON,
    Operation.RECONFIGURE: VmState.ON,
}
RUNNING_STATE = {
    Operation.DEPLOY: VmState.DEPLOYING,
    Operation.UNDEPLOY: VmState.UNDEPLOYING,
    Operation.RECONFIGURE: VmState.RECONFIGURING,
}
STATE_AFTER_SUCCESS = {
    Operation.DEPLOY: VmState.ON,
    Operation.UNDEPLOY: VmState.NOT_ALLOCATED,
    Operation.RECONFIGURE: VmState.ON,
}

_JOB_STATE = {
    TaskState.QUEUEING: JobState.PENDING,
    TaskState.PENDING: JobState.PENDING,
    TaskState.STARTED: JobState.STARTED,
    TaskState.FINISHED_SUCCESSFULLY: JobState.DONE,
    TaskState.FINISHED_UNSUCCESSFULLY: JobState.FAILED,
    TaskState.ABORTED: JobState.ABORTED,
    TaskState.CANCELLED: JobState.CANCELLED,
    TaskState.ACK_ERROR: JobState.CANCELLED,
}


# ---- operations on a VM -------------------------------------------------------------------------------


def check_operation(vm_name: str, state: VmState, task_id: str | None, op: Operation) -> None:
    """409 unless the VM may take `op` now: one task at a time, and deploy only from NOT_ALLOCATED,
    undeploy and reconfigure only from ON."""
    if task_id is not None or state == VmState.WAITING_FOR_REVIEW:
        if state == VmState.WAITING_FOR_REVIEW:
            raise Conflict(f"{HELD_TASK} (virtual machine '{vm_name}', task {task_id})", code="task_held")
        raise Conflict(
            f"the virtual machine '{vm_name}' is busy with task {task_id} ({state.value}); wait for its end",
            code="vm_busy",
        )
    required = REQUIRED_STATE[op]
    if state != required:
        raise Conflict(
            f"cannot {op.value} the virtual machine '{vm_name}': it is {state.value}, "
            f"and {op.value} needs {required.value}",
            code="invalid_vm_state",
        )


def job_state(state: TaskState) -> JobState:
    """Jobs move with their task (the bound flow runs them as one), so their state is derived."""
    return _JOB_STATE[state]


# ---- limits ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """Resources counted against an enterprise's limits: deployed VMs and VMs with a deploy under way."""

    vms: int = 0
    cpu: int = 0
    ram: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.vms + other.vms, self.cpu + other.cpu, self.ram + other.ram)

    def __neg__(self) -> Usage:
        return Usage(-self.vms, -self.cpu, -self.ram)

    @property
    def zero(self) -> bool:
        return self == Usage()


def reservation(op: Operation, cpu: int, ram: int, new_cpu: int | None, new_ram: int | None) -> Usage:
    """What a request holds against the limits from the moment it is made: a deploy its whole VM, a
    reconfigure only the growth (a shrink is given back when it has happened, not before), an undeploy
    nothing (it frees resources when it has happened)."""
    if op == Operation.DEPLOY:
        return Usage(1, cpu, ram)
    if op == Operation.RECONFIGURE:
        return Usage(0, max((new_cpu or cpu) - cpu, 0), max((new_ram or ram) - ram, 0))
    return Usage()


def given_back_on_success(
    op: Operation, cpu: int, ram: int, new_cpu: int | None, new_ram: int | None
) -> Usage:
    """What a successful task frees: an undeploy the whole VM, a reconfigure its shrink."""
    if op == Operation.UNDEPLOY:
        return Usage(1, cpu, ram)
    if op == Operation.RECONFIGURE:
        return Usage(0, max(cpu - (new_cpu or cpu), 0), max(ram - (new_ram or ram), 0))
    return Usage()


_DIMENSIONS = (
    ("maxVirtualMachines", "vms", "virtual machines"),
    ("maxCpu", "cpu", "CPUs"),
    ("maxRamMb", "ram", "MB of RAM"),
)


def limit_violations(limits: Limits, in_use: Usage, wanted: Usage) -> list[str]:
    """One sentence per limit the request would exceed (empty when it fits)."""
    out = []
    for limit_name, attr, unit in _DIMENSIONS:
        limit: int | None = getattr(limits, limit_name)
        used, more = getattr(in_use, attr), getattr(wanted, attr)
        if limit is not None and more > 0 and used + more > limit:
            out.append(
                f"{limit_name} is {limit} and {used} {unit} are in use or reserved, {more} more requested"
            )
    return out


def limit_caps(limits: Limits, wanted: Usage) -> dict[str, int]:
    """For the conditional reservation: per usage attribute, the most that may be in use before adding
    `wanted` (DynamoDB conditions cannot add, so `used + more <= limit` becomes `used <= limit - more`).
    Only dimensions that grow and are limited are checked."""
    caps = {}
    for limit_name, attr, _ in _DIMENSIONS:
        limit: int | None = getattr(limits, limit_name)
        more = getattr(wanted, attr)
        if limit is not None and more > 0:
            caps[attr] = limit - more
    return caps


def limits_refusal(violations: list[str]) -> Conflict:
    return Conflict(
        "the enterprise's resource limits would be exceeded: " + "; ".join(violations), code="limit_exceeded"
    )


# ---- who may do what --------------------------------------------------------------------------------


def _overrides(principal: Principal) -> bool:
    return Privilege.WORKFLOW_OVERRIDE in principal.privileges


def _outside(principal: Principal, contract_id: str) -> bool:
    return not principal.platform_admin and principal.contract_id != contract_id


def check_decision(principal: Principal, contract_id: str, user_id: str, decision: Decision) -> None:
    """Seed 002: members of the task's enterprise holding WORKFLOW_OVERRIDE continue or cancel; the
    task's own user may cancel, never continue. Another enterprise does not see the task (404)."""
    if _outside(principal, contract_id):
        raise NotFound("task not found")
    if _overrides(principal):
        return
    if principal.user_id == user_id:
        if decision == Decision.CANCEL:
            return
        raise Forbidden("you may cancel your own task; continuing it needs the WORKFLOW_OVERRIDE privilege")
    raise Forbidden("deciding another user's task needs the WORKFLOW_OVERRIDE privilege")


def may_oversee(principal: Principal, contract_id: str) -> bool:
    """Enterprise-wide view of held tasks: WORKFLOW_OVERRIDE holders and tenant admins."""
    if principal.platform_admin:
        return True
    return principal.contract_id == contract_id and (_overrides(principal) or principal.is_contract_admin)


def check_oversight(principal: Principal, contract_id: str, user_id: str | None = None) -> None:
    """The pending-task listings: enterprise-wide for overseers, per user also for that user."""
    if _outside(principal, contract_id):
        raise NotFound("enterprise not found")
    if may_oversee(principal, contract_id) or (user_id is not None and principal.user_id == user_id):
        return
    if user_id is None:
        raise Forbidden(
            "listing the enterprise's pending tasks needs WORKFLOW_OVERRIDE or a tenant admin role"
        )
    raise Forbidden("only the user, WORKFLOW_OVERRIDE holders and tenant admins list a user's pending tasks")


# ---- links --------------------------------------------------------------------------------------------


def task_links(task_id: str, contract_id: str, user_id: str, workspace_id: str, vm_id: str) -> list[Link]:
    """Paths relative to the API root: Abiquo may sit behind a proxy whose host it does not know, so the
    tool joins them to its own `<api_location>`."""
    return [
        Link(rel="user", href=f"admin/enterprises/{contract_id}/users/{user_id}"),
        Link(rel="target", href=vm_path(workspace_id, vm_id)),
        Link(rel="continue", href=f"object/task/{task_id}/action/continue"),
        Link(rel="cancel", href=f"object/task/{task_id}/action/cancel"),
    ]


def vm_path(workspace_id: str, vm_id: str) -> str:
    return f"cloud/workspaces/{workspace_id}/virtualmachines/{vm_id}"


def vm_links(workspace_id: str, vm_id: str, task_id: str | None) -> list[Link]:
    links = [Link(rel="edit", href=vm_path(workspace_id, vm_id))]
    if task_id:
        links.append(Link(rel="task", href=f"object/task/{task_id}"))
    return links


# ---- messages ---------------------------------------------------------------------------------------


_PAST = {Decision.CONTINUE: "continued", Decision.CANCEL: "cancelled"}


def timeout_reason(action: TimeoutAction, seconds: int) -> str:
    return f"TIMED_OUT: {action.value} after {seconds}s"


def already_decided(decided: Decision, by: str, at_ms: int, timed_out: bool, wanted: Decision) -> str:
    """The 410 of a link whose task was decided the other way: what was decided, and when."""
    how = "when its approval timed out" if timed_out else f"by {by}"
    return (
        f"the task was already {_PAST[decided]} {how} at {iso_of_ms(at_ms)}; "
        f"it can no longer be {_PAST[wanted]}"
    )


def check_signing_secret(value: str) -> None:
    """Standard Webhooks secrets are `whsec_` + base64 of 24 to 64 random bytes."""
    prefix = "whsec_"
    if not value.startswith(prefix):
        raise BadRequest("the signing secret must look like whsec_<base64>", code="invalid_property")
    try:
        raw = base64.b64decode(value[len(prefix) :], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(
            "the signing secret must look like whsec_<base64>", code="invalid_property"
        ) from None
    if not 24 <= len(raw) <= 64:
        raise BadRequest("the signing secret must hold 24 to 64 random bytes", code="invalid_property")
