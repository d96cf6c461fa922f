"""The workflow domain against moto (the table from template.yaml, with GSI1 and GSI2): operation
requests, holds, tokens, decisions and their races, timeouts, the jobs' outcome, limits, pending-task
listings, platform properties and the audit, through the use-case services of the composition root
(flowgate.wiring) with recording fakes behind the `Holds` and `Jobs` ports. The fake holds play the
approval state machine's part too: a continue's token call queues its `continued` event, which
`World.run_state_machines` hands to the notifier as the approval queue would."""

from __future__ import annotations

import base64
import functools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flowgate import aws as aws_clients  # "aws" is the moto fixture
from flowgate import wiring
from flowgate.config import Settings
from flowgate.errors import BadRequest, Conflict, FlowgateError, Forbidden, Gone, NotFound, PayloadTooLarge
from flowgate.identity.auth import principal_of
from flowgate.identity.models import (
    CreateContractRequest,
    CreateMemberRequest,
    CreateWorkspaceRequest,
    GrantAccessRequest,
    Principal,
    Privilege,
    Role,
)
from flowgate.messages import ApprovalEvent
from flowgate.wiring import Container, container
from flowgate.workflow.announcements import Announcements
from flowgate.workflow.bindings import OperationBindings
from flowgate.workflow.decisions import Decisions
from flowgate.workflow.jobs import TaskJobs, jobs_execution_id
from flowgate.workflow.models import Task
from flowgate.workflow.notifier import Notifier
from flowgate.workflow.operation_requests import OperationRequests
from flowgate.workflow.pending_tasks import PendingTasks
from flowgate.workflow.resources import Resources
from flowgate.workflow.settings import WorkflowSettings
from flowgate.workflow.tasks import Tasks
from tests.support.moto import serialized_dynamodb

ROOT = Principal(user_id="root", username="root", contract_id=None, role=None, platform_admin=True)
ENDPOINT = "http://127.0.0.1:8999/workflow"
SOURCE = "198.51.100.7"
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


# ---- fakes and fixtures -------------------------------------------------------------------------------


@dataclass
class FakeHolds:
    """Records each hold and each token call, as the state machine would see them. Like the state
    machine, a token call that continues queues the task's `continued` event (`continued`)."""

    fail: bool = False
    holds: list[tuple[str, str, int]] = field(default_factory=list)
    releases: list[tuple[str, str]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # token -> task id, as each hold reported it
    continued: list[str] = field(default_factory=list)  # task ids whose hold went on to start the jobs
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hold(self, task_id: str, request_id: str, timeout_seconds: int) -> None:
        if self.fail:
            raise RuntimeError("states:StartExecution failed")
        with self.lock:
            self.holds.append((task_id, request_id, timeout_seconds))

    def release(self, token: str, decision: str) -> None:
        with self.lock:
            self.releases.append((token, decision))
            if decision == "continue":
                self.continued.append(self.tokens[token])


@dataclass
class FakeJobs:
    """One execution per id, as the flows context creates them: `started` lists each execution once,
    `attempts` every start asked for."""

    fail: bool = False
    started: list[tuple[Task, str]] = field(default_factory=list)
    executions: list[str] = field(default_factory=list)
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, task: Task, flow: str, execution_id: str) -> None:
        if self.fail:
            raise RuntimeError("the flow could not be queued")
        with self.lock:
            self.attempts += 1
            if execution_id not in self.executions:
                self.executions.append(execution_id)
                self.started.append((task, flow))


class Clock:
    """Each reading is one millisecond later, so creation order is time order."""

    def __init__(self) -> None:
        self.now = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
        self.lock = threading.Lock()

    def __call__(self) -> datetime:
        with self.lock:
            self.now += timedelta(milliseconds=1)
            return self.now


def workflow_container(holds: FakeHolds, jobs: FakeJobs, clock: Clock) -> Container:
    """The process's composition root with the fakes behind the ports and a stepping clock; one-hour
    approvals, and loopback allowed as a workflow endpoint."""
    settings = Settings.from_environ(os.environ).model_copy(
        update={"approval_timeout_seconds": 3600, "outbound_allow_list": "127.0.0.0/8,::1"}
    )
    return Container(settings, dict(os.environ), holds=holds, jobs=jobs, workflow_clock=clock)


@dataclass
class World:
    c: Container
    holds: FakeHolds
    jobs: FakeJobs
    clock: Clock
    cid: str
    ws: str
    admin: Principal  # org admin of A
    alice: Principal  # member of A: requests operations
    carol: Principal  # another member of A who requests
    approver: Principal  # member of A with WORKFLOW_OVERRIDE
    bob: Principal  # member of A without the privilege
    cid_b: str
    ws_b: str
    admin_b: Principal
    outsider: Principal  # member of B with WORKFLOW_OVERRIDE

    # ---- the use cases, as the composition root wires them ----
    @property
    def settings(self) -> WorkflowSettings:
        return self.c.workflow_settings

    @property
    def resources(self) -> Resources:
        return self.c.workflow_resources

    @property
    def bindings(self) -> OperationBindings:
        return self.c.operation_bindings

    @property
    def requests(self) -> OperationRequests:
        return self.c.operation_requests

    @property
    def decisions(self) -> Decisions:
        return self.c.decisions

    @property
    def announcements(self) -> Announcements:
        return self.c.announcements

    @property
    def pending(self) -> PendingTasks:
        return self.c.pending_tasks

    @property
    def tasks(self) -> Tasks:
        return self.c.workflow_tasks

    @property
    def task_jobs(self) -> TaskJobs:
        return self.c.workflow_jobs

    @property
    def notifier(self) -> Notifier:
        return self.c.notifier

    # ---- the approval state machine's part ----
    def record_token(self, task_id: str, token: str) -> list[Task] | None:
        """The hold of `task_id` reports `token` (its `held` event reaches the notifier)."""
        with self.holds.lock:
            self.holds.tokens[token] = task_id
        return self.announcements.record_token(task_id, token)

    def run_state_machines(self) -> list[str]:
        """Deliver each `continued` event the holds queued since last time to the notifier, as the
        approval queue would; the task ids delivered."""
        with self.holds.lock:
            delivered, self.holds.continued[:] = list(self.holds.continued), []
        requests = {task_id: request_id for task_id, request_id, _ in self.holds.holds}
        for task_id in delivered:
            event = ApprovalEvent(event="continued", task_id=task_id, request_id=requests[task_id])
            self.notifier.handle(ApprovalEvent.model_validate_json(event.body()))
        return delivered

    # ---- shorthands ----
    def vm(self, name: str = "vm", cpu: int = 2, ram: int = 2048, *, ws: str | None = None) -> str:
        who = self.admin if ws in (None, self.ws) else self.admin_b
        return self.resources.create_virtual_machine(
            who, ws or self.ws, {"name": name, "cpu": cpu, "ram": ram}
        ).id

    def enable(self, *, cid: str | None = None, **settings: Any) -> None:
        """Workflow on for the platform and the enterprise."""
        self.settings.set_property(ROOT, "client.main.workflowEndPoint", ENDPOINT)
        self.settings.set_property(ROOT, "client.main.workflowEnabled", "1")
        who = self.admin if cid in (None, self.cid) else self.admin_b
        self.settings.put_enterprise(who, cid or self.cid, {"workflow": True, **settings})

    def deployed_vm(self, name: str, cpu: int = 2, ram: int = 2048) -> str:
        """A VM that is ON (deployed without workflow, its jobs ended well)."""
        vm = self.vm(name, cpu, ram)
        settings = self.settings.get_enterprise(self.admin, self.cid)
        self.settings.put_enterprise(self.admin, self.cid, {**settings.model_dump(), "workflow": False})
        [task] = self.requests.request_operation(self.alice, self.ws, "vm", vm, "deploy")
        self.task_jobs.finished(task.taskId, True, None)
        self.settings.put_enterprise(self.admin, self.cid, settings.model_dump())
        return vm

    def held(self, vm: str, op: str = "deploy", who: Principal | None = None, **size: int) -> Task:
        [task] = self.requests.request_operation(who or self.alice, self.ws, "vm", vm, op, **size)
        assert task.state == "QUEUEING"
        return task

    def task(self, task_id: str) -> Task:
        return self.tasks.get_task(self.admin, task_id)

    def vm_state(self, vm: str) -> tuple[str, str | None]:
        got = self.resources.get_virtual_machine(self.admin, self.ws, vm)
        return got.state.value, got.taskId


