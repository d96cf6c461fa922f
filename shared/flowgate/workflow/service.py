"""Use cases of the approval workflow (seed 002, DESIGN §3.3), each authorized here.

Tenancy follows the identity context: a caller outside the resource's enterprise gets 404, a caller
inside it without the right gets 403.

A request for deploy, undeploy or reconfigure creates one task per VM in one transaction that also
claims each VM and reserves the enterprise's resources within its limits. When the platform and the
enterprise both have workflow on, the tasks are held (QUEUEING) and one hold per task is started; the
workflow tool hears of them once every hold has reported its token (`record_token`). A decision is
one conditional write that only a QUEUEING, undecided task with the token as read can take, so of
concurrent continue and cancel exactly one wins; only the winner sends the token call, and a decision
that lands before the hold's token is released by `record_token` when the token arrives.

Nothing raises once tasks exist: a hold or a jobs start that fails leaves the task in ACK_ERROR or
ABORTED with the reason in its extradata, the VM back where it was and the resources given back.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from flowgate.clock import Clock, epoch_ms, iso_ms, now
from flowgate.db import Item
from flowgate.errors import BadRequest, Conflict, FlowgateError, Forbidden, Gone, NotFound, PayloadTooLarge
from flowgate.identity.ports import Contract, Directory, Principal, WorkspaceAuthorizer
from flowgate.observability import logger
from flowgate.url_guard import OutboundPolicy, check_url
from flowgate.workflow import rules
from flowgate.workflow.models import (
    MAX_MESSAGE_CHARS,
    AuditRecord,
    BindOperationRequest,
    CreateVirtualApplianceRequest,
    CreateVirtualMachineRequest,
    Decision,
    DecisionOutcome,
    Enterprise,
    EnterpriseSettings,
    Operation,
    OperationBinding,
    Property,
    PropertyName,
    PutEnterpriseRequest,
    ReconfigureRequest,
    Target,
    Task,
    TaskState,
    TaskType,
    TimeoutAction,
    VirtualAppliance,
    VirtualMachine,
    VmState,
)
from flowgate.workflow.ports import FlowLookup, Holds, Jobs
from flowgate.workflow.rules import SYSTEM, Usage
from flowgate.workflow.store import WorkflowStore, task_from, usage_from, vapp_from, vm_from

M = TypeVar("M", bound=BaseModel)

DEFAULT_APPROVAL_TIMEOUT_SECONDS = 86_400
# A decision re-reads and retries this often when the task changed between its read and its write
# (a token arrived, another decision won) before answering 409.
# Longer than the workflow function's timeout: a won continue still PENDING after this lost its runner.
FOLLOW_THROUGH_LEASE_MS = 60_000
DECIDE_ATTEMPTS = 4
MAX_LIST_LIMIT = 100
MAX_AUDIT_RECORDS = 500
MAX_REASON_CHARS = 1_000


def _validated(model: type[M], data: Any) -> M:
    """A request model from plain data, with pydantic's complaint turned into a 400."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()
        )
        raise BadRequest(detail or "invalid request", code="invalid_request") from None


def _enum(kind: Callable[[str], Any], value: Any, what: str, choices: Iterable[str]) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise BadRequest(f"{what} must be one of {', '.join(choices)}", code="invalid_request") from None


def _applied(item: Mapping[str, Any], changes: Mapping[str, Any]) -> Item:
    """`item` as it is after a write of `changes` (dotted keys set one entry of a map)."""
    out = dict(item)
    for key, value in changes.items():
        top, _, sub = key.partition(".")
        if sub:
            out[top] = {**(out.get(top) or {}), sub: value}
        else:
            out[key] = value
    return out


def _reserved(item: Mapping[str, Any]) -> Usage:
    return usage_from(item.get("reserved"))


def _short(text: str | None) -> str:
    return (text or "")[:MAX_REASON_CHARS]


