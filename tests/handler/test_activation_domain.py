"""Active flows against moto (the table from template.yaml): activation rules, message queues, the
enforcer's stop and warning, kind changes and tenancy, through `ActivationService` and `Enforcer` with
recording fakes behind the queue, runner and event ports and a clock the tests move by hand."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flowgate import aws as aws_clients  # "aws" is the moto fixture
from flowgate import clock, db
from flowgate.activation import rules
from flowgate.activation.enforcer import WARNING_EVENT, Enforcer
from flowgate.activation.models import (
    ActivationSettings,
    ActivationStatus,
    MessageFailed,
    MessageRun,
    MessageStatus,
)
from flowgate.activation.service import ActivationService
from flowgate.activation.store import ActivationStore, activation_key, due_entries
from flowgate.db import Table
from flowgate.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge
from flowgate.identity.auth import principal_of
from flowgate.identity.models import (
    CreateContractRequest,
    CreateMemberRequest,
    CreateWorkspaceRequest,
    GrantAccessRequest,
    Principal,
    Role,
    WorkspaceKind,
)
from flowgate.wiring import container

ROOT = Principal(user_id="root", username="root", contract_id=None, role=None, platform_admin=True)
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
RUNTIME, WARNING = 100, 30


# ---- fakes and fixtures -------------------------------------------------------------------------------


class Clock:
    """Stands still until a test moves it."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> datetime:
        self.now = T0 + timedelta(seconds=seconds)
        return self.now


@dataclass
class FakeQueue:
    fail: bool = False
    sent: list[tuple[str, str, str]] = field(default_factory=list)

    def send(self, workspace_id: str, flow: str, message_id: str) -> None:
        if self.fail:
            raise RuntimeError("sqs:SendMessage failed")
        self.sent.append((workspace_id, flow, message_id))


@dataclass
class FakeRunner:
    failing: set[str] = field(default_factory=set)  # values of body["n"] whose runs fail
    runs: list[dict[str, Any]] = field(default_factory=list)

    outcomes: dict[str, MessageRun] = field(default_factory=dict)

    def run(
        self, workspace_id: str, flow: str, inputs: Any, started_by: str, execution_id: str
    ) -> MessageRun:
        self.runs.append(dict(inputs))
        ran = MessageRun(execution_id, True)
        if str(inputs["message"].get("n")) in self.failing:
            ran = MessageRun(execution_id, False, "the flow raised ValueError")
        self.outcomes[execution_id] = ran
        return ran

    def outcome(self, execution_id: str) -> MessageRun | None:
        return self.outcomes.get(execution_id)


@dataclass
class FakeEvents:
    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, detail_type: str, detail: Any) -> None:
        with self.lock:
            self.published.append((detail_type, dict(detail)))


@dataclass
class World:
    svc: ActivationService
    enforcer: Enforcer
    store: ActivationStore
    clock: Clock
    queue: FakeQueue
    runner: FakeRunner
    events: FakeEvents
    ws: str  # limited
    full_ws: str
    admin: Principal
    alice: Principal  # member with access to ws
    bob: Principal  # member of the contract without access
    ws_b: str
    admin_b: Principal

    def process_all(self) -> None:
        """What the SQS handler does with the FIFO queue: each sent message, in order."""
        sent, self.queue.sent = self.queue.sent, []
        for wsid, flow, mid in sent:
            self.svc.process_message(wsid, flow, mid, 1)

    def stopping_warnings(self) -> list[dict[str, Any]]:
        return [d for t, d in self.events.published if t == WARNING_EVENT]


