"""Storage models of the workflow context: what its items hold, kept apart from the domain models they
become (flowgate.workflow.models, the task DTO among them).

The use cases read records and ask a store for a change in their own terms; they never see an item,
build one, or write a condition. Each record reads its item (`from_item`); a record of something new
is made by its `new` from the use case's terms, and written by the store (`to_item`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flowgate.clock import epoch_ms, iso_ms
from flowgate.db import Item
from flowgate.workflow import rules
from flowgate.workflow.models import (
    AuditRecord,
    Decision,
    Job,
    JobCollection,
    JobType,
    Operation,
    Task,
    TaskState,
    TimeoutAction,
    VirtualAppliance,
    VirtualMachine,
    VmState,
)
from flowgate.workflow.rules import Usage


def new_id() -> str:
    """A new id of a resource, task, request or audit entry."""
    return str(uuid.uuid4())


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def usage_from(item: Mapping[str, Any] | None) -> Usage:
    if not item:
        return Usage()
    return Usage(int(item.get("vms", 0)), int(item.get("cpu", 0)), int(item.get("ram", 0)))


def usage_item(usage: Usage) -> dict[str, int]:
    return {"vms": usage.vms, "cpu": usage.cpu, "ram": usage.ram}


# ---- resources ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VmRecord:
    id: str
    workspace_id: str
    contract_id: str
    name: str
    cpu: int
    ram: int
    state: VmState
    version: int
    task_id: str | None = None  # the task held or running on it
    vapp_id: str | None = None
    created_at: str = ""
    created_by: str = ""

    @classmethod
    def new(cls, *, wsid: str, cid: str, name: str, cpu: int, ram: int, by: str, at: datetime) -> VmRecord:
        return cls(
            id=new_id(),
            workspace_id=wsid,
            contract_id=cid,
            name=name,
            cpu=cpu,
            ram=ram,
            state=VmState.NOT_ALLOCATED,
            version=1,
            created_at=iso_ms(at),
            created_by=by,
        )

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> VmRecord:
        return cls(
            id=str(item["id"]),
            workspace_id=str(item["workspace_id"]),
            contract_id=str(item["contract_id"]),
            name=str(item["name"]),
            cpu=int(item["cpu"]),
            ram=int(item["ram"]),
            state=VmState(item["state"]),
            version=int(item["version"]),
            task_id=_opt_str(item.get("task_id")),
            vapp_id=_opt_str(item.get("vapp_id")),
            created_at=str(item.get("created_at") or ""),
            created_by=str(item.get("created_by") or ""),
        )

    def to_item(self) -> Item:
        return {
            "id": self.id,
            "workspace_id": self.workspace_id,
            "contract_id": self.contract_id,
            "name": self.name,
            "cpu": self.cpu,
            "ram": self.ram,
            "state": self.state.value,
            "version": self.version,
            "task_id": self.task_id,
            "vapp_id": self.vapp_id,
            "created_at": self.created_at,
            "created_by": self.created_by,
        }

    def model(self) -> VirtualMachine:
        return VirtualMachine(
            id=self.id,
            name=self.name,
            cpu=self.cpu,
            ram=self.ram,
            state=self.state,
            workspaceId=self.workspace_id,
            virtualApplianceId=self.vapp_id,
            taskId=self.task_id,
            links=rules.vm_links(self.workspace_id, self.id, self.task_id),
        )


@dataclass(frozen=True)
class VappRecord:
    id: str
    workspace_id: str
    name: str
    vm_ids: tuple[str, ...]
    created_at: str = ""
    created_by: str = ""

    @classmethod
    def new(cls, *, wsid: str, name: str, vm_ids: list[str], by: str, at: datetime) -> VappRecord:
        return cls(new_id(), wsid, name, tuple(vm_ids), iso_ms(at), by)

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> VappRecord:
        return cls(
            id=str(item["id"]),
            workspace_id=str(item["workspace_id"]),
            name=str(item["name"]),
            vm_ids=tuple(str(v) for v in item["vm_ids"]),
            created_at=str(item.get("created_at") or ""),
            created_by=str(item.get("created_by") or ""),
        )

    def to_item(self) -> Item:
        return {
            "id": self.id,
            "workspace_id": self.workspace_id,
            "name": self.name,
            "vm_ids": list(self.vm_ids),
            "created_at": self.created_at,
            "created_by": self.created_by,
        }

    def model(self) -> VirtualAppliance:
        return VirtualAppliance(
            id=self.id, name=self.name, workspaceId=self.workspace_id, virtualmachines=list(self.vm_ids)
        )


# ---- operation requests and tasks ----------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """One operation request: its tasks (one per VM), and which of them have their hold's token."""

    id: str
    contract_id: str
    task_ids: tuple[str, ...]
    held: bool
    created_at: str
    token_tasks: frozenset[str] = frozenset()
    notified_at: int | None = None

    @property
    def count(self) -> int:
        return len(self.task_ids)

    @property
    def every_hold_reported(self) -> bool:
        """Every task of the request has its hold's token: the workflow tool may hear of them."""
        return len(self.token_tasks) >= self.count

    @classmethod
    def new(cls, *, id: str, cid: str, task_ids: list[str], held: bool, at: datetime) -> RequestRecord:
        return cls(id, cid, tuple(task_ids), held, iso_ms(at))

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> RequestRecord:
        return cls(
            id=str(item["id"]),
            contract_id=str(item["contract_id"]),
            task_ids=tuple(str(t) for t in item["task_ids"]),
            held=bool(item.get("held", False)),
            created_at=str(item.get("created_at") or ""),
            token_tasks=frozenset(str(t) for t in item.get("token_tasks") or ()),
            notified_at=_opt_int(item.get("notified_at")),
        )

    def to_item(self) -> Item:
        return {
            "id": self.id,
            "contract_id": self.contract_id,
            "task_ids": list(self.task_ids),
            "count": self.count,
            "held": self.held,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class JobRecord:
    id: str
    type: JobType
    description: str
    cpu: int | None = None  # a reconfigure's job only: the new size
    ram: int | None = None

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> JobRecord:
        return cls(
            str(item["id"]),
            JobType(item["type"]),
            str(item["description"]),
            _opt_int(item.get("cpu")),
            _opt_int(item.get("ram")),
        )

    def to_item(self) -> Item:
        out: Item = {"id": self.id, "type": self.type.value, "description": self.description}
        if self.cpu is not None:
            out["cpu"] = self.cpu
        if self.ram is not None:
            out["ram"] = self.ram
        return out


@dataclass(frozen=True)
class TaskRecord:
    """A stored task: its request, its VM as it was, what it reserved, how its hold went and who decided."""

    id: str
    contract_id: str
    workspace_id: str
    vm_id: str
    vm_name: str
    user_id: str
    operation: Operation
    state: TaskState
    held: bool
    created_ms: int
    updated_ms: int
    created_at: str
    jobs: tuple[JobRecord, ...]
    request_id: str
    flow: str  # the flow bound to the operation when the task was requested
    cpu: int  # the VM's size when the task was requested
    ram: int
    previous_vm_state: VmState  # where the VM goes back to when the task does not happen
    reserved: Usage  # held against the enterprise's limits while the task is under way
    timeout_seconds: int
    timeout_action: TimeoutAction
    extradata: Mapping[str, str] = field(default_factory=dict)
    vapp_id: str | None = None
    new_cpu: int | None = None
    new_ram: int | None = None
    token: str | None = None  # the hold's task token
    decision: Decision | None = None
    decided_by: str | None = None
    decided_by_id: str | None = None
    decided_at: int | None = None
    timed_out: bool = False
    execution_id: str | None = None  # the execution that runs the jobs
    webhook_ok: bool = False

    @property
    def awaits_jobs(self) -> bool:
        """Approved (or never held) and its jobs not started yet."""
        return self.state == TaskState.PENDING and not self.execution_id

    @property
    def release_decision(self) -> str:
        """What the token call tells the hold: the decision, or "timeout" when nobody decided in time."""
        if self.timed_out:
            return "timeout"
        return self.decision.value if self.decision else Decision.CANCEL.value

    @classmethod
    def new(
        cls,
        *,
        vm: VmRecord,
        vapp_id: str | None,
        user_id: str,
        op: Operation,
        size: tuple[int | None, int | None],
        flow: str,
        request_id: str,
        at: datetime,
        held: bool,
        timeout_seconds: int,
        timeout_action: TimeoutAction,
    ) -> TaskRecord:
        """A task of `op` on `vm`: its jobs as the operation has them (seed 002), held or about to start."""
        new_cpu, new_ram = size
        resized = op == Operation.RECONFIGURE
        jobs = tuple(
            JobRecord(
                new_id(),
                job_type,
                description,
                cpu=(new_cpu if new_cpu is not None else vm.cpu) if resized else None,
                ram=(new_ram if new_ram is not None else vm.ram) if resized else None,
            )
            for job_type, description in rules.JOBS[op]
        )
        ms = epoch_ms(at)
        return cls(
            id=new_id(),
            contract_id=vm.contract_id,
            workspace_id=vm.workspace_id,
            vm_id=vm.id,
            vm_name=vm.name,
            user_id=user_id,
            operation=op,
            state=TaskState.QUEUEING if held else TaskState.PENDING,
            held=held,
            created_ms=ms,
            updated_ms=ms,
            created_at=iso_ms(at),
            jobs=jobs,
            request_id=request_id,
            flow=flow,
            cpu=vm.cpu,
            ram=vm.ram,
            previous_vm_state=vm.state,
            reserved=rules.reservation(op, vm.cpu, vm.ram, new_cpu, new_ram),
            timeout_seconds=timeout_seconds,
            timeout_action=timeout_action,
            vapp_id=vapp_id,
            new_cpu=new_cpu,
            new_ram=new_ram,
        )

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> TaskRecord:
        decision = item.get("decision")
        return cls(
            id=str(item["id"]),
            contract_id=str(item["contract_id"]),
            workspace_id=str(item["workspace_id"]),
            vm_id=str(item["vm_id"]),
            vm_name=str(item["vm_name"]),
            user_id=str(item["user_id"]),
            operation=Operation(item["operation"]),
            state=TaskState(item["state"]),
            held=bool(item.get("held", False)),
            created_ms=int(item["created_ms"]),
            updated_ms=int(item["updated_ms"]),
            created_at=str(item["created_at"]),
            jobs=tuple(JobRecord.from_item(j) for j in item["jobs"]),
            request_id=str(item["request_id"]),
            flow=str(item["flow"]),
            cpu=int(item["cpu"]),
            ram=int(item["ram"]),
            previous_vm_state=VmState(item["previous_vm_state"]),
            reserved=usage_from(item.get("reserved")),
            timeout_seconds=int(item["timeout_seconds"]),
            timeout_action=TimeoutAction(item["timeout_action"]),
            extradata={str(k): str(v) for k, v in (item.get("extradata") or {}).items()},
            vapp_id=_opt_str(item.get("vapp_id")),
            new_cpu=_opt_int(item.get("new_cpu")),
            new_ram=_opt_int(item.get("new_ram")),
            token=_opt_str(item.get("token")),
            decision=Decision(decision) if decision else None,
            decided_by=_opt_str(item.get("decided_by")),
            decided_by_id=_opt_str(item.get("decided_by_id")),
            decided_at=_opt_int(item.get("decided_at")),
            timed_out=bool(item.get("timed_out", False)),
            execution_id=_opt_str(item.get("execution_id")),
            webhook_ok=bool(item.get("webhook_ok", False)),
        )

    def to_item(self) -> Item:
        """The item of a new task (what later writes add, token to webhook, is theirs to write)."""
        return {
            "id": self.id,
            "contract_id": self.contract_id,
            "workspace_id": self.workspace_id,
            "vm_id": self.vm_id,
            "vm_name": self.vm_name,
            "vapp_id": self.vapp_id,
            "user_id": self.user_id,
            "operation": self.operation.value,
            "state": self.state.value,
            "held": self.held,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
            "created_at": self.created_at,
            "jobs": [j.to_item() for j in self.jobs],
            "extradata": dict(self.extradata),
            "request_id": self.request_id,
            "flow": self.flow,
            "cpu": self.cpu,
            "ram": self.ram,
            "new_cpu": self.new_cpu,
            "new_ram": self.new_ram,
            "previous_vm_state": self.previous_vm_state.value,
            "reserved": usage_item(self.reserved),
            "timeout_seconds": self.timeout_seconds,
            "timeout_action": self.timeout_action.value,
        }

    def task(self) -> Task:
        """The domain's task, which is also Abiquo's task DTO."""
        job_state = rules.job_state(self.state)
        jobs = [
            Job(
                id=j.id,
                parentTaskId=self.id,
                type=j.type,
                description=j.description,
                state=job_state,
                creationTimestamp=self.created_ms,
                timestamp=self.updated_ms,
                cpu=j.cpu,
                ram=j.ram,
            )
            for j in self.jobs
        ]
        return Task(
            taskId=self.id,
            userId=self.user_id,
            ownerId=self.vm_id,
            type=self.operation.task_type,
            state=self.state,
            timestamp=self.updated_ms,
            creationTimestamp=self.created_ms,
            jobs=JobCollection(collection=jobs),
            links=rules.task_links(self.id, self.contract_id, self.user_id, self.workspace_id, self.vm_id),
            extradata=dict(self.extradata),
            contract_id=self.contract_id,
            workspace_id=self.workspace_id,
            vm_name=self.vm_name,
            operation=self.operation,
            request_id=self.request_id,
            flow=self.flow,
            held=self.held,
            cpu=self.cpu,
            ram=self.ram,
            new_cpu=self.new_cpu,
            new_ram=self.new_ram,
            execution_id=self.execution_id,
            decision=self.decision,
            decided_by=self.decided_by,
            decided_at=self.decided_at,
            timed_out=self.timed_out,
        )


def task_from(item: Mapping[str, Any]) -> Task:
    """The task DTO of a stored task item."""
    return TaskRecord.from_item(item).task()


# ---- decisions and their audit ---------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What a decision writes on its task: who decided what, when, and the message kept with it."""

    decision: Decision
    by: str  # a username, or rules.SYSTEM
    by_id: str
    at_ms: int
    timed_out: bool = False
    message: str | None = None  # kept in the task's extradata["workflow"]


@dataclass(frozen=True)
class Attempt:
    """One attempt to decide a task, as the audit keeps it, before its outcome is known."""

    actor_id: str
    actor: str
    source_ip: str
    decision: Decision
    message: str | None
    at: str  # iso_ms
    attempt_id: str = field(default_factory=new_id)

    @classmethod
    def now(
        cls,
        actor_id: str,
        actor: str,
        *,
        source_ip: str,
        decision: Decision,
        message: str | None,
        at: datetime,
    ) -> Attempt:
        return cls(actor_id, actor, source_ip, decision, message, iso_ms(at))

    def ended(self, status: int, outcome: str) -> AuditEntry:
        return AuditEntry(self, status, outcome)


@dataclass(frozen=True)
class AuditEntry:
    """An attempt with its outcome (the HTTP status it got); entries are only ever added."""

    attempt: Attempt
    status: int
    outcome: str

    def to_item(self) -> Item:
        a = self.attempt
        return {
            "attempt_id": a.attempt_id,
            "at": a.at,
            "actor_id": a.actor_id,
            "actor": a.actor,
            "source_ip": a.source_ip,
            "decision": a.decision.value,
            "message": a.message,
            "status": self.status,
            "outcome": self.outcome,
        }


def audit_record(item: Mapping[str, Any]) -> AuditRecord:
    return AuditRecord.model_validate({k: v for k, v in item.items() if k in AuditRecord.model_fields})