class WorkflowService:
    def __init__(
        self,
        store: WorkflowStore,
        workspaces: WorkspaceAuthorizer,
        directory: Directory,
        flows: FlowLookup,
        *,
        holds: Holds,
        jobs: Jobs,
        outbound_policy: OutboundPolicy,
        default_timeout_seconds: int = DEFAULT_APPROVAL_TIMEOUT_SECONDS,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.workspaces = workspaces
        self.directory = directory
        self.flows = flows
        self.holds = holds
        self.jobs = jobs
        self.outbound_policy = outbound_policy
        self.default_timeout_seconds = default_timeout_seconds
        self._clock = clock or now

    def _now_ms(self) -> int:
        return epoch_ms(self._clock())

    # ---- virtual machines and appliances ---------------------------------------------------------
    def create_virtual_machine(
        self, principal: Principal, wsid: str, request: CreateVirtualMachineRequest | Mapping[str, Any]
    ) -> VirtualMachine:
        body = _validated(CreateVirtualMachineRequest, request)
        ws = self.workspaces.authorize_workspace(principal, wsid)
        item = {
            "id": str(uuid.uuid4()),
            "workspace_id": wsid,
            "contract_id": ws.contract_id,
            "name": body.name,
            "cpu": body.cpu,
            "ram": body.ram,
            "state": VmState.NOT_ALLOCATED.value,
            "version": 1,
            "created_at": iso_ms(self._clock()),
            "created_by": principal.user_id,
        }
        self.store.create_vm(item, self.directory.workspace_exists(wsid))
        return vm_from(item)

    def get_virtual_machine(self, principal: Principal, wsid: str, vm_id: str) -> VirtualMachine:
        self.workspaces.authorize_workspace(principal, wsid)
        item = self.store.get_vm(wsid, vm_id)
        if item is None:
            raise NotFound("virtual machine not found")
        return vm_from(item)

    def list_virtual_machines(
        self, principal: Principal, wsid: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[VirtualMachine], str | None]:
        self.workspaces.authorize_workspace(principal, wsid)
        page = self.store.list_vms(wsid, _limit(limit), cursor)
        return [vm_from(i) for i in page.items], page.next

    def create_virtual_appliance(
        self, principal: Principal, wsid: str, request: CreateVirtualApplianceRequest | Mapping[str, Any]
    ) -> VirtualAppliance:
        body = _validated(CreateVirtualApplianceRequest, request)
        self.workspaces.authorize_workspace(principal, wsid)
        found = {v["id"] for v in self.store.get_vms(wsid, body.virtualmachines)}
        missing = [v for v in body.virtualmachines if v not in found]
        if missing:
            raise BadRequest(
                f"no virtual machine {', '.join(missing)} in this workspace", code="unknown_virtual_machine"
            )
        item = {
            "id": str(uuid.uuid4()),
            "workspace_id": wsid,
            "name": body.name,
            "vm_ids": body.virtualmachines,
            "created_at": iso_ms(self._clock()),
            "created_by": principal.user_id,
        }
        self.store.create_vapp(item)
        return vapp_from(item)

    def get_virtual_appliance(self, principal: Principal, wsid: str, vapp_id: str) -> VirtualAppliance:
        self.workspaces.authorize_workspace(principal, wsid)
        item = self.store.get_vapp(wsid, vapp_id)
        if item is None:
            raise NotFound("virtual appliance not found")
        return vapp_from(item)

    def list_virtual_appliances(
        self, principal: Principal, wsid: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[VirtualAppliance], str | None]:
        self.workspaces.authorize_workspace(principal, wsid)
        page = self.store.list_vapps(wsid, _limit(limit), cursor)
        return [vapp_from(i) for i in page.items], page.next

    # ---- operation bindings ----------------------------------------------------------------------
    def bind_operation(self, principal: Principal, wsid: str, op: str, flow: str) -> OperationBinding:
        """The flow that runs an operation's jobs in this workspace (workspace owners choose it)."""
        operation = _operation(op)
        name = _validated(BindOperationRequest, {"flow": flow}).flow
        self.workspaces.authorize_workspace(principal, wsid, manage=True)
        if not self.flows.flow_exists(wsid, name):
            raise NotFound(f"flow '{name}' not found")
        self.store.put_binding(
            wsid,
            operation,
            {"flow": name, "updated_by": principal.user_id, "updated_at": iso_ms(self._clock())},
        )
        return OperationBinding(operation=operation, flow=name, workspaceId=wsid)

    def get_binding(self, principal: Principal, wsid: str, op: str) -> OperationBinding:
        operation = _operation(op)
        self.workspaces.authorize_workspace(principal, wsid)
        item = self.store.get_binding(wsid, operation)
        if item is None:
            raise NotFound(f"no flow is bound to {operation.value}")
        return OperationBinding(operation=operation, flow=item["flow"], workspaceId=wsid)

    # ---- enterprise settings ---------------------------------------------------------------------
    def _contract(self, principal: Principal, cid: str) -> Contract:
        contract = self.directory.find_contract(cid)
        if contract is None or not (principal.platform_admin or principal.contract_id == cid):
            raise NotFound("enterprise not found")
        return contract

    def _settings(self, cid: str) -> tuple[EnterpriseSettings, int | None]:
        item = self.store.get_enterprise(cid)
        if item is None:
            return EnterpriseSettings(), None
        return EnterpriseSettings.model_validate(item["settings"]), int(item["version"])

    def get_enterprise(self, principal: Principal, cid: str) -> Enterprise:
        contract = self._contract(principal, cid)
        settings, _ = self._settings(cid)
        return _enterprise(contract, settings)

    def put_enterprise(
        self, principal: Principal, cid: str, body: PutEnterpriseRequest | Mapping[str, Any]
    ) -> Enterprise:
        """Replace the enterprise's workflow settings with the full representation sent."""
        request = _validated(PutEnterpriseRequest, body)
        contract = self._contract(principal, cid)
        if not principal.is_contract_admin:
            raise Forbidden("only the platform admin, the enterprise's owner or an org admin changes it")
        if request.id is not None and request.id != cid:
            raise BadRequest("the body's id is not this enterprise's", code="invalid_request")
        if request.name is not None and request.name != contract.name:
            raise BadRequest(
                "the enterprise's name is changed through the contract (/api/latest/contracts/{id})",
                code="read_only_field",
            )
        settings = EnterpriseSettings.model_validate(
            request.model_dump(include=set(EnterpriseSettings.model_fields))
        )
        _, version = self._settings(cid)
        self.store.put_enterprise(
            cid,
            {
                "settings": settings.model_dump(mode="json"),
                "updated_by": principal.user_id,
                "updated_at": iso_ms(self._clock()),
            },
            version,
        )
        return _enterprise(contract, settings)

    # ---- platform properties ---------------------------------------------------------------------
    def set_property(self, principal: Principal, name: str, value: str) -> Property:
        """Seed 002's `POST /api/config/properties`: endpoint first, then enabled (enabling with no
        endpoint is refused, and so is removing the endpoint while enabled; both checks are conditions
        of the write, so two admins cannot interleave past them)."""
        if not principal.platform_admin:
            raise Forbidden("only the platform admin sets platform properties")
        prop = _enum(PropertyName, name, "the property", [p.value for p in PropertyName])
        text = value.strip()
        stamp = {"updated_at": iso_ms(self._clock()), "updated_by": principal.user_id}
        if prop == PropertyName.ENDPOINT:
            self._set_endpoint(text, stamp)
        elif prop == PropertyName.ENABLED:
            if text not in ("0", "1"):
                raise BadRequest(f"{prop.value} is 0 or 1", code="invalid_property")
            condition = "attribute_exists(endpoint)" if text == "1" else None
            if not self.store.update_platform({"enabled": text, **stamp}, [], condition=condition):
                raise BadRequest(
                    f"set {PropertyName.ENDPOINT.value} before enabling workflow",
                    code="workflow_endpoint_missing",
                )
        elif text:
            rules.check_signing_secret(text)
            self.store.update_platform({"signing_secret": text, **stamp}, [])
        else:
            self.store.update_platform(stamp, ["signing_secret"])
        return next(p for p in self._properties() if p.name == prop)

    def _set_endpoint(self, url: str, stamp: Mapping[str, Any]) -> None:
        if not url:
            removed = self.store.update_platform(
                stamp, ["endpoint"], condition="attribute_not_exists(enabled) OR enabled = :zero", zero="0"
            )
            if not removed:
                raise BadRequest(
                    f"set {PropertyName.ENABLED.value} to 0 before removing the workflow endpoint",
                    code="workflow_enabled",
                )
            return
        check_url(url, self.outbound_policy)
        self.store.update_platform({"endpoint": url, **stamp}, [])

    def list_properties(self, principal: Principal) -> list[Property]:
        """The workflow properties; the signing secret only as set or not (it is write-only)."""
        del principal  # every authenticated caller may read them: the UI needs to know if workflow is on
        return self._properties()

    def _properties(self) -> list[Property]:
        item = self.store.get_platform()
        endpoint, enabled = item.get("endpoint"), item.get("enabled", "0")
        return [
            Property(name=PropertyName.ENDPOINT, value=endpoint, isSet=bool(endpoint)),
            Property(name=PropertyName.ENABLED, value=enabled, isSet=True),
            Property(
                name=PropertyName.SIGNING_SECRET,
                value=None,
                writeOnly=True,
                isSet=bool(item.get("signing_secret")),
            ),
        ]

    def notification_target(self) -> str | None:
        """Where held tasks are announced (also after workflow was switched off: they still wait)."""
        endpoint = self.store.get_platform().get("endpoint")
        return str(endpoint) if endpoint else None

    def signing_secret(self) -> str | None:
        """The webhook signing secret the platform admin chose, for the notifier only."""
        secret = self.store.get_platform().get("signing_secret")
        return str(secret) if secret else None

    # ---- operation requests ----------------------------------------------------------------------
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
        """Deploy, undeploy or reconfigure a VM or an appliance: one task per VM, held for review when
        workflow is on for the platform and the enterprise, else started at once."""
        kind = _enum(Target, target, "the target", [t.value for t in Target])
        operation = _operation(op)
        size = self._size(kind, operation, cpu, ram)
        ws = self.workspaces.authorize_workspace(principal, wsid)
        vms, vapp_id = self._target_vms(wsid, kind, target_id)
        for vm in vms:
            rules.check_operation(vm["name"], VmState(vm["state"]), vm.get("task_id"), operation)
        flow = self._bound_flow(wsid, operation)
        settings, _ = self._settings(ws.contract_id)
        platform = self.store.get_platform()
        held = bool(platform.get("enabled") == "1" and platform.get("endpoint") and settings.workflow)
        reserve, caps, refusal = self._reserve(ws.contract_id, settings, operation, vms, size)
        now = self._clock()
        request_id = str(uuid.uuid4())
        timeout = settings.approvalTimeoutSeconds or self.default_timeout_seconds
        tasks = [
            self._new_task(
                principal,
                vm=vm,
                vapp_id=vapp_id,
                op=operation,
                size=size,
                flow=flow,
                request_id=request_id,
                now=now,
                held=held,
                timeout=timeout,
                settings=settings,
            )
            for vm in vms
        ]
        request = {
            "id": request_id,
            "contract_id": ws.contract_id,
            "task_ids": [t["id"] for t in tasks],
            "count": len(tasks),
            "held": held,
            "created_at": iso_ms(now),
        }
        vm_state = VmState.WAITING_FOR_REVIEW if held else rules.RUNNING_STATE[operation]
        self.store.create_request(
            request, tasks, vms, vm_state=vm_state, reserve=reserve, caps=caps, limits_conflict=refusal
        )
        logger.info(
            "operation requested",
            extra={"request_id": request_id, "operation": operation.value, "tasks": len(tasks), "held": held},
        )
        if held:
            return self._hold(tasks, timeout)
        return [self._start_jobs(t) for t in tasks]

    @staticmethod
    def _size(kind: Target, op: Operation, cpu: int | None, ram: int | None) -> tuple[int | None, int | None]:
        if op != Operation.RECONFIGURE:
            if cpu is not None or ram is not None:
                raise BadRequest("only reconfigure takes cpu and ram", code="invalid_request")
            return None, None
        if kind == Target.VAPP:
            raise BadRequest("reconfigure one virtual machine at a time", code="invalid_request")
        body = _validated(ReconfigureRequest, {"cpu": cpu, "ram": ram})
        return body.cpu, body.ram

    def _target_vms(self, wsid: str, kind: Target, target_id: str) -> tuple[list[Item], str | None]:
        if kind == Target.VM:
            vm = self.store.get_vm(wsid, target_id)
            if vm is None:
                raise NotFound("virtual machine not found")
            return [vm], vm.get("vapp_id")
        vapp = self.store.get_vapp(wsid, target_id)
        if vapp is None:
            raise NotFound("virtual appliance not found")
        vms = self.store.get_vms(wsid, vapp["vm_ids"])
        if len(vms) != len(vapp["vm_ids"]):
            raise Conflict("a virtual machine of the appliance no longer exists", code="appliance_incomplete")
        return vms, vapp["id"]

    def _bound_flow(self, wsid: str, op: Operation) -> str:
        binding = self.store.get_binding(wsid, op)
        if binding is None:
            raise Conflict(f"bind a flow to {op.value} first", code="operation_not_bound")
        if not self.flows.flow_exists(wsid, binding["flow"]):
            raise Conflict(
                f"the flow '{binding['flow']}' bound to {op.value} no longer exists; "
                f"bind a flow to {op.value} first",
                code="operation_not_bound",
            )
        return str(binding["flow"])

    def _reserve(
        self,
        cid: str,
        settings: EnterpriseSettings,
        op: Operation,
        vms: list[Item],
        size: tuple[int | None, int | None],
    ) -> tuple[Usage, dict[str, int], str]:
        """What the request reserves, the caps its conditional write checks, and its 409's message.
        Usage is read only to word the refusal; the write's condition is what enforces the limits."""
        reserve = Usage()
        for vm in vms:
            reserve += rules.reservation(op, vm["cpu"], vm["ram"], *size)
        caps = rules.limit_caps(settings.limits, reserve)
        refusal = "the enterprise's resource limits would be exceeded by requests made at the same time"
        if caps:
            violations = rules.limit_violations(settings.limits, self.store.get_usage(cid), reserve)
            if violations:
                raise rules.limits_refusal(violations)
        return reserve, caps, refusal

    def _new_task(
        self,
        principal: Principal,
        *,
        vm: Item,
        vapp_id: str | None,
        op: Operation,
        size: tuple[int | None, int | None],
        flow: str,
        request_id: str,
        now: datetime,
        held: bool,
        timeout: int,
        settings: EnterpriseSettings,
    ) -> Item:
        task_id = str(uuid.uuid4())
        new_cpu, new_ram = size
        jobs = []
        for job_type, description in rules.JOBS[op]:
            job: dict[str, Any] = {
                "id": str(uuid.uuid4()),
                "type": job_type.value,
                "description": description,
            }
            if op == Operation.RECONFIGURE:
                job["cpu"] = new_cpu if new_cpu is not None else vm["cpu"]
                job["ram"] = new_ram if new_ram is not None else vm["ram"]
            jobs.append(job)
        reserved = rules.reservation(op, vm["cpu"], vm["ram"], new_cpu, new_ram)
        ms = epoch_ms(now)
        return {
            "id": task_id,
            "contract_id": vm["contract_id"],
            "workspace_id": vm["workspace_id"],
            "vm_id": vm["id"],
            "vm_name": vm["name"],
            "vapp_id": vapp_id,
            "user_id": principal.user_id,
            "operation": op.value,
            "state": (TaskState.QUEUEING if held else TaskState.PENDING).value,
            "held": held,
            "created_ms": ms,
            "updated_ms": ms,
            "created_at": iso_ms(now),
            "jobs": jobs,
            "extradata": {},
            "request_id": request_id,
            "flow": flow,
            "cpu": vm["cpu"],
            "ram": vm["ram"],
            "new_cpu": new_cpu,
            "new_ram": new_ram,
            "previous_vm_state": vm["state"],
            "reserved": {"vms": reserved.vms, "cpu": reserved.cpu, "ram": reserved.ram},
            "timeout_seconds": timeout,
            "timeout_action": settings.approvalTimeoutAction.value,
        }

    def _hold(self, tasks: list[Item], timeout: int) -> list[Task]:
        """Start one hold per task. If one cannot start, nobody could review the request: every task of
        it ends in ACK_ERROR (the holds that did start are released when their tokens arrive)."""
        for task in tasks:
            try:
                self.holds.hold(task["id"], task["request_id"], timeout)
            except Exception as exc:
                logger.exception("could not hold a task for review", extra={"task_id": task["id"]})
                reason = f"ACK_ERROR: the task could not be held for review ({type(exc).__name__})"
                for other in tasks:
                    self._system_cancel(other["id"], TaskState.ACK_ERROR, reason)
                return [task_from(i) for i in self.store.get_tasks([t["id"] for t in tasks])]
        return [task_from(t) for t in tasks]

    def _start_jobs(self, item: Item) -> Task:
        """Run a PENDING task's jobs through its flow and record the execution (STARTED)."""
        task = task_from(item)
        try:
            execution_id = self.jobs.start(task, item["flow"])
        except Exception as exc:
            logger.exception("could not start the jobs of a task", extra={"task_id": item["id"]})
            return self._abort(item, f"could not start the jobs ({type(exc).__name__})")
        now = self._now_ms()
        if self.store.mark_started(item["id"], execution_id, now):
            changes = {"state": TaskState.STARTED.value, "execution_id": execution_id, "updated_ms": now}
            return task_from(_applied(item, changes))
        current = self.store.get_task(item["id"])
        return task_from(current or item)

    def _abort(self, item: Item, reason: str) -> Task:
        changes = {"updated_ms": self._now_ms(), "extradata.jobs": reason}
        try:
            self.store.end_task(
                item,
                TaskState.ABORTED,
                changes,
                allowed_from=[TaskState.PENDING],
                vm_state=VmState(item["previous_vm_state"]),
                vm_size=None,
                release=_reserved(item),
            )
        except Conflict:
            current = self.store.get_task(item["id"])
            return task_from(current or item)
        return task_from(_applied(item, {**changes, "state": TaskState.ABORTED.value}))

    # ---- tokens and notification -----------------------------------------------------------------
    def record_token(self, task_id: str, token: str) -> list[Task] | None:
        """The hold of `task_id` is waiting on `token`. When that makes every task of its request held,
        the tasks to announce to the workflow tool, to exactly one caller; else None."""
        item = self.store.set_first_token(task_id, token)
        if item is not None:
            if item.get("decision"):  # decided before its hold reported: release it now, nobody else will
                self.holds.release(token, _release_decision(item))
        else:
            item = self._later_token(task_id, token)
        request_id = str(item["request_id"])
        request = self.store.add_token_task(request_id, task_id)
        if request is None or len(request.get("token_tasks") or []) < int(request["count"]):
            return None
        if not self.store.claim_notification(request_id, self._now_ms()):
            return None
        return self.tasks_to_deliver(request_id) or None

    def _later_token(self, task_id: str, token: str) -> Item:
        """A token for a task that has one: the same one again (a redelivery, nothing to do) or a new one
        because the hold's wait ran again (it replaces the old one, or is released if decided)."""
        for _ in range(DECIDE_ATTEMPTS):
            current = self.store.get_task(task_id)
            if current is None:
                raise NotFound("task not found")
            if current.get("token") == token:
                return current
            if current.get("decision"):
                self.holds.release(token, _release_decision(current))
                return current
            replaced = self.store.replace_token(task_id, current["token"], token)
            if replaced is not None:
                return replaced
        raise Conflict("the task kept changing while recording its token; retry")

    def tasks_to_deliver(self, request_id: str) -> list[Task]:
        """The request's tasks the workflow tool still has to hear of: none until every hold has its
        token, then those still held whose webhook has not got through."""
        request = self.store.get_request(request_id)
        if request is None or len(request.get("token_tasks") or []) < int(request["count"]):
            return []
        items = self.store.get_tasks(request["task_ids"])
        return [
            task_from(i) for i in items if i["state"] == TaskState.QUEUEING.value and not i.get("webhook_ok")
        ]

    def record_delivery(self, request_id: str, ok: bool, error: str | None, attempt: int) -> None:
        """The last webhook attempt, on every task of the request (`extradata["webhook"]`): a task whose
        webhook never got through stays held, and shows why."""
        request = self.store.get_request(request_id)
        if request is None:
            return
        at = iso_ms(self._clock())
        if ok:
            text = f"delivered on attempt {attempt} at {at}"
        else:
            text = f"attempt {attempt} failed at {at}: {_short(error) or 'unknown error'}"
        for task_id in request["task_ids"]:
            self.store.record_delivery(task_id, attempt, ok, text)

    # ---- decisions -------------------------------------------------------------------------------
    def decide(
        self, principal: Principal, task_id: str, decision: str, message: str | None, source_ip: str
    ) -> DecisionOutcome:
        """Continue or cancel a held task (`POST /api/object/task/{uuid}/action/{decision}`).

        Answers 202 when a continue wins (the jobs start), 200 when a cancel wins or the same decision
        was already recorded; 410 when the other decision was; 409 when the task was never held.
        Every attempt on an existing task is audited, refused ones too.
        """
        wanted: Decision = _enum(Decision, decision, "the decision", [d.value for d in Decision])
        text = _message(message)
        for _ in range(DECIDE_ATTEMPTS):
            item = self.store.get_task(task_id)
            if item is None:
                logger.info("decision on an unknown task", extra={"task_id": task_id})
                raise NotFound("task not found")
            audit = _attempt(
                principal.user_id,
                principal.username,
                source_ip=source_ip,
                decision=wanted,
                message=text,
                now=self._clock(),
            )
            try:
                self._check_decidable(principal, item, wanted)
            except NotFound:
                raise  # another enterprise: it writes nothing into this tenant's audit
            except FlowgateError as exc:
                self.store.append_audit(task_id, {**audit, "status": exc.status, "outcome": exc.message})
                raise
            if item.get("decision") == wanted.value:
                self.store.append_audit(
                    task_id, {**audit, "status": 200, "outcome": "already decided the same way"}
                )
                if self._follow_through_lost(item, wanted):
                    # the winner's invocation died between the decision and the jobs: finish it now
                    return DecisionOutcome(200, self._after_decision(item, wanted, {}))
                return DecisionOutcome(200, task_from(item))
            status = 202 if wanted == Decision.CONTINUE else 200
            changes = self._decision_changes(
                wanted, principal.username, principal.user_id, text, timed_out=False
            )
            outcome = "continued: the jobs start" if wanted == Decision.CONTINUE else "cancelled"
            if self._leave_queue(item, wanted, changes, {**audit, "status": status, "outcome": outcome}):
                return DecisionOutcome(status, self._after_decision(item, wanted, changes))
        raise Conflict("the task kept changing while deciding it; retry", code="decision_conflict")

    def _follow_through_lost(self, item: Item, wanted: Decision) -> bool:
        """A won continue whose jobs never started, long after the winner's invocation must have ended
        (so a repeat arriving while the winner still works does not send a second token call)."""
        return (
            wanted == Decision.CONTINUE
            and item["state"] == TaskState.PENDING.value
            and not item.get("execution_id")
            and self._now_ms() - int(item.get("decided_at") or 0) > FOLLOW_THROUGH_LEASE_MS
        )

    @staticmethod
    def _check_decidable(principal: Principal, item: Item, wanted: Decision) -> None:
        rules.check_decision(principal, item["contract_id"], item["user_id"], wanted)
        recorded = item.get("decision")
        if recorded and recorded != wanted.value:
            raise Gone(
                rules.already_decided(
                    Decision(recorded),
                    str(item.get("decided_by")),
                    int(item["decided_at"]),
                    bool(item.get("timed_out")),
                    wanted,
                ),
                code="task_decided",
            )
        if not recorded and item["state"] != TaskState.QUEUEING.value:
            raise Conflict(
                f"the task is {item['state']}: it was not held for review, so there is nothing to "
                f"{wanted.value}",
                code="task_not_held",
            )

    def _decision_changes(
        self, decision: Decision, by: str, by_id: str, message: str | None, *, timed_out: bool
    ) -> dict[str, Any]:
        now = self._now_ms()
        changes: dict[str, Any] = {
            "decision": decision.value,
            "decided_by": by,
            "decided_by_id": by_id,
            "decided_at": now,
            "updated_ms": now,
            "timed_out": timed_out,
        }
        if message:
            changes["extradata.workflow"] = message
        return changes

    def _leave_queue(
        self, item: Item, decision: Decision, changes: dict[str, Any], audit: Item | None
    ) -> bool:
        """The one conditional write of a decision; False when another request changed the task first."""
        op = Operation(item["operation"])
        cont = decision == Decision.CONTINUE
        try:
            self.store.leave_queue(
                item,
                TaskState.PENDING if cont else TaskState.CANCELLED,
                changes,
                vm_state=rules.RUNNING_STATE[op] if cont else VmState(item["previous_vm_state"]),
                vm_task_kept=cont,
                release=Usage() if cont else _reserved(item),
                audit=audit,
            )
        except Conflict:
            return False
        return True

    def _after_decision(self, item: Item, decision: Decision, changes: Mapping[str, Any]) -> Task:
        """The winner's follow-through: the one token call, then the jobs on continue."""
        to = TaskState.PENDING if decision == Decision.CONTINUE else TaskState.CANCELLED
        decided = _applied(item, {**changes, "state": to.value})
        token = item.get("token")
        if token:
            try:
                self.holds.release(str(token), _release_decision(decided))
            except Exception:  # the decision stands; a hold left waiting times out and finds it decided
                logger.exception("releasing the hold failed", extra={"task_id": item["id"]})
        logger.info("task decided", extra={"task_id": item["id"], "decision": decision.value})
        if decision == Decision.CONTINUE:
            return self._start_jobs(decided)
        return task_from(decided)

    def time_out(self, task_id: str) -> Task:
        """Nobody decided in time: the enterprise's default action, as the system, with the reason in
        `extradata["workflow"]`. A task already decided is left as it is."""
        for _ in range(DECIDE_ATTEMPTS):
            item = self.store.get_task(task_id)
            if item is None:
                raise NotFound("task not found")
            if item.get("decision") or item["state"] != TaskState.QUEUEING.value:
                return task_from(item)
            action = TimeoutAction(item["timeout_action"])
            decision = Decision(action.value)
            reason = rules.timeout_reason(action, int(item["timeout_seconds"]))
            changes = self._decision_changes(decision, SYSTEM, SYSTEM, reason, timed_out=True)
            audit = {
                **_attempt(
                    SYSTEM, SYSTEM, source_ip="", decision=decision, message=reason, now=self._clock()
                ),
                "status": 200,
                "outcome": reason,
            }
            if self._leave_queue(item, decision, changes, audit):
                return self._after_decision(item, decision, changes)
        raise Conflict("the task kept changing while timing it out; retry", code="decision_conflict")

    def _system_cancel(self, task_id: str, to: TaskState, reason: str) -> None:
        """End a held task without a decision of anyone (the hold could not start)."""
        for _ in range(DECIDE_ATTEMPTS):
            item = self.store.get_task(task_id)
            if item is None or item.get("decision") or item["state"] != TaskState.QUEUEING.value:
                return
            changes = self._decision_changes(Decision.CANCEL, SYSTEM, SYSTEM, reason, timed_out=False)
            try:
                self.store.leave_queue(
                    item,
                    to,
                    changes,
                    vm_state=VmState(item["previous_vm_state"]),
                    vm_task_kept=False,
                    release=_reserved(item),
                    audit=None,
                )
            except Conflict:
                continue
            if item.get("token"):
                self.holds.release(str(item["token"]), Decision.CANCEL.value)
            return

    def audit(self, principal: Principal, task_id: str) -> list[AuditRecord]:
        """Every attempt to decide the task, oldest first (WORKFLOW_OVERRIDE holders and tenant admins)."""
        item = self.store.get_task(task_id)
        if item is None or not (principal.platform_admin or principal.contract_id == item["contract_id"]):
            raise NotFound("task not found")
        if not rules.may_oversee(principal, item["contract_id"]):
            raise Forbidden("reading a task's audit needs WORKFLOW_OVERRIDE or a tenant admin role")
        return [
            AuditRecord.model_validate({k: v for k, v in r.items() if k in AuditRecord.model_fields})
            for r in self.store.list_audit(task_id, MAX_AUDIT_RECORDS)
        ]

    # ---- the jobs' outcome -----------------------------------------------------------------------
    def jobs_finished(self, task_id: str, success: bool, message: str | None) -> Task:
        """The jobs' execution ended: the task's final state and the VM's new one. A repeat is a no-op."""
        item = self.store.get_task(task_id)
        if item is None:
            raise NotFound("task not found")
        state = TaskState(item["state"])
        if state.final:
            return task_from(item)
        if state not in (TaskState.PENDING, TaskState.STARTED):
            raise Conflict(f"the task is {state.value}: its jobs have not started", code="task_not_started")
        op = Operation(item["operation"])
        changes: dict[str, Any] = {"updated_ms": self._now_ms()}
        if message:
            changes["extradata.jobs"] = _short(message)
        size: dict[str, int] | None = None
        if success:
            to = TaskState.FINISHED_SUCCESSFULLY
            vm_state = rules.STATE_AFTER_SUCCESS[op]
            release = rules.given_back_on_success(
                op, item["cpu"], item["ram"], item.get("new_cpu"), item.get("new_ram")
            )
            if op == Operation.RECONFIGURE:
                size = {"cpu": item.get("new_cpu") or item["cpu"], "ram": item.get("new_ram") or item["ram"]}
        else:
            to = TaskState.FINISHED_UNSUCCESSFULLY
            vm_state = VmState(item["previous_vm_state"])
            release = _reserved(item)
        try:
            self.store.end_task(
                item,
                to,
                changes,
                allowed_from=(TaskState.PENDING, TaskState.STARTED),
                vm_state=vm_state,
                vm_size=size,
                release=release,
            )
        except Conflict:
            return task_from(self.store.get_task(task_id) or item)  # ended by a concurrent callback
        logger.info("task finished", extra={"task_id": task_id, "state": to.value})
        return task_from(_applied(item, {**changes, "state": to.value}))

    def task_for_execution(self, execution_id: str) -> str | None:
        return self.store.task_for_execution(execution_id)

    # ---- reading tasks ---------------------------------------------------------------------------
    def get_task(self, principal: Principal, task_id: str) -> Task:
        """`GET /api/object/task/{uuid}`: the task's user, overseers, and whoever works in its workspace."""
        item = self.store.get_task(task_id)
        if item is None or not (principal.platform_admin or principal.contract_id == item["contract_id"]):
            raise NotFound("task not found")
        if principal.user_id != item["user_id"] and not rules.may_oversee(principal, item["contract_id"]):
            self.workspaces.authorize_workspace(principal, item["workspace_id"])
        return task_from(item)

    def pending_tasks(
        self,
        principal: Principal,
        cid: str,
        *,
        user_id: str | None = None,
        type: str | None = None,
        vm: str | None = None,
        since: int | datetime | None = None,
        until: int | datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Task], str | None]:
        """Held tasks of an enterprise (or of one of its users), newest first; `since`/`until` are
        inclusive bounds on the creation time (epoch milliseconds or datetimes)."""
        rules.check_oversight(principal, cid, user_id)
        if self.directory.find_contract(cid) is None:
            raise NotFound("enterprise not found")
        if user_id is not None:
            user = self.directory.find_member(user_id)
            if user is None or user.contract_id != cid:
                raise NotFound("user not found")
        operation = None
        if type:
            task_type = _enum(TaskType, type.upper(), "type", [t.value for t in TaskType])
            operation = task_type.value.lower()
        low, high = _moment(since), _moment(until)
        if low and high and low > high:
            raise BadRequest("since is after until", code="invalid_request")
        page = self.store.pending(
            cid,
            user_id,
            since=low,
            until=high,
            task_type=operation,
            vm_id=vm,
            limit=_limit(limit),
            cursor=cursor,
        )
        return [task_from(i) for i in page.items], page.next