def _member(
    cid: str, admin: Principal, name: str, role: Role = Role.MEMBER, *privileges: Privilege
) -> Principal:
    made = container().identity.create_member(
        admin,
        cid,
        CreateMemberRequest(
            username=name, password=f"{name}-password-1", role=role, privileges=list(privileges)
        ),
    )
    user = container().identity_store.get_user(made.id)
    assert user is not None
    return principal_of(user)


def _flow(ws: str, name: str) -> None:
    container().flow_store.create_flow(
        {
            "id": f"flow-{name}-{ws}",
            "workspace_id": ws,
            "name": name,
            "script": "def handler(system, this, inputs):\n    return this.success('ok')\n",
            "version": 1,
            "created_at": "2024-05-01T00:00:00Z",
            "updated_at": "2024-05-01T00:00:00Z",
            "updated_by": "root",
        }
    )


def _tenant(tag: str) -> tuple[str, str, Principal]:
    cid = container().identity.create_contract(ROOT, CreateContractRequest(name=f"enterprise-{tag}")).id
    admin = _member(cid, ROOT, f"admin-{tag}", Role.ORG_ADMIN)
    ws = container().identity.create_workspace(admin, cid, CreateWorkspaceRequest(name=f"ws-{tag}")).id
    for op in ("deploy", "undeploy", "reconfigure"):
        _flow(ws, f"{op}-flow")
    return cid, ws, admin


@pytest.fixture
def world(aws: str) -> World:
    holds, jobs, clock = FakeHolds(), FakeJobs(), Clock()
    wiring.install(workflow_container(holds, jobs, clock))
    cid, ws, admin = _tenant("a")
    alice = _member(cid, admin, "alice")
    carol = _member(cid, admin, "carol")
    approver = _member(cid, admin, "approver", Role.MEMBER, Privilege.WORKFLOW_OVERRIDE)
    bob = _member(cid, admin, "bob")
    for who in (alice, carol, bob):
        container().identity.grant_access(admin, ws, who.user_id, GrantAccessRequest())
    cid_b, ws_b, admin_b = _tenant("b")
    outsider = _member(cid_b, admin_b, "outsider", Role.MEMBER, Privilege.WORKFLOW_OVERRIDE)
    for op in ("deploy", "undeploy", "reconfigure"):
        container().operation_bindings.bind_operation(admin, ws, op, f"{op}-flow")
        container().operation_bindings.bind_operation(admin_b, ws_b, op, f"{op}-flow")
    return World(
        container(),
        holds,
        jobs,
        clock,
        cid,
        ws,
        admin,
        alice,
        carol,
        approver,
        bob,
        cid_b,
        ws_b,
        admin_b,
        outsider,
    )


@pytest.fixture
def atomic_writes() -> Iterator[None]:
    """DynamoDB's atomic item operations for the race tests (tests.support.moto.serialized_dynamodb)."""
    with serialized_dynamodb():
        yield


def outcome_of(call: Callable[[], Any]) -> Any:
    """The call's result, or the error it raised (for races, where either may happen)."""
    try:
        return call()
    except FlowgateError as exc:
        return exc


# ---- holding ------------------------------------------------------------------------------------------


def test_deploy_is_held_for_review(world: World) -> None:
    world.enable()
    vm = world.vm("web-1")
    task = world.held(vm)
    assert task.type == "DEPLOY"
    assert task.userId == world.alice.user_id
    assert task.ownerId == vm
    assert [j.type.value for j in task.jobs.collection] == ["SCHEDULE", "CONFIGURE", "POWER_ON"]
    assert world.vm_state(vm) == ("WAITING_FOR_REVIEW", task.taskId)
    assert world.holds.holds == [(task.taskId, task.request_id, 3600)]
    assert world.jobs.started == []
    links = {link.rel: link.href for link in world.task(task.taskId).links}
    assert links["continue"] == f"object/task/{task.taskId}/action/continue"
    assert links["target"] == f"cloud/workspaces/{world.ws}/virtualmachines/{vm}"


def test_a_held_task_cannot_be_modified(world: World) -> None:
    world.enable()
    vm = world.vm()
    world.held(vm)
    for op in ("deploy", "undeploy"):
        with pytest.raises(Conflict) as err:
            world.requests.request_operation(world.alice, world.ws, "vm", vm, op)
        assert "a held task cannot be modified, only continued or cancelled" in err.value.message
    assert len(world.holds.holds) == 1


def test_appliance_tasks_share_a_request_and_are_announced_once(world: World) -> None:
    world.enable()
    vms = [world.vm(f"node-{i}") for i in range(3)]
    app = world.resources.create_virtual_appliance(
        world.alice, world.ws, {"name": "cluster", "virtualmachines": vms}
    )
    tasks = world.requests.request_operation(world.alice, world.ws, "vapp", app.id, "deploy")
    assert [t.ownerId for t in tasks] == vms
    assert len({t.request_id for t in tasks}) == 1
    assert {t.state for t in tasks} == {"QUEUEING"}
    assert [h[0] for h in world.holds.holds] == [t.taskId for t in tasks]
    request_id = tasks[0].request_id

    assert world.announcements.tasks_to_deliver(request_id) == []  # not every hold has reported yet
    assert world.record_token(tasks[0].taskId, "tok-0") is None
    assert world.record_token(tasks[0].taskId, "tok-0") is None  # a redelivered message
    assert world.record_token(tasks[1].taskId, "tok-1") is None
    ready = world.record_token(tasks[2].taskId, "tok-2")
    assert ready is not None
    assert [t.taskId for t in ready] == [t.taskId for t in tasks]
    assert world.record_token(tasks[2].taskId, "tok-2") is None  # announced once only
    assert [t.taskId for t in world.announcements.tasks_to_deliver(request_id)] == [t.taskId for t in tasks]


def test_record_token_from_concurrent_holds_announces_once(world: World, atomic_writes: None) -> None:
    world.enable()
    vms = [world.vm(f"node-{i}") for i in range(8)]
    app = world.resources.create_virtual_appliance(
        world.alice, world.ws, {"name": "cluster", "virtualmachines": vms}
    )
    tasks = world.requests.request_operation(world.alice, world.ws, "vapp", app.id, "deploy")
    calls = [(t.taskId, f"tok-{i}") for i, t in enumerate(tasks)] * 2  # every message delivered twice
    barrier = threading.Barrier(len(calls))

    def report(call: tuple[str, str]) -> list[Task] | None:
        barrier.wait()
        return world.record_token(*call)

    with ThreadPoolExecutor(len(calls)) as pool:
        results = list(pool.map(report, calls))
    announced = [r for r in results if r is not None]
    assert len(announced) == 1
    assert len(announced[0]) == 8


