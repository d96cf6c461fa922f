"""Active flows and the limited-workspace stop through the local stack, with the limit set to seconds
(the session stack runs with LimitedWorkspaceMaxRuntime and the schedule overridden, see conftest)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import requests

from tests.e2e.conftest import MAX_RUNTIME, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
A = "/api/latest"
SLOW_CONSUMER = """import flow_api, time
def handler(system, this, inputs):
    this.log('got', inputs['message'])
    time.sleep(1.5)
    return this.success('consumed')
"""


def _workspace(stack: Stack, root_token: str, kind: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    cid = stack.call("POST", f"{A}/contracts", {"name": f"act-{tag}"}, root_token).json()["id"]
    stack.call(
        "POST",
        f"{A}/contracts/{cid}/members",
        {"username": f"act-{tag}", "password": "act-password-123", "role": "org_admin"},
        root_token,
    )
    token = stack.login(f"act-{tag}", "act-password-123")
    ws = stack.call("POST", f"{A}/contracts/{cid}/workspaces", {"name": "sandbox"}, token).json()["id"]
    if kind == "full":
        assert (
            stack.call("PATCH", f"{A}/workspaces/{ws}", {"kind": "full"}, root_token).json()["kind"] == "full"
        )
    assert stack.call("PUT", f"{A}/workspaces/{ws}/flows/consumer", {"script": SLOW_CONSUMER}, token).ok
    return ws, token


def _flow(stack: Stack, ws: str, token: str) -> dict[str, Any]:
    return dict(stack.call("GET", f"{A}/workspaces/{ws}/flows/consumer", token=token).json())


def _until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what} not within {timeout}s")


def test_a_limited_workspace_stops_its_active_flow_on_time(stack: Stack, root_token: str):
    ws, token = _workspace(stack, root_token, "limited")
    path = f"{A}/workspaces/{ws}/flows/consumer"
    # posting to a flow that is not active loses nothing silently: 409
    assert stack.call("POST", f"{path}/messages", {"n": 0}, token).status_code == 409
    activated = stack.call("POST", f"{path}/activate", token=token)
    assert activated.status_code == 200, activated.text
    started = time.monotonic()
    flow = _flow(stack, ws, token)
    assert flow["status"] == "active"
    assert 0 < flow["seconds_left"] <= MAX_RUNTIME
    # activating again is idempotent: the clock does not restart
    again = stack.call("POST", f"{path}/activate", token=token).json()
    assert again["stops_at"] == flow["stops_at"]
    for n in range(8):  # more than the flow can consume before its stop
        posted = stack.call("POST", f"{path}/messages", {"n": n}, token)
        assert posted.status_code == 202, posted.text
    warned = _until(lambda: (f := _flow(stack, ws, token)).get("warned_at") and f, MAX_RUNTIME, "the warning")
    assert warned["status"] == "active"  # the warning comes before the stop
    stopped = _until(
        lambda: (f := _flow(stack, ws, token))["status"] == "stopped" and f, MAX_RUNTIME + 10, "the stop"
    )
    elapsed = time.monotonic() - started
    assert elapsed >= MAX_RUNTIME - 1, "stopped before its time"
    assert stopped["stop"]["reason"] == "runtime_limit"

    # the stop is recorded first, then its queued messages are discarded and counted on it
    def counted() -> Any:
        listed = stack.call("GET", f"{path}/messages", token=token, params={"status": "discarded"}).json()[
            "items"
        ]
        return listed and _flow(stack, ws, token)["stop"]["discarded"] == len(listed) and listed

    discarded = _until(counted, 10, "the discarded messages are counted on the stop")
    assert {m["body"]["n"] for m in discarded} <= set(range(8))  # kept, readable
    # nothing more is accepted, and the stop sticks until someone restarts the flow by hand
    assert stack.call("POST", f"{path}/messages", {"n": 99}, token).status_code == 409
    assert stack.call("POST", f"{path}/deactivate", token=token).status_code == 409
    time.sleep(1.5)
    assert _flow(stack, ws, token)["status"] == "stopped"
    restarted = stack.call("POST", f"{path}/activate", token=token).json()
    assert restarted["status"] == "active"
    assert restarted["stops_at"] > stopped["stop"]["at"]  # the clock starts again


def test_a_full_workspace_keeps_its_flow_running(stack: Stack, root_token: str):
    ws, token = _workspace(stack, root_token, "full")
    path = f"{A}/workspaces/{ws}/flows/consumer"
    assert stack.call("POST", f"{path}/activate", token=token).json()["status"] == "active"
    assert _flow(stack, ws, token).get("stops_at") is None
    time.sleep(MAX_RUNTIME + 2)
    assert _flow(stack, ws, token)["status"] == "active"
    posted = stack.call("POST", f"{path}/messages", {"n": 1}, token).json()
    done = _until(
        lambda: [
            m
            for m in stack.call("GET", f"{path}/messages", token=token).json()["items"]
            if m["id"] == posted["id"] and m["status"] == "done"
        ],
        30,
        "the message is processed",
    )
    assert done[0]["execution_id"]


def test_messages_run_in_order_and_bad_input_is_refused(stack: Stack, root_token: str):
    ws, token = _workspace(stack, root_token, "full")
    path = f"{A}/workspaces/{ws}/flows/consumer"
    stack.call("POST", f"{path}/activate", token=token)
    ids = [stack.call("POST", f"{path}/messages", {"n": n}, token).json()["id"] for n in range(3)]
    _until(
        lambda: (
            all(
                m["status"] == "done"
                for m in stack.call("GET", f"{path}/messages", token=token).json()["items"]
                if m["id"] in ids
            )
            and True
        ),
        30,
        "all messages processed",
    )
    executions = stack.call("GET", f"{A}/workspaces/{ws}/executions", token=token).json()["items"]
    started = sorted((e["created_at"], e["id"]) for e in executions)
    assert len(started) == 3
    logs = [
        stack.call("GET", f"{A}/workspaces/{ws}/executions/{eid}", token=token).json()["log"][0]
        for _, eid in started
    ]
    assert logs == ['got {"n": 0}', 'got {"n": 1}', 'got {"n": 2}']
    big = stack.call("POST", f"{path}/messages", {"blob": "x" * 300_000}, token)
    assert big.status_code == 413
    not_json = requests.post(
        stack.url(f"{path}/messages"),
        data="{oops",
        timeout=30,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert not_json.status_code == 400


def test_another_tenant_cannot_touch_active_flows(stack: Stack, root_token: str):
    ws, token = _workspace(stack, root_token, "limited")
    _, other = _workspace(stack, root_token, "limited")
    path = f"{A}/workspaces/{ws}/flows/consumer"
    for method, suffix, body in (
        ("POST", "/activate", None),
        ("POST", "/deactivate", None),
        ("POST", "/messages", {"n": 1}),
        ("GET", "/messages", None),
    ):
        assert stack.call(method, path + suffix, body, other).status_code == 404, suffix
    assert _flow(stack, ws, token)["status"] == "inactive"


def test_making_a_workspace_full_clears_the_pending_stop(stack: Stack, root_token: str):
    ws, token = _workspace(stack, root_token, "limited")
    path = f"{A}/workspaces/{ws}/flows/consumer"
    assert stack.call("POST", f"{path}/activate", token=token).json()["stops_at"] is not None
    assert stack.call("PATCH", f"{A}/workspaces/{ws}", {"kind": "full"}, root_token).status_code == 200
    assert _flow(stack, ws, token)["stops_at"] is None
    time.sleep(MAX_RUNTIME + 2)
    assert _flow(stack, ws, token)["status"] == "active"
