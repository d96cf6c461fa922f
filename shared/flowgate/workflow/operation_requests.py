"""Use case: deploy, undeploy or reconfigure a VM or an appliance
(`POST /api/cloud/workspaces/{ws}/virtualmachines/{vm}/action/{op}`, and the same for appliances).

A request creates one task per VM in one transaction that also claims each VM and reserves the
enterprise's resources within its limits. When the platform and the enterprise both have workflow on,
the tasks are held (QUEUEING) and one hold per task is started; the workflow tool hears of them once
every hold has reported its token (flowgate.workflow.announcements). Otherwise the jobs start at once.

Nothing raises once tasks exist: a hold or a jobs start that fails leaves the task in ACK_ERROR or
ABORTED with the reason in its extradata, the VM back where it was and the resources given back.
"""

from __future__ import annotations

from flowgate.clock import Clock, epoch_ms
from flowgate.errors import BadRequest, Conflict, NotFound
from flowgate.identity.ports import Principal, WorkspaceAuthorizer
from flowgate.observability import count, logger
from flowgate.workflow import rules
from flowgate.workflow.common import CHANGE_ATTEMPTS, one_of, operation_of, validated
from flowgate.workflow.jobs import TaskJobs
from flowgate.workflow.models import (
    Decision,
    EnterpriseSettings,
    Operation,
    ReconfigureRequest,
    Target,
    Task,
    TaskState,
    VmState,
)
from flowgate.workflow.ports import FlowLookup, Holds
from flowgate.workflow.rules import SYSTEM, Usage
from flowgate.workflow.store.records import RequestRecord, TaskRecord, Verdict, VmRecord, new_id
from flowgate.workflow.store.resources import ResourceStore
from flowgate.workflow.store.settings import SettingsStore
from flowgate.workflow.store.tasks import TaskStore

DEFAULT_APPROVAL_TIMEOUT_SECONDS = 86_400
LIMITS_RACE = "the enterprise's resource limits would be exceeded by requests made at the same time"