def test_webhook_delivery_is_recorded_on_every_task(world: World) -> None:
    world.enable()
    vms = [world.vm(f"node-{i}") for i in range(2)]
    app = world.resources.create_virtual_appliance(
        world.alice, world.ws, {"name": "pair", "virtualmachines": vms}
    )
    tasks = world.requests.request_operation(world.alice, world.ws, "vapp", app.id, "deploy")
    for t in tasks:
        world.record_token(t.taskId, f"tok-{t.taskId}")
    request_id = tasks[0].request_id
    world.announcements.record_delivery(request_id, False, "the workflow endpoint answered 503", 1)
    for t in tasks:
        shown = world.task(t.taskId)
        assert shown.state == "QUEUEING"  # still held, and visible
        assert shown.extradata["webhook"].startswith("attempt 1 failed at ")
        assert shown.extradata["webhook"].endswith("the workflow endpoint answered 503")
    assert len(world.announcements.tasks_to_deliver(request_id)) == 2
    world.announcements.record_delivery(request_id, True, None, 2)
    world.announcements.record_delivery(request_id, False, "late report of an older attempt", 1)
    assert world.task(tasks[0].taskId).extradata["webhook"].startswith("delivered on attempt 2")
    assert world.announcements.tasks_to_deliver(request_id) == []


# ---- decisions ----------------------------------------------------------------------------------------


def test_continue_runs_the_jobs_through_the_bound_flow(world: World) -> None:
    world.enable()
    vm = world.vm("web-1")
    task = world.held(vm)
    world.record_token(task.taskId, "tok-1")
    outcome = world.decisions.decide(world.approver, task.taskId, "continue", None, SOURCE)
    # The request answers after the decision: the token call resumes the hold, which starts the jobs
    assert (outcome.status_code, outcome.task.state) == (202, "PENDING")
    assert world.holds.releases == [("tok-1", "continue")]
    assert world.jobs.started == []
    assert world.run_state_machines() == [task.taskId]
    started_task = world.task(task.taskId)
    assert started_task.state == "STARTED"
    [(started, flow)] = world.jobs.started
    assert flow == "deploy-flow"
    assert started.taskId == task.taskId
    assert started.state == "PENDING"  # continue -> PENDING, then the jobs start
    assert world.vm_state(vm) == ("DEPLOYING", task.taskId)
    assert started_task.execution_id == jobs_execution_id(task.taskId)
    assert world.jobs.executions == [jobs_execution_id(task.taskId)]

    done = world.task_jobs.finished(task.taskId, True, "deployed on host-7")
    assert done.state == "FINISHED_SUCCESSFULLY"
    assert {j.state.value for j in done.jobs.collection} == {"DONE"}
    assert world.vm_state(vm) == ("ON", None)
    again = world.task_jobs.finished(task.taskId, False, "a late duplicate")  # idempotent
    assert again.state == "FINISHED_SUCCESSFULLY"
    assert world.task(task.taskId).extradata["jobs"] == "deployed on host-7"


def test_cancel_with_a_message_runs_nothing_and_restores_the_vm(world: World) -> None:
    vm = world.deployed_vm("db-1")
    world.enable()
    jobs_before = len(world.jobs.started)
    task = world.held(vm, "undeploy")
    assert world.vm_state(vm) == ("WAITING_FOR_REVIEW", task.taskId)
    world.record_token(task.taskId, "tok-1")
    outcome = world.decisions.decide(world.approver, task.taskId, "cancel", "cancelled", SOURCE)
    assert outcome.status_code == 200
    assert outcome.task.state == "CANCELLED"
    assert outcome.task.extradata["workflow"] == "cancelled"
    assert world.task(task.taskId).extradata["workflow"] == "cancelled"
    assert len(world.jobs.started) == jobs_before
    assert world.holds.releases == [("tok-1", "cancel")]
    assert world.vm_state(vm) == ("ON", None)


def test_the_same_decision_twice_is_not_an_error(world: World) -> None:
    world.enable()
    first, second = world.held(world.vm("a")), world.held(world.vm("b"))
    world.record_token(first.taskId, "tok-a")
    world.record_token(second.taskId, "tok-b")
    assert world.decisions.decide(world.approver, first.taskId, "continue", None, SOURCE).status_code == 202
    world.run_state_machines()  # the hold has started the jobs by the time the double click arrives
    repeat = world.decisions.decide(world.approver, first.taskId, "continue", None, SOURCE)
    assert repeat.status_code == 200
    assert repeat.task.state == "STARTED"
    assert world.decisions.decide(world.approver, second.taskId, "cancel", None, SOURCE).status_code == 200
    assert world.decisions.decide(world.alice, second.taskId, "cancel", None, SOURCE).status_code == 200
    assert world.holds.releases == [("tok-a", "continue"), ("tok-b", "cancel")]
    assert len(world.jobs.started) == 1


def test_a_different_decision_on_a_decided_task_is_gone(world: World) -> None:
    world.enable()
    task = world.held(world.vm())
    world.record_token(task.taskId, "tok")
    decided = world.decisions.decide(world.approver, task.taskId, "continue", None, SOURCE).task
    with pytest.raises(Gone) as err:
        world.decisions.decide(world.approver, task.taskId, "cancel", None, SOURCE)
    assert err.value.status == 410
    assert "already continued by approver at 2024-05-01T" in err.value.message
    assert decided.decided_at is not None
    assert world.holds.releases == [("tok", "continue")]


def test_concurrent_continue_and_cancel_one_wins(world: World, atomic_writes: None) -> None:
    world.enable()
    tasks = [world.held(world.vm(f"race-{i}")) for i in range(4)]
    for t in tasks:
        world.record_token(t.taskId, f"tok-{t.taskId}")
    for t in tasks:
        barrier = threading.Barrier(4)

        def decide(decision: str, task_id: str = t.taskId, barrier: threading.Barrier = barrier) -> Any:
            barrier.wait()
            return outcome_of(lambda: world.decisions.decide(world.approver, task_id, decision, None, SOURCE))

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(decide, ["continue", "cancel", "continue", "cancel"]))
        world.run_state_machines()
        final = world.task(t.taskId)
        winner = "continue" if final.state == "STARTED" else "cancel"
        assert final.state in ("STARTED", "CANCELLED")
        for decision, result in zip(["continue", "cancel", "continue", "cancel"], results, strict=True):
            if decision == winner:
                assert result.status_code in (200, 202)
            else:
                assert isinstance(result, Conflict | Gone)
        assert [r for r in world.holds.releases if r[0] == f"tok-{t.taskId}"] == [(f"tok-{t.taskId}", winner)]
    assert len(world.jobs.started) == sum(1 for t in tasks if world.task(t.taskId).state == "STARTED")


def test_who_may_decide(world: World) -> None:
    world.enable()
    task = world.held(world.vm("mine"))
    with pytest.raises(Forbidden) as err:
        world.decisions.decide(world.alice, task.taskId, "continue", None, SOURCE)  # own task, no privilege
    assert "WORKFLOW_OVERRIDE" in err.value.message
    for decision in ("continue", "cancel"):
        with pytest.raises(Forbidden):
            world.decisions.decide(world.bob, task.taskId, decision, None, SOURCE)
        with pytest.raises(Forbidden):
            world.decisions.decide(world.admin, task.taskId, decision, None, SOURCE)
        with pytest.raises(NotFound):
            world.decisions.decide(world.outsider, task.taskId, decision, None, SOURCE)
    with pytest.raises(NotFound):
        world.decisions.decide(
            world.approver, "00000000-0000-0000-0000-000000000000", "continue", None, SOURCE
        )
    with pytest.raises(BadRequest):
        world.decisions.decide(world.approver, task.taskId, "approve", None, SOURCE)
    with pytest.raises(PayloadTooLarge):
        world.decisions.decide(world.approver, task.taskId, "cancel", "x" * 20_000, SOURCE)
    assert world.task(task.taskId).state == "QUEUEING"  # nothing above changed it
    assert world.decisions.decide(world.alice, task.taskId, "cancel", None, SOURCE).task.state == "CANCELLED"