# ---- helpers ------------------------------------------------------------------------------------------


def _operation(op: str) -> Operation:
    result: Operation = _enum(Operation, op, "the operation", [o.value for o in Operation])
    return result


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise BadRequest(f"limit is 1 to {MAX_LIST_LIMIT}", code="invalid_request")
    return limit


def _moment(value: int | datetime | None) -> str | None:
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value / 1000, tz=UTC)
    return iso_ms(moment)


def _message(message: str | None) -> str | None:
    """A decision's optional text: blank is none; too long is refused before anything is written."""
    if message is None or not message.strip():
        return None
    if len(message) > MAX_MESSAGE_CHARS:
        raise PayloadTooLarge(
            f"the message has {len(message)} characters; at most {MAX_MESSAGE_CHARS} are kept"
        )
    return message


def _release_decision(item: Mapping[str, Any]) -> str:
    """What the token call tells the hold: the decision, or "timeout" when nobody decided in time."""
    return "timeout" if item.get("timed_out") else str(item["decision"])


def _attempt(
    actor_id: str, actor: str, *, source_ip: str, decision: Decision, message: str | None, now: datetime
) -> Item:
    return {
        "attempt_id": str(uuid.uuid4()),
        "at": iso_ms(now),
        "actor_id": actor_id,
        "actor": actor,
        "source_ip": source_ip,
        "decision": decision.value,
        "message": message,
    }


def _enterprise(contract: Contract, settings: EnterpriseSettings) -> Enterprise:
    return Enterprise(
        id=contract.id,
        name=contract.name,
        **settings.model_dump(),
    )
