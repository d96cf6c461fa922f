"""One tenant's bad item never stops the enforcer's run for the others (issue 9, item 2; DESIGN §5): a
corrupt item is logged and counted, the other due flows are stopped and warned on time, and the bad
entry stays due for the next run."""

from __future__ import annotations

import logging

import pytest

from flowgate.activation.models import ActivationStatus
from flowgate.activation.store import STOP, WARN, due_key, message_key
from flowgate.db import Table
from tests.handler.test_activation_domain import RUNTIME, WARNING, World, due_items, make_world


@pytest.fixture
def world(aws: str) -> World:
    return make_world(aws)


def test_a_corrupt_item_of_one_tenant_does_not_stop_the_run_for_another(
    world: World, aws: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given two tenants' flows due at the same moment, each with a queued message
    world.svc.activate(world.alice, world.ws, "orders")
    world.svc.activate(world.admin_b, world.ws_b, "orders")
    bad = world.svc.post_message(world.alice, world.ws, "orders", {"n": 1})
    world.svc.post_message(world.admin_b, world.ws_b, "orders", {"n": 2})
    # and tenant A's message item corrupted (its id attribute lost), and a due entry of nothing readable
    Table(aws).update(message_key(world.ws, "orders", bad.id), "REMOVE #id", names={"#id": "id"})
    Table(aws).put({**due_key(STOP, "2024-05-01T10:00:00.000Z", "ws-gone", "x"), "workspace_id": "ws-gone"})
    # When the enforcer runs when both are due
    with caplog.at_level(logging.ERROR):
        report = world.enforcer.run(world.clock.at(RUNTIME))
    # Then tenant B's flow was stopped, its message discarded and counted
    assert [(s.workspace_id, s.flow, s.discarded) for s in report.stopped] == [(world.ws_b, "orders", 1)]
    assert world.svc.state_of(world.ws_b, "orders").status == ActivationStatus.STOPPED
    # and the two bad entries were recorded, by workspace, flow and kind of error only
    assert {(f.workspace_id, f.flow, f.action, f.error) for f in report.failed} == {
        ("ws-gone", "?", "stop", "KeyError"),
        (world.ws, "orders", "stop", "KeyError"),
    }
    assert "an enforcer entry failed" in caplog.text
    assert "enforcer entries failed; they are retried next run" in caplog.text
    # and tenant A's stop entry is still due, for the next run to try again
    assert [e["workspace_id"] for e in due_items(aws, "STOP") if e["workspace_id"] == world.ws] == [world.ws]


def test_a_failing_warning_does_not_keep_the_others_from_theirs(world: World, aws: str) -> None:
    # Given two flows whose warning is due, and a corrupt warning entry sorted before them
    world.svc.activate(world.alice, world.ws, "orders")
    world.svc.activate(world.admin_b, world.ws_b, "orders")
    Table(aws).put({**due_key(WARN, "2024-05-01T09:00:00.000Z", "ws-gone", "x"), "flow": "x"})
    # When the enforcer runs inside the warning window
    report = world.enforcer.run(world.clock.at(RUNTIME - WARNING + 1))
    # Then both flows were warned, and the bad entry counted
    assert sorted(w.workspace_id for w in report.warned) == sorted([world.ws, world.ws_b])
    assert [(f.workspace_id, f.action) for f in report.failed] == [("?", "warn")]