def test_a_task_that_was_never_held_cannot_be_decided(world: World) -> None:
    [task] = world.requests.request_operation(world.alice, world.ws, "vm", world.vm(), "deploy")
    assert task.state == "STARTED"
    with pytest.raises(Conflict) as err:
        world.decisions.decide(world.approver, task.taskId, "continue", None, SOURCE)
    assert err.value.code == "task_not_held"


def test_a_continue_before_the_token_starts_the_jobs_once_the_token_arrives(world: World) -> None:
    world.enable()
    task = world.held(world.vm())
    outcome = world.decisions.decide(world.approver, task.taskId, "continue", None, SOURCE)
    assert (outcome.status_code, outcome.task.state) == (202, "PENDING")
    assert world.holds.releases == []  # no token yet
    assert world.run_state_machines() == []
    assert world.record_token(task.taskId, "late-token") is None  # nothing left to announce
    assert world.holds.releases == [("late-token", "continue")]
    assert world.run_state_machines() == [task.taskId]
    assert world.task(task.taskId).state == "STARTED"
    assert [t.taskId for t, _ in world.jobs.started] == [task.taskId]


def test_the_jobs_of_a_continue_start_once_however_often_the_hold_says_so(
    world: World, atomic_writes: None
) -> None:
    world.enable()
    task = world.held(world.vm())
    world.record_token(task.taskId, "tok")
    world.decisions.decide(world.approver, task.taskId, "continue", None, SOURCE)
    event = ApprovalEvent(event="continued", task_id=task.taskId, request_id=task.request_id)
    barrier = threading.Barrier(4)

    def deliver(_: int) -> None:  # the queue delivers the event to four notifiers at once
        barrier.wait()
        world.notifier.handle(event)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(deliver, range(4)))
    world.notifier.handle(event)  # and once more, later
    shown = world.task(task.taskId)
    assert shown.state == "STARTED"
    assert shown.execution_id == jobs_execution_id(task.taskId)
    assert world.jobs.executions == [jobs_execution_id(task.taskId)]
    assert len(world.jobs.started) == 1


def test_the_flows_context_makes_one_execution_however_often_the_jobs_start(world: World) -> None:
    """The real adapter behind the Jobs port (flowgate.bridges.FlowJobs on the flows service), not the
    fake: a start repeated with the task's derived id finds the execution made before."""
    from flowgate.bridges import FlowJobs

    # Given a continued task whose jobs are about to start
    world.enable()
    task = world.held(world.vm("web-20"))
    world.record_token(task.taskId, "tok-20")
    world.decisions.decide(world.approver, task.taskId, "continue", None, SOURCE)
    record = world.c.workflow_task_store.get(task.taskId)
    assert record is not None
    jobs = TaskJobs(world.c.workflow_task_store, lambda: FlowJobs(world.c.flows), world.clock)
    # When two starters racing both reach the flows context before either marks the task STARTED
    adapter = FlowJobs(world.c.flows)
    adapter.start(record.task(), record.flow, jobs_execution_id(task.taskId))
    adapter.start(record.task(), record.flow, jobs_execution_id(task.taskId))  # no refusal: a repeat
    # and then both go on from what they read before (two deliveries of `continued`)
    first, second = jobs.start(record), jobs.start(record)
    # Then one execution runs them, queued for the runner, and the task is STARTED with it
    assert (first.state, second.state) == ("STARTED", "STARTED")
    execution_id = jobs_execution_id(task.taskId)
    execution = world.c.flows.find_execution(execution_id)
    assert execution is not None
    assert (execution.task_id, execution.flow, execution.status.value) == (
        task.taskId,
        "deploy-flow",
        "pending",
    )
    listed, _ = world.c.flows.list_executions(world.admin, world.ws, 50, None)
    assert [e.id for e in listed] == [execution_id]
    assert world.task(task.taskId).execution_id == execution_id


def test_a_decision_before_the_token_is_released_when_it_arrives(world: World) -> None:
    world.enable()
    task = world.held(world.vm())
    assert world.decisions.decide(world.alice, task.taskId, "cancel", None, SOURCE).task.state == "CANCELLED"
    assert world.holds.releases == []  # no token yet
    assert world.record_token(task.taskId, "late-token") is None  # nothing left to announce
    assert world.holds.releases == [("late-token", "cancel")]
    assert world.record_token(task.taskId, "late-token") is None
    assert world.holds.releases == [("late-token", "cancel")]


# ---- enablement ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("switch_off", ["platform", "endpoint", "enterprise"])
def test_without_workflow_tasks_run_at_once(world: World, switch_off: str) -> None:
    if switch_off != "endpoint":
        world.enable()
    if switch_off == "platform":
        world.settings.set_property(ROOT, "client.main.workflowEnabled", "0")
    if switch_off == "enterprise":
        world.settings.put_enterprise(world.admin, world.cid, {"workflow": False})
    if switch_off == "endpoint":
        world.settings.put_enterprise(world.admin, world.cid, {"workflow": True})
    vm = world.vm()
    [task] = world.requests.request_operation(world.alice, world.ws, "vm", vm, "deploy")
    assert task.state == "STARTED"
    assert world.holds.holds == []
    assert [(t.taskId, f) for t, f in world.jobs.started] == [(task.taskId, "deploy-flow")]
    assert world.vm_state(vm) == ("DEPLOYING", task.taskId)


def test_other_enterprises_flag_does_not_hold_ours(world: World) -> None:
    world.enable(cid=world.cid_b)
    [task] = world.requests.request_operation(world.alice, world.ws, "vm", world.vm(), "deploy")
    assert task.state == "STARTED"


def test_an_operation_needs_a_bound_flow(world: World, aws: str) -> None:
    cid, ws, admin = world.cid, world.ws, world.admin
    fresh = container().identity.create_workspace(admin, cid, CreateWorkspaceRequest(name="fresh")).id
    vm = world.resources.create_virtual_machine(admin, fresh, {"name": "vm", "cpu": 1, "ram": 512}).id
    with pytest.raises(Conflict) as err:
        world.requests.request_operation(admin, fresh, "vm", vm, "deploy")
    assert err.value.message == "bind a flow to deploy first"
    with pytest.raises(NotFound):
        world.bindings.bind_operation(admin, fresh, "deploy", "missing-flow")
    with pytest.raises(Forbidden):
        world.bindings.bind_operation(
            world.alice, ws, "deploy", "deploy-flow"
        )  # members do not choose what runs
    with pytest.raises(BadRequest):
        world.bindings.bind_operation(admin, fresh, "migrate", "deploy-flow")
    _flow(fresh, "mine")
    bound = world.bindings.bind_operation(admin, fresh, "deploy", "mine")
    assert bound.flow == "mine"
    assert world.bindings.get_binding(admin, fresh, "deploy") == bound
    [task] = world.requests.request_operation(admin, fresh, "vm", vm, "deploy")
    assert world.jobs.started[-1] == (world.jobs.started[-1][0], "mine")
    assert task.flow == "mine"


def test_hold_that_cannot_start_ends_in_ack_error(world: World) -> None:
    world.enable(limits={"maxVirtualMachines": 1})
    world.holds.fail = True
    vm = world.vm()
    [task] = world.requests.request_operation(world.alice, world.ws, "vm", vm, "deploy")
    assert task.state == "ACK_ERROR"
    assert "could not be held for review" in task.extradata["workflow"]
    assert world.vm_state(vm) == ("NOT_ALLOCATED", None)
    world.holds.fail = False
    assert world.held(vm).state == "QUEUEING"  # the reservation was given back


