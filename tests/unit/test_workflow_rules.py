"""Pure rules of the approval workflow: operations a VM allows, limits arithmetic, who may decide or
list, the task DTO's shape and links, and the request models."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from flowgate import clock
from flowgate.errors import BadRequest, Conflict, Forbidden, NotFound
from flowgate.identity.models import Principal, Privilege, Role
from flowgate.messages import ApprovalEvent
from flowgate.workflow import rules
from flowgate.workflow.jobs import jobs_execution_id
from flowgate.workflow.models import (
    CreateVirtualApplianceRequest,
    CreateVirtualMachineRequest,
    Decision,
    EnterpriseSettings,
    Limits,
    Operation,
    PutEnterpriseRequest,
    ReconfigureRequest,
    SetPropertyRequest,
    TaskState,
    TimeoutAction,
    VmState,
    collection,
)
from flowgate.workflow.rules import Usage
from flowgate.workflow.store.records import TaskRecord, VmRecord, task_from
from tests.conftest import ROOT

CID, OTHER_CID = "c-1", "c-2"


def principal(
    uid: str = "u-1",
    *,
    cid: str | None = CID,
    role: Role | None = Role.MEMBER,
    override: bool = False,
    admin: bool = False,
) -> Principal:
    return Principal(
        user_id=uid,
        username=f"name-{uid}",
        contract_id=cid,
        role=role,
        privileges=frozenset({Privilege.WORKFLOW_OVERRIDE}) if override else frozenset(),
        platform_admin=admin,
    )


# ---- operations a VM allows -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "op"),
    [
        (VmState.NOT_ALLOCATED, Operation.DEPLOY),
        (VmState.ON, Operation.UNDEPLOY),
        (VmState.ON, Operation.RECONFIGURE),
    ],
)
def test_allowed_operations(state: VmState, op: Operation) -> None:
    rules.check_operation("vm", state, None, op)


@pytest.mark.parametrize(
    ("state", "op"),
    [
        (VmState.ON, Operation.DEPLOY),
        (VmState.NOT_ALLOCATED, Operation.UNDEPLOY),
        (VmState.NOT_ALLOCATED, Operation.RECONFIGURE),
    ],
)
def test_operations_refused_in_the_wrong_state(state: VmState, op: Operation) -> None:
    with pytest.raises(Conflict) as err:
        rules.check_operation("web-1", state, None, op)
    assert err.value.code == "invalid_vm_state"
    assert "web-1" in err.value.message
    assert state.value in err.value.message


def test_a_held_task_cannot_be_modified() -> None:
    for op in Operation:
        with pytest.raises(Conflict) as err:
            rules.check_operation("vm", VmState.WAITING_FOR_REVIEW, "t-1", op)
        assert err.value.code == "task_held"
        assert rules.HELD_TASK in err.value.message


@pytest.mark.parametrize("state", [VmState.DEPLOYING, VmState.UNDEPLOYING, VmState.RECONFIGURING])
def test_a_vm_with_running_jobs_is_busy(state: VmState) -> None:
    with pytest.raises(Conflict) as err:
        rules.check_operation("vm", state, "t-1", Operation.UNDEPLOY)
    assert err.value.code == "vm_busy"


def test_state_tables_cover_every_operation() -> None:
    assert (
        set(rules.REQUIRED_STATE)
        == set(rules.RUNNING_STATE)
        == set(rules.STATE_AFTER_SUCCESS)
        == set(Operation)
    )
    assert [j for j, _ in rules.JOBS[Operation.DEPLOY]] == ["SCHEDULE", "CONFIGURE", "POWER_ON"]
    assert [j for j, _ in rules.JOBS[Operation.UNDEPLOY]] == ["POWER_OFF", "DECONFIGURE"]
    assert [j for j, _ in rules.JOBS[Operation.RECONFIGURE]] == ["RECONFIGURE"]


def test_job_state_follows_the_task() -> None:
    assert {s: rules.job_state(s).value for s in TaskState} == {
        TaskState.QUEUEING: "PENDING",
        TaskState.PENDING: "PENDING",
        TaskState.STARTED: "STARTED",
        TaskState.FINISHED_SUCCESSFULLY: "DONE",
        TaskState.FINISHED_UNSUCCESSFULLY: "FAILED",
        TaskState.ABORTED: "ABORTED",
        TaskState.CANCELLED: "CANCELLED",
        TaskState.ACK_ERROR: "CANCELLED",
    }


# ---- limits arithmetic ------------------------------------------------------------------------------


def test_reservations() -> None:
    assert rules.reservation(Operation.DEPLOY, 2, 1024, None, None) == Usage(1, 2, 1024)
    assert rules.reservation(Operation.UNDEPLOY, 2, 1024, None, None) == Usage()
    # A reconfigure reserves only what grows; a shrink is given back once it happened.
    assert rules.reservation(Operation.RECONFIGURE, 2, 1024, 4, 512) == Usage(0, 2, 0)
    assert rules.reservation(Operation.RECONFIGURE, 2, 1024, None, 2048) == Usage(0, 0, 1024)
    assert rules.given_back_on_success(Operation.RECONFIGURE, 2, 1024, 4, 512) == Usage(0, 0, 512)
    assert rules.given_back_on_success(Operation.UNDEPLOY, 2, 1024, None, None) == Usage(1, 2, 1024)
    assert rules.given_back_on_success(Operation.DEPLOY, 2, 1024, None, None) == Usage()


def test_usage_arithmetic() -> None:
    assert Usage(1, 2, 3) + Usage(1, 1, 1) == Usage(2, 3, 4)
    assert -Usage(1, 2, 3) == Usage(-1, -2, -3)
    assert Usage().zero
    assert not Usage(0, 1, 0).zero


def test_limits_unlimited_and_at_the_edge() -> None:
    assert rules.limit_violations(Limits(), Usage(100, 100, 100), Usage(1, 64, 4096)) == []
    limits = Limits(maxVirtualMachines=3, maxCpu=8, maxRamMb=4096)
    assert rules.limit_violations(limits, Usage(2, 6, 3072), Usage(1, 2, 1024)) == []  # exactly at the limit


def test_limits_name_what_is_exceeded() -> None:
    limits = Limits(maxVirtualMachines=3, maxCpu=8, maxRamMb=4096)
    found = rules.limit_violations(limits, Usage(3, 6, 0), Usage(1, 4, 512))
    assert len(found) == 2
    assert found[0].startswith("maxVirtualMachines is 3")
    assert "maxCpu is 8 and 6 CPUs are in use or reserved, 4 more requested" in found[1]
    refusal = rules.limits_refusal(found)
    assert refusal.status == 409
    assert refusal.code == "limit_exceeded"


def test_a_shrink_never_violates() -> None:
    limits = Limits(maxCpu=1)
    assert rules.limit_violations(limits, Usage(5, 5, 5), Usage(0, 0, 0)) == []
    assert rules.limit_caps(limits, Usage(0, 0, 0)) == {}


def test_caps_turn_the_sum_into_a_bound() -> None:
    limits = Limits(maxVirtualMachines=3, maxCpu=8, maxRamMb=None)
    assert rules.limit_caps(limits, Usage(1, 2, 1024)) == {"vms": 2, "cpu": 6}


# ---- who may decide -----------------------------------------------------------------------------------


OWNER = "u-owner"


@pytest.mark.parametrize(
    ("who", "decision", "expected"),
    [
        (principal("u-appr", override=True), Decision.CONTINUE, None),
        (principal("u-appr", override=True), Decision.CANCEL, None),
        (principal(OWNER), Decision.CANCEL, None),
        (principal(OWNER), Decision.CONTINUE, Forbidden),
        (principal(OWNER, override=True), Decision.CONTINUE, None),
        (principal("u-bob"), Decision.CANCEL, Forbidden),
        (principal("u-bob"), Decision.CONTINUE, Forbidden),
        (principal("u-adm", role=Role.ORG_ADMIN), Decision.CONTINUE, Forbidden),
        (principal("u-x", cid=OTHER_CID, override=True), Decision.CONTINUE, NotFound),
        (principal("u-x", cid=OTHER_CID, override=True), Decision.CANCEL, NotFound),
        (principal("root", cid=None, role=None, admin=True), Decision.CANCEL, Forbidden),
    ],
)
def test_who_may_decide(who: Principal, decision: Decision, expected: type[Exception] | None) -> None:
    if expected is None:
        rules.check_decision(who, CID, OWNER, decision)
    else:
        with pytest.raises(expected):
            rules.check_decision(who, CID, OWNER, decision)


def test_own_user_continuing_is_told_why() -> None:
    with pytest.raises(Forbidden) as err:
        rules.check_decision(principal(OWNER), CID, OWNER, Decision.CONTINUE)
    assert "WORKFLOW_OVERRIDE" in err.value.message


@pytest.mark.parametrize(
    ("who", "user", "expected"),
    [
        (principal("u-appr", override=True), None, None),
        (principal("u-adm", role=Role.ORG_ADMIN), None, None),
        (principal("u-own", role=Role.OWNER), None, None),
        (principal("root", cid=None, role=None, admin=True), None, None),
        (principal("u-bob"), None, Forbidden),
        (principal("u-bob"), "u-bob", None),
        (principal("u-bob"), "u-alice", Forbidden),
        (principal("u-x", cid=OTHER_CID, override=True), None, NotFound),
        (principal("u-x", cid=OTHER_CID), "u-x", NotFound),
    ],
)
def test_who_may_list_pending(who: Principal, user: str | None, expected: type[Exception] | None) -> None:
    if expected is None:
        rules.check_oversight(who, CID, user)
    else:
        with pytest.raises(expected):
            rules.check_oversight(who, CID, user)


# ---- the task DTO -------------------------------------------------------------------------------------


def task_item(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": "t-1",
        "contract_id": CID,
        "workspace_id": "ws-1",
        "vm_id": "vm-1",
        "vm_name": "web-1",
        "user_id": "u-1",
        "operation": "deploy",
        "state": "QUEUEING",
        "held": True,
        "created_ms": 1_700_000_000_000,
        "updated_ms": 1_700_000_000_500,
        "created_at": "2023-11-14T22:13:20.000Z",
        "jobs": [
            {"id": "j-1", "type": "SCHEDULE", "description": "schedule"},
            {"id": "j-2", "type": "CONFIGURE", "description": "configure"},
            {"id": "j-3", "type": "POWER_ON", "description": "power on"},
        ],
        "extradata": {},
        "request_id": "r-1",
        "flow": "deploy-flow",
        "cpu": 2,
        "ram": 2048,
        "previous_vm_state": "NOT_ALLOCATED",
        "reserved": {"vms": 1, "cpu": 2, "ram": 2048},
        "timeout_seconds": 3600,
        "timeout_action": "cancel",
        "token": "secret-token",
        "GSI1PK": "CONTRACT#c-1#PENDING",
    }
    item.update(overrides)
    return item


WIRE_FIELDS = {
    "taskId",
    "userId",
    "ownerId",
    "type",
    "state",
    "timestamp",
    "creationTimestamp",
    "jobs",
    "links",
    "extradata",
}


def test_task_dto_has_abiquos_fields_only() -> None:
    task = task_from(task_item())
    for dumped in (task.dto(), task.model_dump(mode="json"), json.loads(task.model_dump_json())):
        assert set(dumped) == WIRE_FIELDS
    dto = task.dto()
    assert dto["taskId"] == "t-1"
    assert dto["userId"] == "u-1"
    assert dto["ownerId"] == "vm-1"
    assert dto["type"] == "DEPLOY"
    assert dto["state"] == "QUEUEING"
    assert (dto["creationTimestamp"], dto["timestamp"]) == (1_700_000_000_000, 1_700_000_000_500)
    assert "secret-token" not in json.dumps(dto)
    assert task.workspace_id == "ws-1"  # the domain still reads its own fields
    assert task.flow == "deploy-flow"


def test_jobs_are_a_collection_in_order() -> None:
    jobs = task_from(task_item(state="STARTED")).dto()["jobs"]
    assert list(jobs) == ["collection"]
    assert [j["type"] for j in jobs["collection"]] == ["SCHEDULE", "CONFIGURE", "POWER_ON"]
    assert {j["state"] for j in jobs["collection"]} == {"STARTED"}
    assert {j["parentTaskId"] for j in jobs["collection"]} == {"t-1"}
    assert "cpu" not in jobs["collection"][0]  # only a reconfigure's job carries the new size
    plain = task_from(task_item()).model_dump(mode="json")  # also without exclude_none
    assert "ram" not in plain["jobs"]["collection"][0]


def test_links_are_paths_relative_to_the_api_root() -> None:
    links = {link["rel"]: link["href"] for link in task_from(task_item()).dto()["links"]}
    assert links == {
        "user": "admin/enterprises/c-1/users/u-1",
        "target": "cloud/workspaces/ws-1/virtualmachines/vm-1",
        "continue": "object/task/t-1/action/continue",
        "cancel": "object/task/t-1/action/cancel",
    }
    for href in links.values():
        assert not href.startswith("/")
        assert "://" not in href
        assert not href.startswith("api/")


def test_reconfigure_job_and_flow_inputs_carry_the_new_size() -> None:
    item = task_item(
        operation="reconfigure",
        jobs=[{"id": "j-1", "type": "RECONFIGURE", "description": "resize", "cpu": 4, "ram": 2048}],
        new_cpu=4,
    )
    task = task_from(item)
    assert (
        task.dto()["jobs"]["collection"][0] | {"cpu": 4, "ram": 2048} == task.dto()["jobs"]["collection"][0]
    )
    # What the bound flow receives (flowgate.bridges.FlowJobs): the task as on the wire, without links
    inputs = {k: v for k, v in task.model_dump(mode="json").items() if k != "links"}
    assert inputs["type"] == "RECONFIGURE"
    assert inputs["ownerId"] == "vm-1"
    assert inputs["jobs"]["collection"][0] == {
        "id": "j-1",
        "parentTaskId": "t-1",
        "type": "RECONFIGURE",
        "description": "resize",
        "state": "PENDING",
        "creationTimestamp": 1_700_000_000_000,
        "timestamp": 1_700_000_000_500,
        "cpu": 4,
        "ram": 2048,
    }
    assert "links" not in inputs


def test_several_tasks_are_a_collection() -> None:
    body = collection([task_from(task_item()), task_from(task_item(id="t-2"))])
    assert list(body) == ["collection"]
    assert [t["taskId"] for t in body["collection"]] == ["t-1", "t-2"]


def test_extradata_is_text() -> None:
    dto = task_from(task_item(extradata={"workflow": "approved by the CAB"})).dto()
    assert dto["extradata"] == {"workflow": "approved by the CAB"}


# ---- times and messages -----------------------------------------------------------------------------


def test_iso_ms_sorts_like_time() -> None:
    a = datetime(2024, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
    b = datetime(2024, 1, 2, 3, 4, 5, 7000, tzinfo=UTC)
    assert clock.iso_ms(a) == "2024-01-02T03:04:05.006Z"
    assert clock.iso_ms(a) < clock.iso_ms(b)
    assert clock.iso_of_ms(clock.epoch_ms(a)) == clock.iso_ms(a)


def test_timeout_reason_and_gone_message() -> None:
    assert rules.timeout_reason(TimeoutAction.CANCEL, 86400) == "TIMED_OUT: cancel after 86400s"
    at = clock.epoch_ms(datetime(2024, 5, 1, 10, 0, tzinfo=UTC))
    said = rules.already_decided(Decision.CONTINUE, "approver", at, False, Decision.CANCEL)
    assert said == (
        "the task was already continued by approver at 2024-05-01T10:00:00.000Z; "
        "it can no longer be cancelled"
    )
    assert "when its approval timed out" in rules.already_decided(
        Decision.CANCEL, "system", at, True, Decision.CONTINUE
    )


def test_signing_secret_format() -> None:
    rules.check_signing_secret("whsec_" + base64.b64encode(b"k" * 32).decode())
    for bad in ("plain", "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(BadRequest):
            rules.check_signing_secret(bad)


# ---- request models ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"name": "vm", "cpu": 0, "ram": 1024},
        {"name": "vm", "cpu": 65, "ram": 1024},
        {"name": "vm", "cpu": 1, "ram": 127},
        {"name": "vm", "cpu": 1, "ram": 1_048_577},
        {"name": "", "cpu": 1, "ram": 1024},
        {"name": "vm", "cpu": 1, "ram": 1024, "state": "ON"},
    ],
)
def test_vm_bodies_are_validated(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CreateVirtualMachineRequest.model_validate(body)


def test_appliance_and_reconfigure_bodies() -> None:
    with pytest.raises(ValidationError):
        CreateVirtualApplianceRequest(name="app", virtualmachines=["a", "a"])
    with pytest.raises(ValidationError):
        CreateVirtualApplianceRequest(name="app", virtualmachines=[])
    with pytest.raises(ValidationError):
        ReconfigureRequest()
    assert ReconfigureRequest(ram=2048).cpu is None


def test_enterprise_settings_are_a_full_representation() -> None:
    settings = EnterpriseSettings()
    assert settings.model_dump() == {
        "workflow": False,
        "limits": {"maxVirtualMachines": None, "maxCpu": None, "maxRamMb": None},
        "approvalTimeoutSeconds": None,
        "approvalTimeoutAction": TimeoutAction.CANCEL,
    }
    put = PutEnterpriseRequest.model_validate({"id": "c-1", "name": "acme", "workflow": True, "links": []})
    assert put.workflow
    with pytest.raises(ValidationError):
        PutEnterpriseRequest.model_validate({"workflow": True, "owner": "me"})
    with pytest.raises(ValidationError):
        PutEnterpriseRequest.model_validate({"approvalTimeoutSeconds": 0})
    with pytest.raises(ValidationError):
        PutEnterpriseRequest.model_validate({"approvalTimeoutAction": "approve"})


def test_property_values_are_text() -> None:
    assert SetPropertyRequest.model_validate({"name": "n", "value": 1}).value == "1"
    assert SetPropertyRequest.model_validate({"name": "n", "value": True}).value == "1"
    assert SetPropertyRequest.model_validate({"name": "n", "value": "0"}).value == "0"


# ---- storage records and the state machine's messages ------------------------------------------------

# What a new task item holds (docs/access-patterns.md, "task"); later writes add the token, the decision,
# the execution and the webhook's outcome.
NEW_TASK_ATTRIBUTES = {
    "id", "contract_id", "workspace_id", "vm_id", "vm_name", "vapp_id", "user_id", "operation", "state",
    "held", "created_ms", "updated_ms", "created_at", "jobs", "extradata", "request_id", "flow", "cpu",
    "ram", "new_cpu", "new_ram", "previous_vm_state", "reserved", "timeout_seconds", "timeout_action",
}  # fmt: skip


def test_a_new_task_record_is_the_item_a_task_always_was() -> None:
    # Given a VM that is ON, and a reconfigure of it held for review
    vm = VmRecord.new(wsid="ws-1", cid=CID, name="web-1", cpu=2, ram=2048, by="u-1", at=datetime.now(UTC))
    vm = VmRecord.from_item({**vm.to_item(), "state": "ON"})
    task = TaskRecord.new(
        vm=vm,
        vapp_id=None,
        user_id="u-1",
        op=Operation.RECONFIGURE,
        size=(4, None),
        flow="resize",
        request_id="r-1",
        at=datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
        held=True,
        timeout_seconds=3600,
        timeout_action=TimeoutAction.CONTINUE,
    )
    # When it is written and read back
    item = task.to_item()
    # Then the item has the attributes it always had, and reads back as the same task
    assert set(item) == NEW_TASK_ATTRIBUTES
    assert TaskRecord.from_item(item) == task
    assert item["state"] == "QUEUEING"
    assert item["previous_vm_state"] == "ON"
    assert item["reserved"] == {"vms": 0, "cpu": 2, "ram": 0}  # only the growth is reserved
    assert item["jobs"][0] | {"type": "RECONFIGURE", "cpu": 4, "ram": 2048} == item["jobs"][0]
    assert item["created_at"] == "2024-05-01T10:00:00.000Z"
    assert task.task().dto()["jobs"]["collection"][0]["cpu"] == 4


def test_the_jobs_execution_id_is_derived_from_the_task() -> None:
    assert jobs_execution_id("t-1") == jobs_execution_id("t-1")
    assert jobs_execution_id("t-1") != jobs_execution_id("t-2")
    assert str(uuid.UUID(jobs_execution_id("t-1"))) == jobs_execution_id("t-1")  # an id like any other


def _bodies(states: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each SQS message body the approval state machine writes, by state name, as it would send it."""
    context = {"$.task_id": "t-1", "$.request_id": "r-1", "$$.Task.Token": "tok"}
    bodies = {}
    for name, state in states.items():
        template = state.get("Parameters", {}).get("MessageBody")
        if template is None:
            continue
        bodies[name] = {
            k.removesuffix(".$"): context[v] if k.endswith(".$") else v for k, v in template.items()
        }
    return bodies


def test_the_state_machine_writes_the_approval_events_the_notifier_reads() -> None:
    definition = json.loads((ROOT / "statemachine" / "approval.asl.json").read_text())
    states = definition["States"]
    bodies = _bodies(states)
    events = {name: ApprovalEvent.model_validate_json(json.dumps(body)) for name, body in bodies.items()}
    assert {name: e.event for name, e in events.items()} == {
        "WaitForDecision": "held",
        "StartJobs": "continued",
        "ReportTimeout": "timed_out",
    }
    assert events["WaitForDecision"].token == "tok"
    assert {(e.task_id, e.request_id, e.version) for e in events.values()} == {("t-1", "r-1", 1)}
    # after the hold is released, only a continue goes on to hand the task over for its jobs
    choice = states[states["WaitForDecision"]["Next"]]
    assert choice["Type"] == "Choice"
    [rule] = choice["Choices"]
    assert rule["Next"] == "StartJobs"
    assert {"Variable": "$.decision.decision", "StringEquals": "continue"} in rule["And"]
    assert states["WaitForDecision"]["ResultPath"] == "$.decision"
    assert states[choice["Default"]]["Type"] == "Succeed"
