"""The enforcer and message-processor functions against moto, through their real handlers and the
real composition roots: scheduled events, FIFO records, duplicates."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from tests.handler.conftest import Api, Tenant, lambda_context, load_function
from tests.support.events import SqsQueue, schedule_event

A = "/api/latest"
CONSUMER = (
    "import flow_api\ndef handler(system, this, inputs):\n    return this.success(str(inputs['message']))\n"
)


def fifo_records() -> list[dict[str, Any]]:
    """What Lambda's SQS poller would hand the message processor, read from the real FIFO queue."""
    return SqsQueue.at(os.environ["MESSAGE_QUEUE_URL"]).records()


@pytest.fixture
def short_limit(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMITED_MAX_RUNTIME_SECONDS", "1")
    monkeypatch.setenv("STOP_WARNING_SECONDS", "0")


@pytest.fixture
def flows_api(api: Api) -> Api:
    return Api(load_function("flows"), "flows")


def _active_flow(flows_api: Api, t: Tenant) -> str:
    path = f"{A}/workspaces/{t.workspace_id}/flows/consumer"
    assert flows_api.call("PUT", path, {"script": CONSUMER}, token=t.admin_token).status == 201
    assert flows_api.call("POST", f"{path}/activate", token=t.admin_token).body["status"] == "active"
    return path


def test_the_scheduled_enforcer_stops_a_due_flow_once(short_limit: None, flows_api: Api, tenants):
    # Given an active flow of a limited workspace with two queued messages, past its limit
    a, _ = tenants
    path = _active_flow(flows_api, a)
    for n in range(2):
        assert flows_api.call("POST", f"{path}/messages", {"n": n}, token=a.admin_token).status == 202
    time.sleep(1.1)
    enforcer = load_function("enforcer")
    # When the schedule fires twice (a duplicate event)
    first = enforcer.handler(schedule_event("EnforcerFunction"), lambda_context(function_name="enforcer"))
    second = enforcer.handler(schedule_event("EnforcerFunction"), lambda_context(function_name="enforcer"))
    # Then the flow stopped once, its queued messages discarded and counted
    assert (first["stopped"], second["stopped"]) == (1, 0)
    flow = flows_api.call("GET", path, token=a.admin_token).body
    assert flow["status"] == "stopped"
    assert (flow["stop"]["reason"], flow["stop"]["discarded"]) == ("runtime_limit", 2)
    # and the processor drops their deliveries without running anything
    processor = load_function("flows", "messages")
    result = processor.handler({"Records": fifo_records()}, lambda_context(function_name="messages"))
    assert result == {"batchItemFailures": []}
    executions = flows_api.call(
        "GET", f"{A}/workspaces/{a.workspace_id}/executions", token=a.admin_token
    ).body
    assert executions["items"] == []


def test_the_processor_runs_messages_of_a_full_workspace(flows_api: Api, root_token: str, tenants, api: Api):
    # Given a full workspace's active flow with two messages
    a, _ = tenants
    api.call("PATCH", f"{A}/workspaces/{a.workspace_id}", {"kind": "full"}, token=root_token)
    path = _active_flow(flows_api, a)
    assert flows_api.call("GET", path, token=a.admin_token).body["stops_at"] is None
    posted = [
        flows_api.call("POST", f"{path}/messages", {"n": n}, token=a.admin_token).body for n in range(2)
    ]
    # When Lambda hands the FIFO records to the processor
    processor = load_function("flows", "messages")
    assert processor.handler({"Records": fifo_records()}, lambda_context(function_name="messages")) == {
        "batchItemFailures": []
    }
    # Then each message ran as an execution of the flow, in order, with the message as input
    listed = flows_api.call("GET", f"{path}/messages", token=a.admin_token).body["items"]
    assert [(m["id"], m["status"]) for m in listed] == [(p["id"], "done") for p in posted]
    runs = [
        flows_api.call(
            "GET", f"{A}/workspaces/{a.workspace_id}/executions/{m['execution_id']}", token=a.admin_token
        ).body
        for m in listed
    ]
    assert [(r["status"], r["message"]) for r in runs] == [("success", "{'n': 0}"), ("success", "{'n': 1}")]
    assert all(r["inputs"]["message_id"] == m["id"] for r, m in zip(runs, listed, strict=True))
    assert json.dumps(runs[0]["inputs"]["message"]) == '{"n": 0}'


def test_a_failing_message_comes_back_in_seconds_not_after_the_visibility_timeout(
    flows_api: Api, root_token: str, tenants, api: Api
):
    # Given a full workspace's active flow whose script fails, with two messages queued
    a, _ = tenants
    api.call("PATCH", f"{A}/workspaces/{a.workspace_id}", {"kind": "full"}, token=root_token)
    path = f"{A}/workspaces/{a.workspace_id}/flows/broken"
    failing = "import flow_api\ndef handler(system, this, inputs):\n    raise RuntimeError('down')\n"
    assert flows_api.call("PUT", path, {"script": failing}, token=a.admin_token).status == 201
    assert flows_api.call("POST", f"{path}/activate", token=a.admin_token).status == 200
    for n in range(2):
        assert flows_api.call("POST", f"{path}/messages", {"n": n}, token=a.admin_token).status == 202
    # When the processor fails the first (and, FIFO, hands the second back with it)
    queue = SqsQueue.at(os.environ["MESSAGE_QUEUE_URL"])
    records = queue.records()
    processor = load_function("flows", "messages")
    result = processor.handler({"Records": records}, lambda_context(function_name="messages"))
    assert len(result["batchItemFailures"]) == 2
    # Then the failed one is in flight for the first retry delay (2 s), not the queue's 960 s, and comes back
    assert queue.receive() == []
    deadline = time.monotonic() + 10
    again: list[Any] = []
    while not again and time.monotonic() < deadline:
        time.sleep(0.5)
        again = queue.receive()
    # first, and in order (SQS may hold the second back until the first is done; moto does not)
    assert again
    assert [m["MessageId"] for m in again] == [r["messageId"] for r in records][: len(again)]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"