def test_jobs_that_cannot_start_end_aborted(world: World) -> None:
    world.jobs.fail = True
    vm = world.vm()
    [task] = world.requests.request_operation(world.alice, world.ws, "vm", vm, "deploy")
    assert task.state == "ABORTED"
    assert "could not start the jobs" in task.extradata["jobs"]
    assert world.vm_state(vm) == ("NOT_ALLOCATED", None)


# ---- limits -------------------------------------------------------------------------------------------


def test_a_request_beyond_the_limits_is_refused_and_changes_nothing(world: World) -> None:
    world.enable(limits={"maxVirtualMachines": 1})
    first, second = world.vm("first"), world.vm("second")
    held = world.held(first)
    with pytest.raises(Conflict) as err:
        world.requests.request_operation(world.alice, world.ws, "vm", second, "deploy")
    assert err.value.code == "limit_exceeded"
    assert "maxVirtualMachines is 1" in err.value.message
    assert world.vm_state(second) == ("NOT_ALLOCATED", None)
    assert len(world.holds.holds) == 1
    page, _ = world.pending.pending_tasks(world.admin, world.cid)
    assert [t.taskId for t in page] == [held.taskId]
    world.decisions.decide(world.alice, held.taskId, "cancel", None, SOURCE)  # gives the reservation back
    assert world.held(second).state == "QUEUEING"


def test_an_appliance_counts_all_its_vms(world: World) -> None:
    world.enable(limits={"maxCpu": 5})
    vms = [world.vm(f"n{i}", cpu=2) for i in range(3)]
    app = world.resources.create_virtual_appliance(
        world.alice, world.ws, {"name": "app", "virtualmachines": vms}
    )
    with pytest.raises(Conflict) as err:
        world.requests.request_operation(world.alice, world.ws, "vapp", app.id, "deploy")
    assert "maxCpu is 5 and 0 CPUs are in use or reserved, 6 more requested" in err.value.message
    assert {world.vm_state(v) for v in vms} == {("NOT_ALLOCATED", None)}


def test_reconfigure_counts_the_growth_and_applies_the_size(world: World) -> None:
    vm = world.deployed_vm("db", cpu=2, ram=2048)
    world.settings.put_enterprise(world.admin, world.cid, {"limits": {"maxCpu": 4}})
    with pytest.raises(Conflict) as err:
        world.requests.request_operation(world.alice, world.ws, "vm", vm, "reconfigure", cpu=5)
    assert "maxCpu is 4" in err.value.message
    [task] = world.requests.request_operation(world.alice, world.ws, "vm", vm, "reconfigure", cpu=4, ram=1024)
    assert world.vm_state(vm) == ("RECONFIGURING", task.taskId)
    job = task.jobs.collection[0]
    assert (job.type, job.cpu, job.ram) == ("RECONFIGURE", 4, 1024)
    world.task_jobs.finished(task.taskId, True, None)
    shown = world.resources.get_virtual_machine(world.alice, world.ws, vm)
    assert (shown.state, shown.cpu, shown.ram) == ("ON", 4, 1024)
    with pytest.raises(BadRequest):
        world.requests.request_operation(world.alice, world.ws, "vm", vm, "reconfigure")
    with pytest.raises(BadRequest):
        world.requests.request_operation(world.alice, world.ws, "vm", vm, "undeploy", cpu=1)


def test_undeploy_frees_resources_once_done(world: World) -> None:
    vm = world.deployed_vm("one")
    world.settings.put_enterprise(world.admin, world.cid, {"limits": {"maxVirtualMachines": 1}})
    other = world.vm("two")
    with pytest.raises(Conflict):
        world.requests.request_operation(world.alice, world.ws, "vm", other, "deploy")
    [undeploy] = world.requests.request_operation(world.alice, world.ws, "vm", vm, "undeploy")
    with pytest.raises(Conflict):  # not until the undeploy has happened
        world.requests.request_operation(world.alice, world.ws, "vm", other, "deploy")
    world.task_jobs.finished(undeploy.taskId, True, None)
    assert world.vm_state(vm) == ("NOT_ALLOCATED", None)
    [deploy] = world.requests.request_operation(world.alice, world.ws, "vm", other, "deploy")
    failed = world.task_jobs.finished(deploy.taskId, False, "no host has room")
    assert failed.state == "FINISHED_UNSUCCESSFULLY"
    assert {j.state.value for j in failed.jobs.collection} == {"FAILED"}
    assert world.vm_state(other) == ("NOT_ALLOCATED", None)
    world.requests.request_operation(
        world.alice, world.ws, "vm", vm, "deploy"
    )  # the failed deploy gave it back


def test_vm_operations_follow_the_vm_state(world: World) -> None:
    vm = world.vm()
    for op in ("undeploy", "reconfigure"):
        with pytest.raises(Conflict):
            world.requests.request_operation(
                world.alice, world.ws, "vm", vm, op, **({"cpu": 4} if op == "reconfigure" else {})
            )
    [task] = world.requests.request_operation(world.alice, world.ws, "vm", vm, "deploy")
    with pytest.raises(Conflict) as err:
        world.requests.request_operation(world.alice, world.ws, "vm", vm, "undeploy")
    assert err.value.code == "vm_busy"
    world.task_jobs.finished(task.taskId, True, None)
    with pytest.raises(Conflict):
        world.requests.request_operation(world.alice, world.ws, "vm", vm, "deploy")


# ---- timeouts -----------------------------------------------------------------------------------------


def test_timeout_applies_the_default_action(world: World) -> None:
    world.enable()
    vm = world.vm()
    task = world.held(vm)
    world.record_token(task.taskId, "tok")
    timed_out = world.decisions.time_out(task.taskId)
    assert timed_out.state == "CANCELLED"
    assert timed_out.extradata["workflow"] == "TIMED_OUT: cancel after 3600s"
    assert world.holds.releases == [("tok", "timeout")]
    assert world.vm_state(vm) == ("NOT_ALLOCATED", None)
    assert world.decisions.time_out(task.taskId).state == "CANCELLED"  # a repeat changes nothing
    assert world.holds.releases == [("tok", "timeout")]
    with pytest.raises(Gone) as err:
        world.decisions.decide(world.approver, task.taskId, "continue", None, SOURCE)
    assert "when its approval timed out" in err.value.message


def test_timeout_may_continue_with_the_enterprises_override(world: World) -> None:
    world.enable(approvalTimeoutSeconds=120, approvalTimeoutAction="continue")
    task = world.held(world.vm())
    assert world.holds.holds[-1][2] == 120
    world.record_token(task.taskId, "tok")
    done = world.decisions.time_out(task.taskId)
    assert done.state == "STARTED"
    assert done.extradata["workflow"] == "TIMED_OUT: continue after 120s"
    assert [f for _, f in world.jobs.started] == ["deploy-flow"]


def test_timeout_after_a_decision_is_a_no_op(world: World) -> None:
    world.enable()
    task = world.held(world.vm())
    world.record_token(task.taskId, "tok")
    world.decisions.decide(world.approver, task.taskId, "continue", "go", SOURCE)
    world.run_state_machines()
    after = world.decisions.time_out(task.taskId)
    assert after.state == "STARTED"
    assert after.extradata["workflow"] == "go"
    assert world.holds.releases == [("tok", "continue")]
    assert len(world.jobs.started) == 1


# ---- pending tasks ------------------------------------------------------------------------------------


