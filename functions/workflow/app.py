"""Workflow function: Abiquo-compatible approval workflow (seed 002, DESIGN §3.3).

VMs and appliances, deploy/undeploy/reconfigure requests (202 with the task), platform properties,
the enterprise's workflow flag and limits, held tasks, continue/cancel decisions (HTTP Basic or bearer;
the body is optional: empty, `{}`, or a plain-text message) and pending tasks. Thin by design: parse,
authenticate, call the use case's service (one per module of flowgate.workflow), shape the answer.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body
from pydantic import BaseModel, ValidationError

from flowgate.errors import BadRequest
from flowgate.http import API_ROOT, Cursor, Limit, Listing, create_app, created, entry, invalid_body
from flowgate.identity.ports import Principal
from flowgate.rest import caller as principal_of
from flowgate.wiring import container
from flowgate.workflow.models import (
    AuditRecord,
    BindOperationRequest,
    CreateVirtualApplianceRequest,
    CreateVirtualMachineRequest,
    Enterprise,
    OperationBinding,
    Property,
    PutEnterpriseRequest,
    ReconfigureRequest,
    SetPropertyRequest,
    Task,
    VirtualAppliance,
    VirtualMachine,
)

app = create_app()
CLOUD = "/api/cloud/workspaces/<ws>"
DECISION_RESOURCE = "/api/object/task/{uuid}/action/{decision}"
MAX_MESSAGE_BYTES = 16 * 1024

Op = Literal["deploy", "undeploy", "reconfigure"]


class TaskCollection(BaseModel):
    """Several tasks, as Abiquo sends and lists them; `next` pages a listing."""

    collection: list[Task]
    next: str | None = None


def caller() -> Principal:
    return principal_of(app)


def accepted(tasks: list[Task]) -> Response[Any]:
    """202 with the task (one VM) or the collection (an appliance), and where to follow it."""
    body: BaseModel = tasks[0] if len(tasks) == 1 else TaskCollection(collection=tasks)
    return Response(
        status_code=202,
        content_type=content_types.APPLICATION_JSON,
        body=body,
        headers={"Location": f"/api/object/task/{tasks[0].taskId}"},
    )


# ---- platform properties and enterprises -----------------------------------------------------


@app.post("/api/config/properties", tags=["workflow"])
def set_property(body: SetPropertyRequest) -> Property:
    return container().workflow_settings.set_property(caller(), body.name, body.value)


@app.get("/api/config/properties", tags=["workflow"])
def list_properties() -> list[Property]:
    return container().workflow_settings.list_properties(caller())


@app.get("/api/admin/enterprises/<cid>", tags=["workflow"])
def get_enterprise(cid: str) -> Enterprise:
    return container().workflow_settings.get_enterprise(caller(), cid)


@app.put("/api/admin/enterprises/<cid>", tags=["workflow"])
def put_enterprise(cid: str, body: PutEnterpriseRequest) -> Enterprise:
    return container().workflow_settings.put_enterprise(caller(), cid, body)


# ---- resources -------------------------------------------------------------------------------


@app.post(f"{CLOUD}/virtualmachines", tags=["workflow"])
def create_vm(ws: str, body: CreateVirtualMachineRequest) -> Response[VirtualMachine]:
    vm = container().workflow_resources.create_virtual_machine(caller(), ws, body)
    return created(vm, f"/api/cloud/workspaces/{ws}/virtualmachines/{vm.id}")


@app.get(f"{CLOUD}/virtualmachines", tags=["workflow"])
def list_vms(ws: str, limit: Limit = 50, cursor: Cursor = None) -> Listing[VirtualMachine]:
    items, nxt = container().workflow_resources.list_virtual_machines(caller(), ws, limit, cursor)
    return Listing(items=items, next=nxt)


@app.get(f"{CLOUD}/virtualmachines/<vm>", tags=["workflow"])
def get_vm(ws: str, vm: str) -> VirtualMachine:
    return container().workflow_resources.get_virtual_machine(caller(), ws, vm)


def new_size(op: str, body: dict[str, Any] | None) -> ReconfigureRequest | None:
    """Reconfigure takes the new `cpu`/`ram`; deploy and undeploy take no fields (`{}` or no body)."""
    if op != "reconfigure":
        if body:
            raise BadRequest(f"{op} takes no body fields")
        return None
    try:
        return ReconfigureRequest.model_validate(body or {})
    except ValidationError as exc:
        raise invalid_body(exc.errors()) from exc


def request(ws: str, target: str, target_id: str, op: str, body: dict[str, Any] | None) -> Response[Any]:
    size = new_size(op, body)
    tasks = container().operation_requests.request_operation(
        caller(), ws, target, target_id, op, cpu=size.cpu if size else None, ram=size.ram if size else None
    )
    return accepted(tasks)


@app.post(f"{CLOUD}/virtualmachines/<vm>/action/<op>", tags=["workflow"])
def vm_action(
    ws: str, vm: str, op: Op, body: Annotated[dict[str, Any] | None, Body()] = None
) -> Response[Any]:
    return request(ws, "vm", vm, op, body)


@app.post(f"{CLOUD}/virtualappliances", tags=["workflow"])
def create_vapp(ws: str, body: CreateVirtualApplianceRequest) -> Response[VirtualAppliance]:
    vapp = container().workflow_resources.create_virtual_appliance(caller(), ws, body)
    return created(vapp, f"/api/cloud/workspaces/{ws}/virtualappliances/{vapp.id}")


@app.get(f"{CLOUD}/virtualappliances", tags=["workflow"])
def list_vapps(ws: str, limit: Limit = 50, cursor: Cursor = None) -> Listing[VirtualAppliance]:
    items, nxt = container().workflow_resources.list_virtual_appliances(caller(), ws, limit, cursor)
    return Listing(items=items, next=nxt)


@app.get(f"{CLOUD}/virtualappliances/<vapp>", tags=["workflow"])
def get_vapp(ws: str, vapp: str) -> VirtualAppliance:
    return container().workflow_resources.get_virtual_appliance(caller(), ws, vapp)


@app.post(f"{CLOUD}/virtualappliances/<vapp>/action/<op>", tags=["workflow"])
def vapp_action(
    ws: str, vapp: str, op: Op, body: Annotated[dict[str, Any] | None, Body()] = None
) -> Response[Any]:
    return request(ws, "vapp", vapp, op, body)


@app.put(f"{API_ROOT}/workspaces/<ws>/operations/<op>", tags=["workflow"])
def bind_operation(ws: str, op: Op, body: BindOperationRequest) -> OperationBinding:
    return container().operation_bindings.bind_operation(caller(), ws, op, body.flow)


@app.get(f"{API_ROOT}/workspaces/<ws>/operations/<op>", tags=["workflow"])
def get_operation(ws: str, op: Op) -> OperationBinding:
    return container().operation_bindings.get_binding(caller(), ws, op)


# ---- tasks -----------------------------------------------------------------------------------


@app.get("/api/object/task/<uuid>", tags=["workflow"])
def get_task(uuid: str) -> Task:
    return container().workflow_tasks.get_task(caller(), uuid)


@app.get("/api/object/task/<uuid>/audit", tags=["workflow"])
def task_audit(uuid: str) -> list[AuditRecord]:
    return container().workflow_tasks.audit(caller(), uuid)


def decision_message() -> str | None:
    """The optional body of a decision: nothing, `{}` (the sample connectors), JSON, or plain text."""
    event = app.current_event
    text = (event.body or "").strip()
    if len(text.encode()) > MAX_MESSAGE_BYTES:
        raise BadRequest(f"the message is longer than {MAX_MESSAGE_BYTES} bytes")
    if not text:
        return None
    kind = (event.headers.get("content-type") or "").split(";")[0].strip().lower()
    if kind == "text/plain":
        return text
    try:
        parsed = json.loads(text)
    except ValueError:
        return text  # a message sent without a content type
    if parsed in ({}, None, ""):
        return None
    return parsed if isinstance(parsed, str) else json.dumps(parsed, separators=(",", ":"))


@app.post("/api/object/task/<uuid>/action/<decision>", tags=["workflow"])
def decide(uuid: str, decision: Literal["continue", "cancel"]) -> Response[Task]:
    source = app.current_event.request_context.identity.source_ip or "unknown"
    outcome = container().decisions.decide(caller(), uuid, decision, decision_message(), source)
    return Response(
        status_code=outcome.status_code, content_type=content_types.APPLICATION_JSON, body=outcome.task
    )


@app.get("/api/admin/enterprises/<cid>/action/pendingtasks", tags=["workflow"])
def enterprise_pending(
    cid: str,
    *,
    user: str | None = None,
    type: str | None = None,
    vm: str | None = None,
    since: int | None = None,
    until: int | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> TaskCollection:
    tasks, nxt = container().pending_tasks.pending_tasks(
        caller(), cid, user_id=user, type=type, vm=vm, since=since, until=until, limit=limit, cursor=cursor
    )
    return TaskCollection(collection=tasks, next=nxt)


@app.get("/api/admin/enterprises/<cid>/users/<uid>/action/pendingtasks", tags=["workflow"])
def user_pending(
    cid: str,
    uid: str,
    *,
    type: str | None = None,
    vm: str | None = None,
    since: int | None = None,
    until: int | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> TaskCollection:
    tasks, nxt = container().pending_tasks.pending_tasks(
        caller(), cid, user_id=uid, type=type, vm=vm, since=since, until=until, limit=limit, cursor=cursor
    )
    return TaskCollection(collection=tasks, next=nxt)


handler = entry(app, text_resources=frozenset({DECISION_RESOURCE}))