class OperationRequests:
    def __init__(
        self,
        tasks: TaskStore,
        resources: ResourceStore,
        settings: SettingsStore,
        workspaces: WorkspaceAuthorizer,
        flows: FlowLookup,
        *,
        holds: Holds,
        jobs: TaskJobs,
        clock: Clock,
        default_timeout_seconds: int = DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    ) -> None:
        self.tasks = tasks
        self.resources = resources
        self.settings = settings
        self.workspaces = workspaces
        self.flows = flows
        self.holds = holds
        self.jobs = jobs
        self.clock = clock
        self.default_timeout_seconds = default_timeout_seconds

    def request_operation(
        self,
        principal: Principal,
        wsid: str,
        target: str,
        target_id: str,
        op: str,
        *,
        cpu: int | None = None,
        ram: int | None = None,
    ) -> list[Task]:
        """One task per VM of the target, held for review when workflow is on for the platform and the
        enterprise, else started at once."""
        kind = one_of(Target, target, "the target", [t.value for t in Target])
        operation = operation_of(op)
        size = _size(kind, operation, cpu, ram)
        ws = self.workspaces.authorize_workspace(principal, wsid)
        vms, vapp_id = self._target_vms(wsid, kind, target_id)
        for vm in vms:
            rules.check_operation(vm.name, vm.state, vm.task_id, operation)
        flow = self._bound_flow(wsid, operation)
        settings = self.settings.get_enterprise(ws.contract_id).settings
        held = self.settings.get_platform().workflow_on and settings.workflow
        reserve, caps = self._reserve(ws.contract_id, settings, operation, vms, size)
        now = self.clock()
        request_id = new_id()
        timeout = settings.approvalTimeoutSeconds or self.default_timeout_seconds
        tasks = [
            TaskRecord.new(
                vm=vm,
                vapp_id=vapp_id,
                user_id=principal.user_id,
                op=operation,
                size=size,
                flow=flow,
                request_id=request_id,
                at=now,
                held=held,
                timeout_seconds=timeout,
                timeout_action=settings.approvalTimeoutAction,
            )
            for vm in vms
        ]
        request = RequestRecord.new(
            id=request_id, cid=ws.contract_id, task_ids=[t.id for t in tasks], held=held, at=now
        )
        vm_state = VmState.WAITING_FOR_REVIEW if held else rules.RUNNING_STATE[operation]
        self.tasks.create_request(
            request, tasks, vms, vm_state=vm_state, reserve=reserve, caps=caps, limits_conflict=LIMITS_RACE
        )
        logger.info(
            "operation requested",
            extra={"request_id": request.id, "operation": operation.value, "tasks": len(tasks), "held": held},
        )
        if held:
            return self._hold(tasks)
        return [self.jobs.start(t) for t in tasks]

    def _target_vms(self, wsid: str, kind: Target, target_id: str) -> tuple[list[VmRecord], str | None]:
        if kind == Target.VM:
            vm = self.resources.get_vm(wsid, target_id)
            if vm is None:
                raise NotFound("virtual machine not found")
            return [vm], vm.vapp_id
        vapp = self.resources.get_vapp(wsid, target_id)
        if vapp is None:
            raise NotFound("virtual appliance not found")
        vms = self.resources.get_vms(wsid, vapp.vm_ids)
        if len(vms) != len(vapp.vm_ids):
            raise Conflict("a virtual machine of the appliance no longer exists", code="appliance_incomplete")
        return vms, vapp.id

    def _bound_flow(self, wsid: str, op: Operation) -> str:
        flow = self.resources.get_binding(wsid, op)
        if flow is None:
            raise Conflict(f"bind a flow to {op.value} first", code="operation_not_bound")
        if not self.flows.flow_exists(wsid, flow):
            raise Conflict(
                f"the flow '{flow}' bound to {op.value} no longer exists; bind a flow to {op.value} first",
                code="operation_not_bound",
            )
        return flow

    def _reserve(
        self,
        cid: str,
        settings: EnterpriseSettings,
        op: Operation,
        vms: list[VmRecord],
        size: tuple[int | None, int | None],
    ) -> tuple[Usage, dict[str, int]]:
        """What the request reserves and the caps its conditional write checks. Usage is read only to
        word the refusal; the write's condition is what enforces the limits."""
        reserve = Usage()
        for vm in vms:
            reserve += rules.reservation(op, vm.cpu, vm.ram, *size)
        caps = rules.limit_caps(settings.limits, reserve)
        if caps:
            violations = rules.limit_violations(settings.limits, self.settings.get_usage(cid), reserve)
            if violations:
                raise rules.limits_refusal(violations)
        return reserve, caps

    def _hold(self, tasks: list[TaskRecord]) -> list[Task]:
        """Start one hold per task. If one cannot start, nobody could review the request: every task of
        it ends in ACK_ERROR (the holds that did start are released when their tokens arrive)."""
        for task in tasks:
            try:
                self.holds.hold(task.id, task.request_id, task.timeout_seconds)
            except Exception as exc:
                logger.exception("could not hold a task for review", extra={"task_id": task.id})
                reason = f"ACK_ERROR: the task could not be held for review ({type(exc).__name__})"
                for other in tasks:
                    self._unheld(other.id, reason)
                return [t.task() for t in self.tasks.get_many([t.id for t in tasks])]
        count("ApprovalsHeld", len(tasks))
        return [t.task() for t in tasks]

    def _unheld(self, task_id: str, reason: str) -> None:
        """End a held task without anyone's decision (its request's hold could not start): ACK_ERROR."""
        for _ in range(CHANGE_ATTEMPTS):
            record = self.tasks.get(task_id)
            if record is None or record.decision or record.state != TaskState.QUEUEING:
                return
            verdict = Verdict(Decision.CANCEL, SYSTEM, SYSTEM, epoch_ms(self.clock()), message=reason)
            try:
                self.tasks.leave_queue(
                    record,
                    TaskState.ACK_ERROR,
                    verdict,
                    vm_state=record.previous_vm_state,
                    vm_task_kept=False,
                    release=record.reserved,
                    audit=None,
                )
            except Conflict:
                continue
            if record.token:
                self.holds.release(record.token, Decision.CANCEL.value)
            return


def _size(kind: Target, op: Operation, cpu: int | None, ram: int | None) -> tuple[int | None, int | None]:
    if op != Operation.RECONFIGURE:
        if cpu is not None or ram is not None:
            raise BadRequest("only reconfigure takes cpu and ram", code="invalid_request")
        return None, None
    if kind == Target.VAPP:
        raise BadRequest("reconfigure one virtual machine at a time", code="invalid_request")
    body = validated(ReconfigureRequest, {"cpu": cpu, "ram": ram})
    return body.cpu, body.ram