def test_pending_tasks_newest_first_filtered_and_paged(world: World) -> None:
    on_vm = world.deployed_vm("on-1")
    world.enable()
    a1 = world.held(world.vm("a1"))
    c1 = world.held(world.vm("c1"), who=world.carol)
    a2 = world.held(on_vm, "undeploy")
    a3 = world.held(world.vm("a3"))
    decided = world.held(world.vm("gone"))
    world.decisions.decide(world.alice, decided.taskId, "cancel", None, SOURCE)
    world.enable(cid=world.cid_b)
    vm_b = world.vm("b1", ws=world.ws_b)
    world.requests.request_operation(world.admin_b, world.ws_b, "vm", vm_b, "deploy")

    def ids(tasks: list[Task]) -> list[str]:
        return [t.taskId for t in tasks]

    everything, cursor = world.pending.pending_tasks(world.approver, world.cid)
    assert ids(everything) == [a3.taskId, a2.taskId, c1.taskId, a1.taskId]  # newest first, QUEUEING only
    assert cursor is None
    assert {link.rel for t in everything for link in t.links} >= {"continue", "cancel"}

    first, cursor = world.pending.pending_tasks(world.approver, world.cid, limit=3)
    assert ids(first) == [a3.taskId, a2.taskId, c1.taskId]
    assert cursor is not None
    rest, cursor = world.pending.pending_tasks(world.approver, world.cid, limit=3, cursor=cursor)
    assert (ids(rest), cursor) == ([a1.taskId], None)

    mine, _ = world.pending.pending_tasks(world.alice, world.cid, user_id=world.alice.user_id)
    assert ids(mine) == [a3.taskId, a2.taskId, a1.taskId]
    carols, _ = world.pending.pending_tasks(world.approver, world.cid, user_id=world.carol.user_id)
    assert ids(carols) == [c1.taskId]
    undeploys, _ = world.pending.pending_tasks(world.admin, world.cid, type="UNDEPLOY")
    assert ids(undeploys) == [a2.taskId]
    deploys, cursor = world.pending.pending_tasks(world.admin, world.cid, type="deploy", limit=2)
    assert ids(deploys) == [a3.taskId, c1.taskId]  # the filter skips the undeploy in between
    more, _ = world.pending.pending_tasks(world.admin, world.cid, type="deploy", limit=2, cursor=cursor)
    assert ids(more) == [a1.taskId]
    by_vm, _ = world.pending.pending_tasks(world.admin, world.cid, vm=on_vm)
    assert ids(by_vm) == [a2.taskId]
    window, _ = world.pending.pending_tasks(
        world.admin, world.cid, since=c1.creationTimestamp, until=a2.creationTimestamp
    )
    assert ids(window) == [a2.taskId, c1.taskId]
    later, _ = world.pending.pending_tasks(world.admin, world.cid, since=a2.creationTimestamp)
    assert ids(later) == [a3.taskId, a2.taskId]
    earlier, _ = world.pending.pending_tasks(world.admin, world.cid, until=c1.creationTimestamp)
    assert ids(earlier) == [c1.taskId, a1.taskId]


def test_pending_tasks_permissions_and_tenancy(world: World) -> None:
    world.enable()
    world.held(world.vm("a"))
    world.enable(cid=world.cid_b)
    vm_b = world.vm("b", ws=world.ws_b)
    [task_b] = world.requests.request_operation(world.admin_b, world.ws_b, "vm", vm_b, "deploy")
    with pytest.raises(Forbidden):
        world.pending.pending_tasks(world.bob, world.cid)
    with pytest.raises(Forbidden):
        world.pending.pending_tasks(world.bob, world.cid, user_id=world.alice.user_id)
    assert world.pending.pending_tasks(world.bob, world.cid, user_id=world.bob.user_id) == ([], None)
    with pytest.raises(NotFound):
        world.pending.pending_tasks(world.outsider, world.cid)
    with pytest.raises(NotFound):  # a user of B through A's listing finds nothing of B's
        world.pending.pending_tasks(world.admin, world.cid, user_id=world.admin_b.user_id)
    with pytest.raises(NotFound):
        world.pending.pending_tasks(ROOT, "no-such-enterprise")
    listed, _ = world.pending.pending_tasks(ROOT, world.cid)
    assert task_b.taskId not in [t.taskId for t in listed]
    with pytest.raises(BadRequest):
        world.pending.pending_tasks(world.admin, world.cid, limit=0)
    with pytest.raises(BadRequest):
        world.pending.pending_tasks(world.admin, world.cid, type="MIGRATE")
    with pytest.raises(NotFound):
        world.tasks.get_task(world.outsider, listed[0].taskId)
    with pytest.raises(NotFound):
        world.tasks.get_task(world.alice, task_b.taskId)