def _member(cid: str, admin: Principal, name: str, role: Role = Role.MEMBER) -> Principal:
    made = container().identity.create_member(
        admin, cid, CreateMemberRequest(username=name, password=f"{name}-password-1", role=role)
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


def build(table: str, settings: ActivationSettings, clock: Clock) -> tuple[ActivationService, Enforcer, Any]:
    store = ActivationStore(Table(table))
    queue, runner, events = FakeQueue(), FakeRunner(), FakeEvents()
    svc = ActivationService(
        store,
        container().flows,
        container().identity,
        queue=queue,
        runner=runner,
        settings=settings,
        clock=clock,
    )
    return svc, Enforcer(store, events, settings, clock), (store, queue, runner, events)


def make_world(table: str, **overrides: Any) -> World:
    settings = ActivationSettings(
        **{
            "max_runtime_seconds": RUNTIME,
            "warning_seconds": WARNING,
            "max_message_bytes": 1024,
            "max_attempts": 3,
            **overrides,
        }
    )
    clock = Clock()
    svc, enforcer, (store, queue, runner, events) = build(table, settings, clock)
    cid = container().identity.create_contract(ROOT, CreateContractRequest(name="contract-a")).id
    admin = _member(cid, ROOT, "admin-a", Role.ORG_ADMIN)
    ws = container().identity.create_workspace(admin, cid, CreateWorkspaceRequest(name="sandbox")).id
    full_ws = (
        container()
        .identity.create_workspace(
            ROOT, cid, CreateWorkspaceRequest(name="production", kind=WorkspaceKind.FULL)
        )
        .id
    )
    alice, bob = _member(cid, admin, "alice"), _member(cid, admin, "bob")
    container().identity.grant_access(admin, ws, alice.user_id, GrantAccessRequest())
    cid_b = container().identity.create_contract(ROOT, CreateContractRequest(name="contract-b")).id
    admin_b = _member(cid_b, ROOT, "admin-b", Role.ORG_ADMIN)
    ws_b = container().identity.create_workspace(admin_b, cid_b, CreateWorkspaceRequest(name="other")).id
    for w in (ws, full_ws, ws_b):
        for name in ("orders", "invoices", "third"):
            _flow(w, name)
    return World(
        svc, enforcer, store, clock, queue, runner, events, ws, full_ws, admin, alice, bob, ws_b, admin_b
    )


@pytest.fixture
def world(aws: str) -> World:
    return make_world(aws)


def due_items(table: str, kind: str) -> list[dict[str, Any]]:
    return Table(table).query(f"DUE#{kind}", limit=1000).items


def audit_of(world: World, flow: str) -> list[dict[str, Any]]:
    records, _ = world.svc.audit(world.admin, world.ws, flow)
    return [r.model_dump(exclude_none=True) for r in records]


# ---- activate / deactivate ------------------------------------------------------------------------


def test_activate_a_limited_flow_starts_its_clock_and_schedules_stop_and_warning(
    world: World, aws: str
) -> None:
    state = world.svc.activate(world.alice, world.ws, "orders")
    assert state.status == ActivationStatus.ACTIVE
    assert state.activated_at == "2024-05-01T10:00:00.000Z"
    assert state.activated_by == world.alice.user_id
    assert state.stops_at == "2024-05-01T10:01:40.000Z"
    assert state.warn_at == "2024-05-01T10:01:10.000Z"
    assert state.seconds_left == RUNTIME
    assert [i["SK"] for i in due_items(aws, "STOP")] == [f"2024-05-01T10:01:40.000Z#{world.ws}#orders"]
    assert [i["SK"] for i in due_items(aws, "WARN")] == [f"2024-05-01T10:01:10.000Z#{world.ws}#orders"]
    world.clock.at(40)
    assert world.svc.state(world.alice, world.ws, "orders").seconds_left == 60
    assert world.svc.state_of(world.ws, "invoices").status == ActivationStatus.INACTIVE


def test_activating_an_active_flow_is_idempotent_and_keeps_its_clock(world: World, aws: str) -> None:
    first = world.svc.activate(world.alice, world.ws, "orders")
    world.clock.at(50)
    again = world.svc.activate(world.admin, world.ws, "orders")
    assert (again.activated_at, again.stops_at, again.version) == (
        first.activated_at,
        first.stops_at,
        first.version,
    )
    assert again.seconds_left == 50
    assert len(due_items(aws, "STOP")) == 1
    assert len(audit_of(world, "orders")) == 1


def test_activate_an_unknown_flow_is_404(world: World) -> None:
    with pytest.raises(NotFound):
        world.svc.activate(world.alice, world.ws, "missing")


def test_deactivate_by_hand_removes_the_schedule_and_discards_queued_messages(world: World, aws: str) -> None:
    world.svc.activate(world.alice, world.ws, "orders")
    for n in range(3):
        world.svc.post_message(world.alice, world.ws, "orders", {"n": n})
    world.clock.at(10)
    state = world.svc.deactivate(world.alice, world.ws, "orders")
    assert state.status == ActivationStatus.INACTIVE
    assert state.stops_at is None
    assert state.seconds_left is None
    assert state.stop is not None
    assert (state.stop.reason, state.stop.discarded, state.stop.by) == ("deactivated", 3, world.alice.user_id)
    assert due_items(aws, "STOP") == []
    assert due_items(aws, "WARN") == []
    assert audit_of(world, "orders")[-1]["event"] == "deactivated"
    assert audit_of(world, "orders")[-1]["discarded"] == 3
    # Their deliveries find them discarded: nothing runs.
    world.process_all()
    assert world.runner.runs == []


def test_deactivating_a_flow_that_is_not_active_is_409(world: World) -> None:
    with pytest.raises(Conflict, match="not active"):
        world.svc.deactivate(world.alice, world.ws, "orders")
    world.svc.activate(world.alice, world.ws, "orders")
    world.svc.deactivate(world.alice, world.ws, "orders")
    with pytest.raises(Conflict, match="not active"):
        world.svc.deactivate(world.alice, world.ws, "orders")
    world.svc.activate(world.alice, world.ws, "orders")
    world.enforcer.run(world.clock.at(RUNTIME))
    with pytest.raises(Conflict, match="was stopped") as caught:
        world.svc.deactivate(world.alice, world.ws, "orders")
    assert caught.value.code == "flow_not_active"


def test_limited_workspaces_have_a_quota_of_active_flows(aws: str) -> None:
    world = make_world(aws, max_active_flows_limited=2)
    world.svc.activate(world.alice, world.ws, "orders")
    world.svc.activate(world.alice, world.ws, "invoices")
    with pytest.raises(Conflict) as caught:
        world.svc.activate(world.alice, world.ws, "third")
    assert caught.value.code == "quota_exceeded"
    assert world.svc.state_of(world.ws, "third").status == ActivationStatus.INACTIVE
    world.svc.activate(world.alice, world.ws, "orders")  # idempotent: not counted twice
    world.svc.deactivate(world.alice, world.ws, "orders")
    world.svc.activate(world.alice, world.ws, "third")
    for name in ("orders", "invoices", "third"):  # full workspaces have no such quota
        world.svc.activate(world.admin, world.full_ws, name)


# ---- messages --------------------------------------------------------------------------------------


def test_posting_to_a_flow_that_is_not_active_is_409_and_stores_nothing(world: World) -> None:
    with pytest.raises(Conflict) as caught:
        world.svc.post_message(world.alice, world.ws, "orders", {"n": 1})
    assert caught.value.code == "flow_not_active"
    assert world.queue.sent == []
    assert world.svc.list_messages(world.alice, world.ws, "orders") == ([], None)


def test_a_message_too_large_is_413_and_not_an_object_is_400(world: World) -> None:
    world.svc.activate(world.alice, world.ws, "orders")
    with pytest.raises(PayloadTooLarge):
        world.svc.post_message(world.alice, world.ws, "orders", {"x": "y" * 2000})
    with pytest.raises(BadRequest):
        world.svc.post_message(world.alice, world.ws, "orders", [1, 2])  # type: ignore[arg-type]
    assert world.queue.sent == []
    assert world.svc.list_messages(world.alice, world.ws, "orders") == ([], None)


def test_a_message_that_cannot_be_queued_is_not_kept(world: World) -> None:
    world.svc.activate(world.alice, world.ws, "orders")
    world.queue.fail = True
    with pytest.raises(RuntimeError):
        world.svc.post_message(world.alice, world.ws, "orders", {"n": 1})
    assert world.svc.list_messages(world.alice, world.ws, "orders") == ([], None)


def test_messages_are_processed_in_order_of_arrival(world: World) -> None:
    world.svc.activate(world.alice, world.ws, "orders")
    posted = []
    for n in range(4):
        world.clock.at(n * 0.001)
        posted.append(world.svc.post_message(world.alice, world.ws, "orders", {"n": n}))
    assert [p.status for p in posted] == [MessageStatus.QUEUED] * 4
    assert [m[2] for m in world.queue.sent] == [p.id for p in posted]
    world.process_all()
    assert [r["message"]["n"] for r in world.runner.runs] == [0, 1, 2, 3]
    assert world.runner.runs[0]["message_id"] == posted[0].id
    listed, _ = world.svc.list_messages(world.alice, world.ws, "orders")
    assert [m.id for m in listed] == [p.id for p in posted]
    assert [(m.status, m.attempts, m.execution_id) for m in listed] == [
        (MessageStatus.DONE, 1, eid) for eid in world.runner.outcomes
    ]
    # A duplicate delivery of a finished message runs nothing.
    world.svc.process_message(world.ws, "orders", posted[0].id, 2)
    assert len(world.runner.runs) == 4


def test_a_failing_message_is_retried_then_marked_failed(world: World) -> None:
    world.svc.activate(world.alice, world.ws, "orders")
    message = world.svc.post_message(world.alice, world.ws, "orders", {"n": 7})
    world.runner.failing.add("7")
    for attempt in (1, 2):
        with pytest.raises(MessageFailed):
            world.svc.process_message(world.ws, "orders", message.id, attempt)
        got = world.svc.get_message(world.alice, world.ws, "orders", message.id)
        assert (got.status, got.attempts, got.error) == (
            MessageStatus.QUEUED,
            attempt,
            "the flow raised ValueError",
        )
    with pytest.raises(MessageFailed):
        world.svc.process_message(world.ws, "orders", message.id, 3)
    got = world.svc.get_message(world.alice, world.ws, "orders", message.id)
    assert (got.status, got.attempts, got.execution_id) == (
        MessageStatus.FAILED,
        3,
        list(world.runner.outcomes)[2],
    )
    assert got.ttl is not None
    world.svc.process_message(world.ws, "orders", message.id, 4)  # a late redelivery is dropped
    assert len(world.runner.runs) == 3
    failed, _ = world.svc.list_messages(world.alice, world.ws, "orders", MessageStatus.FAILED)
    assert [m.id for m in failed] == [message.id]


# ---- the enforcer ----------------------------------------------------------------------------------


def test_the_enforcer_stops_a_limited_flow_exactly_when_due(world: World, aws: str) -> None:
    world.svc.activate(world.alice, world.ws, "orders")
    for n in range(2):
        world.svc.post_message(world.alice, world.ws, "orders", {"n": n})
    report = world.enforcer.run(world.clock.at(RUNTIME - 0.001))
    assert report.stopped == []
    assert world.svc.state_of(world.ws, "orders").status == ActivationStatus.ACTIVE
    report = world.enforcer.run(world.clock.at(RUNTIME))
    assert [(s.flow, s.discarded) for s in report.stopped] == [("orders", 2)]
    state = world.svc.state_of(world.ws, "orders")
    assert state.status == ActivationStatus.STOPPED
    assert state.stop is not None
    assert state.stop.model_dump() == {
        "at": "2024-05-01T10:01:40.000Z",
        "reason": "runtime_limit",
        "discarded": 2,
        "activated_at": "2024-05-01T10:00:00.000Z",
        "by": None,
    }
    assert (state.stops_at, state.seconds_left) == (None, None)
    assert audit_of(world, "orders")[-1] == {
        "workspace_id": world.ws,
        "flow": "orders",
        "at": "2024-05-01T10:01:40.000Z",
        "event": "stopped",
        "reason": "runtime_limit",
        "discarded": 2,
        "activated_at": "2024-05-01T10:00:00.000Z",
    }
    assert due_items(aws, "STOP") == []
    assert due_items(aws, "WARN") == []
    # The discarded messages stay readable until their TTL (limited retention: 7 days).
    discarded, _ = world.svc.list_messages(world.alice, world.ws, "orders", MessageStatus.DISCARDED)
    assert len(discarded) == 2
    expected_ttl = rules.retention_ttl(T0 + timedelta(seconds=RUNTIME), 7)
    assert {(m.discard_reason, m.ttl) for m in discarded} == {("runtime_limit", expected_ttl)}
    # Posting now is refused; their queued deliveries are dropped without running.
    with pytest.raises(Conflict):
        world.svc.post_message(world.alice, world.ws, "orders", {"n": 9})
    world.process_all()
    assert world.runner.runs == []
    assert world.svc.state_of(world.ws, "orders").stop.discarded == 2  # type: ignore[union-attr]


def test_a_duplicate_run_stops_nothing_twice(world: World) -> None:
    world.svc.activate(world.alice, world.ws, "orders")
    world.svc.post_message(world.alice, world.ws, "orders", {"n": 1})
    now = world.clock.at(RUNTIME + 5)
    assert len(world.enforcer.run(now).stopped) == 1
    assert world.enforcer.run(now).stopped == []
    assert world.svc.state_of(world.ws, "orders").stop.discarded == 1  # type: ignore[union-attr]
    assert [a["event"] for a in audit_of(world, "orders")] == ["activated", "stopped"]


def test_concurrent_runs_stop_a_flow_once_and_count_once(world: World, atomic_writes: None) -> None:
    for name in ("orders", "invoices"):
        world.svc.activate(world.alice, world.ws, name)
        for n in range(3):
            world.svc.post_message(world.alice, world.ws, name, {"n": n})
    now = world.clock.at(RUNTIME)
    with ThreadPoolExecutor(4) as pool:
        reports = list(pool.map(lambda _: world.enforcer.run(now), range(4)))
    stopped = sorted((s.flow, s.discarded) for r in reports for s in r.stopped)
    assert stopped == [("invoices", 3), ("orders", 3)]
    for name in ("orders", "invoices"):
        assert world.svc.state_of(world.ws, name).stop.discarded == 3  # type: ignore[union-attr]
        assert [a["event"] for a in audit_of(world, name)] == ["activated", "stopped"]


def test_full_workspaces_never_stop(world: World, aws: str) -> None:
    state = world.svc.activate(world.admin, world.full_ws, "orders")
    assert (state.stops_at, state.seconds_left) == (None, None)
    assert due_items(aws, "STOP") == []
    report = world.enforcer.run(world.clock.at(30 * 86400))
    assert report.stopped == []
    assert world.svc.state_of(world.full_ws, "orders").status == ActivationStatus.ACTIVE
    world.svc.post_message(world.admin, world.full_ws, "orders", {"n": 1})
    world.process_all()
    assert len(world.runner.runs) == 1


def test_a_restart_by_hand_starts_the_clock_again(world: World) -> None:
    world.svc.activate(world.alice, world.ws, "orders")
    world.enforcer.run(world.clock.at(RUNTIME))
    world.clock.at(RUNTIME + 500)
    state = world.svc.activate(world.alice, world.ws, "orders")
    assert state.status == ActivationStatus.ACTIVE
    assert state.stops_at == clock.iso_ms(T0 + timedelta(seconds=2 * RUNTIME + 500))
    assert state.seconds_left == RUNTIME
    assert state.stop is not None  # the last stop stays visible
    assert world.enforcer.run(world.clock.at(2 * RUNTIME + 499)).stopped == []
    assert len(world.enforcer.run(world.clock.at(2 * RUNTIME + 500)).stopped) == 1
    assert [a["event"] for a in audit_of(world, "orders")] == ["activated", "stopped", "activated", "stopped"]


def test_the_warning_is_recorded_and_published_once_before_the_stop(world: World) -> None:
    world.svc.activate(world.alice, world.ws, "orders")
    assert world.enforcer.run(world.clock.at(RUNTIME - WARNING - 1)).warned == []
    report = world.enforcer.run(world.clock.at(RUNTIME - WARNING + 2))
    assert [(w.flow, w.seconds_left) for w in report.warned] == [("orders", WARNING - 2)]
    assert world.stopping_warnings() == [
        {
            "workspace_id": world.ws,
            "flow": "orders",
            "stops_at": "2024-05-01T10:01:40.000Z",
            "seconds_left": 28,
        }
    ]
    assert world.svc.state_of(world.ws, "orders").warned_at == "2024-05-01T10:01:12.000Z"
    assert world.enforcer.run(world.clock.at(RUNTIME - 1)).warned == []
    assert len(world.stopping_warnings()) == 1
    assert len(world.enforcer.run(world.clock.at(RUNTIME)).stopped) == 1


def test_a_flow_overdue_for_both_is_stopped_without_a_warning(world: World) -> None:
    world.svc.activate(world.alice, world.ws, "orders")
    report = world.enforcer.run(world.clock.at(RUNTIME * 3))
    assert (len(report.stopped), report.warned) == (1, [])
    assert world.stopping_warnings() == []


def test_limited_to_full_clears_the_pending_stop(world: World, aws: str) -> None:
    world.svc.activate(world.alice, world.ws, "orders")
    world.svc.kind_changed(world.ws, "full")
    world.svc.kind_changed(world.ws, WorkspaceKind.FULL)  # idempotent
    state = world.svc.state_of(world.ws, "orders")
    assert (state.status, state.stops_at, state.warn_at) == (ActivationStatus.ACTIVE, None, None)
    assert due_items(aws, "STOP") == []
    assert due_items(aws, "WARN") == []
    assert world.enforcer.run(world.clock.at(RUNTIME * 10)).stopped == []


def test_full_to_limited_starts_the_clock_at_the_change(world: World, aws: str) -> None:
    world.svc.activate(world.admin, world.full_ws, "orders")
    world.clock.at(1000)
    world.svc.kind_changed(world.full_ws, "limited")
    world.clock.at(1010)
    world.svc.kind_changed(world.full_ws, "limited")  # idempotent: the clock does not move
    state = world.svc.state_of(world.full_ws, "orders")
    assert state.stops_at == clock.iso_ms(T0 + timedelta(seconds=1000 + RUNTIME))
    assert len(due_items(aws, "STOP")) == 1
    assert len(world.enforcer.run(world.clock.at(1000 + RUNTIME)).stopped) == 1


def test_a_stale_due_entry_is_removed_without_stopping_anything(world: World, aws: str) -> None:
    """An entry left by an older activation (a crash between writes) must not stop the new one."""
    world.svc.activate(world.alice, world.ws, "orders")
    old = world.store.get_activation(world.ws, "orders")
    assert old is not None
    world.svc.deactivate(world.alice, world.ws, "orders")
    for entry in due_entries(old):
        Table(aws).put(entry)
    world.clock.at(1)
    world.svc.activate(world.alice, world.ws, "orders")
    assert world.enforcer.run(world.clock.at(RUNTIME)).stopped == []
    assert world.svc.state_of(world.ws, "orders").status == ActivationStatus.ACTIVE
    assert len(world.enforcer.run(world.clock.at(RUNTIME + 1)).stopped) == 1


# ---- cost: the enforcer reads only what is due ------------------------------------------------------


@dataclass
class Calls:
    count: int = 0
    items_read: int = 0


@pytest.fixture
def calls(aws: str) -> Iterator[Calls]:
    seen = Calls()

    def before(**_: Any) -> None:
        seen.count += 1

    def after(parsed: dict[str, Any], **_: Any) -> None:
        seen.items_read += len(parsed.get("Items", []))

    events = aws_clients.dynamodb().meta.events
    events.register("before-call.dynamodb", before, unique_id="count-calls")
    events.register("after-call.dynamodb.Query", after, unique_id="count-items")
    yield seen
    events.unregister("before-call.dynamodb", unique_id="count-calls")
    events.unregister("after-call.dynamodb.Query", unique_id="count-items")


def _bulk_active(table: str, wsid: str, count: int, started: datetime, runtime: int) -> None:
    """`count` active limited flows (activation items and due entries) written directly, fast."""
    client = aws_clients.dynamodb()
    stamp = clock.iso_ms(started)
    stop = started + timedelta(seconds=runtime)
    items: list[dict[str, Any]] = []
    for i in range(count):
        item: dict[str, Any] = {
            "workspace_id": wsid,
            "flow": f"bulk-{i:05d}",
            "status": "active",
            "activated_at": stamp,
            "stops_at": clock.iso_ms(stop),
            "warn_at": clock.iso_ms(stop - timedelta(seconds=WARNING)),
            "version": 1,
        }
        items.append({**item, **activation_key(wsid, item["flow"])})
        items.extend(due_entries(item))
    for start in range(0, len(items), 25):
        chunk: Any = [{"PutRequest": {"Item": db._to_wire(i)}} for i in items[start : start + 25]]
        client.batch_write_item(RequestItems={table: chunk})


def test_the_enforcer_reads_only_due_entries(aws: str, calls: Calls) -> None:
    world = make_world(aws, max_active_flows_limited=100)
    names = [f"due-{i}" for i in range(10)]
    for name in names:
        _flow(world.ws, name)
        world.svc.activate(world.alice, world.ws, name)

    now = world.clock.at(RUNTIME)
    calls.count = calls.items_read = 0
    assert len(world.enforcer.run(now).stopped) == 10
    baseline = (calls.count, calls.items_read)

    # Again with 1,000 active flows that are not due (their stop is a day away).
    for name in names:
        world.svc.activate(world.alice, world.ws, name)
    _bulk_active(aws, world.ws, 1000, now, 86400)
    now = world.clock.at(2 * RUNTIME)
    calls.count = calls.items_read = 0
    assert len(world.enforcer.run(now).stopped) == 10
    assert (calls.count, calls.items_read) == baseline
    assert calls.items_read == 10 + 0  # ten due stop entries; their warnings were consumed with the stop


# ---- tenancy ---------------------------------------------------------------------------------------


def test_every_principal_method_checks_the_workspace(world: World) -> None:
    world.svc.activate(world.admin_b, world.ws_b, "orders")
    mid = world.svc.post_message(world.admin_b, world.ws_b, "orders", {"n": 1}).id
    calls_of = [
        lambda who: world.svc.activate(who, world.ws_b, "orders"),
        lambda who: world.svc.deactivate(who, world.ws_b, "orders"),
        lambda who: world.svc.state(who, world.ws_b, "orders"),
        lambda who: world.svc.post_message(who, world.ws_b, "orders", {"n": 2}),
        lambda who: world.svc.list_messages(who, world.ws_b, "orders"),
        lambda who: world.svc.get_message(who, world.ws_b, "orders", mid),
        lambda who: world.svc.audit(who, world.ws_b, "orders"),
    ]
    for call in calls_of:
        with pytest.raises(NotFound):
            call(world.admin)  # another contract: as if it did not exist
    # A member of the contract without access to the workspace: 403 on every method.
    own = [
        lambda: world.svc.activate(world.bob, world.ws, "orders"),
        lambda: world.svc.deactivate(world.bob, world.ws, "orders"),
        lambda: world.svc.state(world.bob, world.ws, "orders"),
        lambda: world.svc.post_message(world.bob, world.ws, "orders", {"n": 2}),
        lambda: world.svc.list_messages(world.bob, world.ws, "orders"),
        lambda: world.svc.get_message(world.bob, world.ws, "orders", mid),
        lambda: world.svc.audit(world.bob, world.ws, "orders"),
    ]
    for call_own in own:
        with pytest.raises(Forbidden):
            call_own()
    assert world.svc.state_of(world.ws_b, "orders").status == ActivationStatus.ACTIVE
    assert len(world.svc.list_messages(world.admin_b, world.ws_b, "orders")[0]) == 1


# ---- the composition root and the AWS adapters ------------------------------------------------------


@pytest.fixture
def root(aws: str) -> None:
    """A new process's container (the aws fixture installs none), built from the functions' environment."""


def test_the_composition_root_runs_a_message_through_sqs_fifo_and_the_flow(root: None) -> None:
    import json

    import boto3

    from flowgate.activation.adapters import EventBridgePublisher
    from flowgate.wiring import container

    svc = container().activation
    cid = container().identity.create_contract(ROOT, CreateContractRequest(name="contract-root")).id
    admin = _member(cid, ROOT, "admin-root", Role.ORG_ADMIN)
    ws = container().identity.create_workspace(admin, cid, CreateWorkspaceRequest(name="sandbox")).id
    _flow(ws, "orders")
    svc.activate(admin, ws, "orders")
    posted = svc.post_message(admin, ws, "orders", {"order": 42})

    sqs = boto3.client("sqs")
    url = container().activation_settings.message_queue_url
    assert url.endswith(".fifo")
    received = sqs.receive_message(QueueUrl=url, AttributeNames=["All"], MaxNumberOfMessages=10)["Messages"]
    assert len(received) == 1
    body = json.loads(received[0]["Body"])
    assert body == {"version": 1, "workspace_id": ws, "flow": "orders", "message_id": posted.id}
    assert received[0]["Attributes"]["MessageGroupId"] == f"{ws}#orders"
    assert received[0]["Attributes"]["MessageDeduplicationId"] == posted.id

    svc.process_message(ws, "orders", posted.id, int(received[0]["Attributes"]["ApproximateReceiveCount"]))
    done = svc.get_message(admin, ws, "orders", posted.id)
    assert done.status == MessageStatus.DONE
    assert done.execution_id is not None
    execution = container().flow_store.get_execution(done.execution_id)
    assert execution is not None
    assert execution["status"] == "success"
    assert execution["inputs"] == {"message": {"order": 42}, "message_id": posted.id}

    EventBridgePublisher("default").publish(WARNING_EVENT, {"flow": "orders"})  # accepted by EventBridge


def test_a_message_in_flight_at_the_stop_is_discarded_on_redelivery_and_counted(world: World) -> None:
    world.svc.activate(world.alice, world.ws, "orders")
    posted = world.svc.post_message(world.alice, world.ws, "orders", {"n": 1})
    claimed = world.store.transition_message(
        world.ws, "orders", posted.id, MessageStatus.PROCESSING, allowed_from=[MessageStatus.QUEUED]
    )
    assert claimed is not None  # its run is under way when the stop comes
    assert [s.discarded for s in world.enforcer.run(world.clock.at(RUNTIME)).stopped] == [0]
    world.svc.process_message(world.ws, "orders", posted.id, 2)  # its redelivery after a failure
    got = world.svc.get_message(world.alice, world.ws, "orders", posted.id)
    assert (got.status, got.discard_reason) == (MessageStatus.DISCARDED, "runtime_limit")
    assert world.svc.state_of(world.ws, "orders").stop.discarded == 1  # type: ignore[union-attr]
    assert world.runner.runs == []


def test_a_message_that_ran_before_its_processor_died_is_not_run_again(world: World) -> None:
    # Given a message whose run succeeded, but whose processor died before marking it done
    world.svc.activate(world.alice, world.ws, "orders")
    message = world.svc.post_message(world.alice, world.ws, "orders", {"n": 1})
    finish = world.svc._finish_message
    world.svc._finish_message = lambda *args: None  # type: ignore[method-assign]  # the crash
    world.svc.process_message(world.ws, "orders", message.id, 1)
    world.svc._finish_message = finish  # type: ignore[method-assign]
    assert (
        world.svc.get_message(world.alice, world.ws, "orders", message.id).status == MessageStatus.PROCESSING
    )
    # When SQS delivers it again
    world.svc.process_message(world.ws, "orders", message.id, 2)
    # Then it is marked done with the first run's execution, and the flow ran once
    got = world.svc.get_message(world.alice, world.ws, "orders", message.id)
    assert (got.status, got.execution_id) == (MessageStatus.DONE, next(iter(world.runner.outcomes)))
    assert len(world.runner.runs) == 1