def test_pending_listing_reads_only_the_enterprises_held_tasks(world: World) -> None:
    """The listing is one Query of the enterprise's sparse index partition: other enterprises' tasks,
    however many, are never read (the 100 vs 100,000 benchmark measures the same on a bigger table)."""
    world.enable()
    mine = [world.held(world.vm(f"a{i}")) for i in range(3)]
    world.enable(cid=world.cid_b)
    for i in range(25):
        world.requests.request_operation(
            world.admin_b, world.ws_b, "vm", world.vm(f"b{i}", ws=world.ws_b), "deploy"
        )
    reads: list[dict[str, Any]] = []

    def seen(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in ("Query", "Scan"):
            reads.append({"op": model.name, "scanned": parsed.get("ScannedCount")})

    client = aws_clients.dynamodb()
    client.meta.events.register("after-call.dynamodb", seen)
    try:
        listed, _ = world.pending.pending_tasks(world.approver, world.cid)
    finally:
        client.meta.events.unregister("after-call.dynamodb", seen)
    assert [t.taskId for t in listed] == [t.taskId for t in reversed(mine)]
    assert reads == [{"op": "Query", "scanned": 3}]


# ---- reading tasks and the audit ----------------------------------------------------------------------


def test_reading_a_task(world: World) -> None:
    world.enable()
    task = world.held(world.vm())
    assert world.tasks.get_task(world.alice, task.taskId).taskId == task.taskId
    assert world.tasks.get_task(world.approver, task.taskId).state == "QUEUEING"
    assert world.tasks.get_task(world.bob, task.taskId).taskId == task.taskId  # works in the workspace
    with pytest.raises(NotFound):
        world.tasks.get_task(world.outsider, task.taskId)
    with pytest.raises(NotFound):
        world.tasks.get_task(world.alice, "no-such-task")


def test_every_attempt_is_audited(world: World) -> None:
    world.enable()
    task = world.held(world.vm())
    world.record_token(task.taskId, "tok")
    attempts: list[tuple[Principal, str, str | None]] = [
        (world.bob, "cancel", None),
        (world.alice, "continue", "please"),
        (world.outsider, "continue", None),
        (world.approver, "continue", "approved by CAB-42"),
        (world.approver, "continue", None),
        (world.alice, "cancel", "never mind"),
    ]
    for who, decision, message in attempts:
        outcome_of(functools.partial(world.decisions.decide, who, task.taskId, decision, message, SOURCE))
    records = world.tasks.audit(world.approver, task.taskId)
    assert [(r.actor, r.decision, r.status) for r in records] == [
        ("bob", "cancel", 403),
        ("alice", "continue", 403),
        # the outsider's 404 is not recorded: another enterprise leaves no trace in this tenant's audit
        ("approver", "continue", 202),
        ("approver", "continue", 200),
        ("alice", "cancel", 410),
    ]
    assert {r.source_ip for r in records} == {SOURCE}
    assert records[2].message == "approved by CAB-42"
    assert records[1].message == "please"
    assert "already continued" in records[4].outcome
    with pytest.raises(Forbidden):
        world.tasks.audit(world.alice, task.taskId)
    with pytest.raises(NotFound):
        world.tasks.audit(world.outsider, task.taskId)
    assert len(world.tasks.audit(world.admin, task.taskId)) == 5


def test_timeouts_are_audited_as_the_system(world: World) -> None:
    world.enable()
    task = world.held(world.vm())
    world.decisions.time_out(task.taskId)
    [record] = world.tasks.audit(world.admin, task.taskId)
    assert (record.actor, record.decision, record.outcome) == (
        "system",
        "cancel",
        "TIMED_OUT: cancel after 3600s",
    )


# ---- enterprise settings and platform properties --------------------------------------------------------


def test_enterprise_settings(world: World) -> None:
    shown = world.settings.get_enterprise(world.alice, world.cid)
    assert (shown.id, shown.name, shown.workflow) == (world.cid, "enterprise-a", False)
    body = {**shown.model_dump(mode="json"), "workflow": True, "limits": {"maxCpu": 8}}
    changed = world.settings.put_enterprise(world.admin, world.cid, body)
    assert changed.workflow
    assert changed.limits.maxCpu == 8
    # A full representation: what is left out takes its default.
    reset = world.settings.put_enterprise(world.admin, world.cid, {"workflow": True})
    assert reset.limits.maxCpu is None
    assert world.settings.get_enterprise(world.approver, world.cid).workflow
    with pytest.raises(Forbidden):
        world.settings.put_enterprise(world.approver, world.cid, {"workflow": False})
    with pytest.raises(NotFound):
        world.settings.get_enterprise(world.outsider, world.cid)
    with pytest.raises(NotFound):
        world.settings.put_enterprise(world.admin_b, world.cid, {"workflow": False})
    with pytest.raises(BadRequest):
        world.settings.put_enterprise(world.admin, world.cid, {"workflow": True, "name": "renamed"})
    with pytest.raises(BadRequest):
        world.settings.put_enterprise(world.admin, world.cid, {"workflow": True, "color": "red"})
    with pytest.raises(BadRequest):
        world.settings.put_enterprise(world.admin, world.cid, {"approvalTimeoutAction": "approve"})
    assert world.settings.put_enterprise(ROOT, world.cid, {"workflow": False}).workflow is False


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("not a url", "url_not_allowed"),
        ("ftp://example.com/hook", "url_not_allowed"),
        ("http://169.254.169.254/latest/meta-data", "url_not_allowed"),
        ("http://10.0.0.8/hook", "url_not_allowed"),
        ("http://user:pass@93.184.216.34/hook", "url_not_allowed"),
    ],
)
def test_workflow_endpoint_is_guarded(world: World, url: str, why: str) -> None:
    with pytest.raises(BadRequest) as err:
        world.settings.set_property(ROOT, "client.main.workflowEndPoint", url)
    assert err.value.code == why
    assert world.settings.notification_target() is None


def test_platform_properties(world: World) -> None:
    with pytest.raises(BadRequest) as err:
        world.settings.set_property(ROOT, "client.main.workflowEnabled", "1")
    assert "client.main.workflowEndPoint" in err.value.message
    with pytest.raises(Forbidden):
        world.settings.set_property(world.admin, "client.main.workflowEndPoint", ENDPOINT)
    with pytest.raises(BadRequest):
        world.settings.set_property(ROOT, "client.main.somethingElse", "1")
    with pytest.raises(BadRequest):
        world.settings.set_property(ROOT, "client.main.workflowEnabled", "yes")
    with pytest.raises(BadRequest):
        world.settings.set_property(ROOT, "client.main.workflowSigningSecret", "hunter2")

    world.settings.set_property(ROOT, "client.main.workflowEndPoint", "https://93.184.216.34/abiquo-workflow")
    world.settings.set_property(ROOT, "client.main.workflowEnabled", "1")
    shown = world.settings.set_property(ROOT, "client.main.workflowSigningSecret", SECRET)
    assert (shown.value, shown.isSet, shown.writeOnly) == (None, True, True)
    listed = {p.name.value: p for p in world.settings.list_properties(world.alice)}
    assert listed["client.main.workflowEndPoint"].value == "https://93.184.216.34/abiquo-workflow"
    assert listed["client.main.workflowEnabled"].value == "1"
    assert listed["client.main.workflowSigningSecret"].isSet
    assert SECRET not in str([p.model_dump() for p in listed.values()])
    assert world.settings.notification_target() == "https://93.184.216.34/abiquo-workflow"
    assert world.settings.signing_secret() == SECRET
    with pytest.raises(BadRequest):  # not while workflow is on
        world.settings.set_property(ROOT, "client.main.workflowEndPoint", "")
    world.settings.set_property(ROOT, "client.main.workflowEnabled", "0")
    world.settings.set_property(ROOT, "client.main.workflowEndPoint", "")
    world.settings.set_property(ROOT, "client.main.workflowSigningSecret", "")
    assert world.settings.notification_target() is None
    assert world.settings.signing_secret() is None


# ---- resources and tenancy ----------------------------------------------------------------------------


def test_the_chosen_signing_secret_lives_in_secrets_manager_not_in_the_table(world: World) -> None:
    # Given the platform admin chooses a webhook signing secret
    world.settings.set_property(ROOT, "client.main.workflowSigningSecret", SECRET)
    # Then the table's platform item says only that one is chosen, and Secrets Manager holds the value
    item = world.c.table.get("PLATFORM", "WORKFLOW") or {}
    assert item.get("signing_secret_set") is True
    assert SECRET not in str(item)
    name = f"flowgate/{world.c.settings.stage}/workflow/webhook-signing-secret"
    assert aws_clients.secretsmanager().get_secret_value(SecretId=name)["SecretString"] == SECRET
    assert world.settings.signing_secret() == SECRET
    # and clearing it removes both, so the stack's own secret signs again
    world.settings.set_property(ROOT, "client.main.workflowSigningSecret", "")
    assert "signing_secret_set" not in (world.c.table.get("PLATFORM", "WORKFLOW") or {})
    with pytest.raises(aws_clients.secretsmanager().exceptions.ResourceNotFoundException):
        aws_clients.secretsmanager().get_secret_value(SecretId=name)
    assert world.settings.signing_secret() is None


def test_resources_and_tenancy(world: World) -> None:
    vm = world.resources.create_virtual_machine(world.alice, world.ws, {"name": "Web", "cpu": 1, "ram": 512})
    assert (vm.state, vm.taskId) == ("NOT_ALLOCATED", None)
    with pytest.raises(Conflict):
        world.resources.create_virtual_machine(world.alice, world.ws, {"name": "web", "cpu": 1, "ram": 512})
    with pytest.raises(BadRequest):
        world.resources.create_virtual_machine(world.alice, world.ws, {"name": "big", "cpu": 65, "ram": 512})
    with pytest.raises(NotFound):
        world.resources.create_virtual_machine(world.outsider, world.ws, {"name": "x", "cpu": 1, "ram": 512})
    with pytest.raises(NotFound):
        world.resources.get_virtual_machine(world.outsider, world.ws, vm.id)
    with pytest.raises(NotFound):
        world.requests.request_operation(world.outsider, world.ws, "vm", vm.id, "deploy")
    listed, _ = world.resources.list_virtual_machines(world.bob, world.ws)
    assert [v.id for v in listed] == [vm.id]

    vm_b = world.vm("b", ws=world.ws_b)
    with pytest.raises(BadRequest):  # a VM of another workspace is not ours to group
        world.resources.create_virtual_appliance(
            world.alice, world.ws, {"name": "app", "virtualmachines": [vm_b]}
        )
    app = world.resources.create_virtual_appliance(
        world.alice, world.ws, {"name": "app", "virtualmachines": [vm.id]}
    )
    assert world.resources.get_virtual_machine(world.alice, world.ws, vm.id).virtualApplianceId == app.id
    with pytest.raises(Conflict):  # a VM belongs to one appliance
        world.resources.create_virtual_appliance(
            world.alice, world.ws, {"name": "other", "virtualmachines": [vm.id]}
        )
    assert world.resources.get_virtual_appliance(world.bob, world.ws, app.id) == app
    assert world.resources.list_virtual_appliances(world.bob, world.ws) == ([app], None)
    with pytest.raises(BadRequest):
        world.requests.request_operation(world.alice, world.ws, "vapp", app.id, "reconfigure", cpu=2)
    with pytest.raises(NotFound):
        world.requests.request_operation(world.alice, world.ws, "vapp", "no-such-app", "deploy")


def test_composition_root(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The container wires each workflow use case from settings, on one store per kind of item, with
    the identity and flows contexts and the adapters behind the ports."""
    from flowgate.bridges import FlowJobs
    from flowgate.workflow.adapters import StepFunctionsHolds

    monkeypatch.setenv("APPROVAL_TIMEOUT_SECONDS", "900")
    wiring.install(None)  # a new container process reads the environment
    c = container()
    assert c.workflow_task_store.table.name == aws
    assert c.workflow_resource_store.table is c.table
    assert c.workflow_settings_store.table is c.table
    requests = c.operation_requests
    assert isinstance(requests, OperationRequests)
    assert requests.default_timeout_seconds == 900
    assert requests.tasks is c.workflow_task_store
    assert requests.resources is c.workflow_resource_store
    assert requests.settings is c.workflow_settings_store
    assert requests.jobs is c.workflow_jobs
    assert c.decisions.tasks is c.workflow_task_store
    assert c.decisions.jobs is c.workflow_jobs
    assert c.decisions.holds is c.holds
    assert isinstance(c.holds, StepFunctionsHolds)
    assert isinstance(c.workflow_jobs.jobs, FlowJobs)
    assert c.announcements.tasks is c.workflow_task_store
    assert c.pending_tasks.tasks is c.workflow_task_store
    assert c.workflow_tasks.tasks is c.workflow_task_store
    assert c.workflow_resources.store is c.operation_bindings.store
    assert c.workflow_settings.store is c.workflow_settings_store
    notifier = c.notifier
    assert (notifier.tokens, notifier.timeouts, notifier.jobs) == (
        c.announcements,
        c.decisions,
        c.workflow_jobs,
    )


def test_a_continue_costs_three_aws_calls_after_authentication(world: World) -> None:
    """GetItem, TransactWriteItems, SendTaskSuccess: the jobs start outside the request."""
    from flowgate.workflow.adapters import StepFunctionsHolds

    world.enable()
    task = world.held(world.vm("web-3"))
    world.record_token(task.taskId, "tok-3")
    calls: list[str] = []

    def seen(model: Any, **_: Any) -> None:
        calls.append(model.name)

    sfn = StepFunctionsHolds("arn:aws:states:us-east-1:123456789012:stateMachine:none")
    decisions = Decisions(world.c.workflow_task_store, sfn, world.task_jobs, world.clock)
    clients = [aws_clients.dynamodb(), aws_clients.stepfunctions(), aws_clients.sqs()]
    for client in clients:
        client.meta.events.register("after-call", seen)
    try:
        outcome = decisions.decide(world.approver, task.taskId, "continue", None, SOURCE)
    finally:
        for client in clients:
            client.meta.events.unregister("after-call", seen)
    assert (outcome.status_code, outcome.task.state) == (202, "PENDING")
    assert calls == ["GetItem", "TransactWriteItems", "SendTaskSuccess"]
    assert world.jobs.started == []


def test_a_continue_whose_follow_through_died_is_finished_by_a_repeat(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a continue that won, but whose invocation died (Lambda timeout) before the jobs started
    class Died(BaseException):
        pass

    def dies(token: str, decision: str) -> None:
        raise Died

    world.enable()
    task = world.held(world.vm("web-9"))
    world.record_token(task.taskId, "tok-9")
    monkeypatch.setattr(world.holds, "release", dies)
    with pytest.raises(Died):
        world.decisions.decide(world.approver, task.taskId, "continue", None, SOURCE)
    assert world.task(task.taskId).state == "PENDING"
    assert world.jobs.started == []
    monkeypatch.undo()
    # When the workflow tool sends the same continue again, at once, and then a minute later
    soon = world.decisions.decide(world.approver, task.taskId, "continue", None, SOURCE)
    assert (soon.status_code, soon.task.state, world.jobs.started) == (200, "PENDING", [])
    assert world.holds.releases == []  # within the lease the winner may still be at work
    world.clock.now += timedelta(seconds=61)
    outcome = world.decisions.decide(world.approver, task.taskId, "continue", None, SOURCE)
    # Then the jobs start now, once, even though the token call resumed the hold as well
    assert (outcome.status_code, outcome.task.state) == (200, "STARTED")
    assert world.holds.releases == [("tok-9", "continue")]
    assert world.run_state_machines() == [task.taskId]
    assert world.task(task.taskId).state == "STARTED"
    assert len(world.jobs.started) == 1


def test_a_continue_whose_follow_through_died_is_finished_by_the_timeout(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a continue that won, but whose invocation died before its token call
    class Died(BaseException):
        pass

    def dies(token: str, decision: str) -> None:
        raise Died

    world.enable()
    task = world.held(world.vm("web-12"))
    world.record_token(task.taskId, "tok-12")
    monkeypatch.setattr(world.holds, "release", dies)
    with pytest.raises(Died):
        world.decisions.decide(world.approver, task.taskId, "continue", "go", SOURCE)
    monkeypatch.undo()
    # When nobody repeats it and the hold, still waiting, times out
    after = world.decisions.time_out(task.taskId)
    # Then the continue stands and its jobs start
    assert after.state == "STARTED"
    assert after.extradata["workflow"] == "go"
    assert [t.taskId for t, _ in world.jobs.started] == [task.taskId]
    assert world.decisions.time_out(task.taskId).state == "STARTED"  # a redelivered timeout
    assert len(world.jobs.started) == 1


def test_a_failed_token_call_does_not_undo_the_decision(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.enable()
    task = world.held(world.vm("web-10"))
    world.record_token(task.taskId, "tok-10")

    def broken(token: str, decision: str) -> None:
        raise RuntimeError("states:SendTaskSuccess failed")

    monkeypatch.setattr(world.holds, "release", broken)
    outcome = world.decisions.decide(world.approver, task.taskId, "continue", None, SOURCE)
    # the hold never heard of the continue, so the jobs start here
    assert (outcome.status_code, outcome.task.state) == (202, "STARTED")
    assert len(world.jobs.started) == 1
    monkeypatch.undo()
    # and when the hold, left waiting, times out, nothing starts twice
    assert world.decisions.time_out(task.taskId).state == "STARTED"
    assert len(world.jobs.started) == 1


def test_another_enterprise_leaves_no_trace_in_the_audit(world: World) -> None:
    world.enable()
    task = world.held(world.vm("web-11"))
    for decision in ("continue", "cancel"):
        with pytest.raises(NotFound):
            world.decisions.decide(world.outsider, task.taskId, decision, "x" * 1000, "203.0.113.9")
    assert world.tasks.audit(world.admin, task.taskId) == []
