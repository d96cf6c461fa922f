"""The flows function against moto: versioned flows, queued executions, cancel, tenancy, bad input."""

from __future__ import annotations

import json
import os
import time
from typing import Any
from urllib.parse import quote

import boto3
import pytest

from tests.handler.conftest import Api, Tenant, load_function

A = "/api/latest"
SCRIPT = "import flow_api\n\ndef handler(system, this, inputs):\n    return this.success('hi')\n"


@pytest.fixture
def queue_url(aws: str) -> str:
    return os.environ["EXECUTION_QUEUE_URL"]


@pytest.fixture
def flows_api(api: Api, queue_url: str) -> Api:
    return Api(load_function("flows"), "flows")


def _queued(url: str) -> list[dict]:
    raw = boto3.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in raw]


def test_flows_are_created_versioned_and_listed(flows_api: Api, tenants: tuple[Tenant, Tenant]):
    a, _ = tenants
    path = f"{A}/workspaces/{a.workspace_id}/flows/hello"
    first = flows_api.call("PUT", path, {"script": SCRIPT}, token=a.admin_token)
    assert first.status == 201
    assert (first.body["version"], first.body["name"]) == (1, "hello")
    same = flows_api.call("PUT", path, {"script": SCRIPT}, token=a.admin_token)
    assert same.status == 200
    assert same.body["version"] == 1  # identical content is no new version
    changed = flows_api.call(
        "PUT", path, {"script": SCRIPT + "# v2\n", "description": "d"}, token=a.admin_token
    )
    assert (changed.status, changed.body["version"], changed.body["id"]) == (200, 2, first.body["id"])
    listed = flows_api.call("GET", f"{A}/workspaces/{a.workspace_id}/flows", token=a.admin_token).body[
        "items"
    ]
    assert [(f["name"], f["version"]) for f in listed] == [("hello", 2)]
    assert flows_api.call("DELETE", path, token=a.admin_token).status == 204
    assert flows_api.call("GET", path, token=a.admin_token).status == 404


@pytest.mark.parametrize(
    ("script", "needle"),
    [
        ("def handler(system, this):\n    return (\n", "line 2"),
        ("import flow_api\nx = 1\n", "handler"),
    ],
)
def test_bad_scripts_are_refused_on_save(flows_api: Api, tenants, script, needle):
    a, _ = tenants
    answer = flows_api.call(
        "PUT", f"{A}/workspaces/{a.workspace_id}/flows/bad", {"script": script}, token=a.admin_token
    )
    assert answer.status == 400
    assert needle in answer.body["error"]["message"]
    assert (
        flows_api.call("GET", f"{A}/workspaces/{a.workspace_id}/flows/bad", token=a.admin_token).status == 404
    )


@pytest.mark.parametrize("name", ["with space", "a/b", "x" * 129, "ünïcode"])
def test_flow_names_are_checked(flows_api: Api, tenants, name):
    a, _ = tenants
    # the name percent-encoded, as a client sends it: a slash in it stays inside the one path segment
    answer = flows_api.call(
        "PUT",
        f"{A}/workspaces/{a.workspace_id}/flows/{quote(name, safe='')}",
        {"script": SCRIPT},
        token=a.admin_token,
    )
    assert answer.status in (400, 404)


def test_a_raw_slash_in_a_flow_name_is_a_path_api_gateway_does_not_route(flows_api: Api, tenants):
    a, _ = tenants
    answer = flows_api.call(
        "PUT", f"{A}/workspaces/{a.workspace_id}/flows/a/b", {"script": SCRIPT}, token=a.admin_token
    )
    assert answer.status == 403
    assert answer.body == {"message": "Missing Authentication Token"}


def test_an_execution_is_queued_with_the_script_it_will_run(flows_api: Api, tenants, queue_url: str):
    a, _ = tenants
    flows_api.call(
        "PUT", f"{A}/workspaces/{a.workspace_id}/flows/hello", {"script": SCRIPT}, token=a.admin_token
    )
    started = flows_api.call(
        "POST",
        f"{A}/workspaces/{a.workspace_id}/executions",
        {"flow": "hello", "inputs": {"n": 1.5, "who": "x"}},
        token=a.admin_token,
    )
    assert started.status == 202
    body = started.body
    assert (body["status"], body["type"], body["flow"], body["script"]) == (
        "pending",
        "flow",
        "hello",
        SCRIPT,
    )
    assert body["inputs"] == {"n": 1.5, "who": "x"}
    assert body["input_sources"] == {"n": "call", "who": "call"}
    assert body["started_by"] == a.admin_id
    assert _queued(queue_url) == [{"version": 1, "execution_id": body["id"], "workspace_id": a.workspace_id}]
    read = flows_api.call(
        "GET", f"{A}/workspaces/{a.workspace_id}/executions/{body['id']}", token=a.admin_token
    )
    assert read.body == body
    listed = flows_api.call("GET", f"{A}/workspaces/{a.workspace_id}/executions", token=a.admin_token).body
    assert [e["id"] for e in listed["items"]] == [body["id"]]


def test_unknown_flow_and_bad_bodies(flows_api: Api, tenants, queue_url: str):
    a, _ = tenants
    path = f"{A}/workspaces/{a.workspace_id}/executions"
    assert flows_api.call("POST", path, {"flow": "nope"}, token=a.admin_token).status == 404
    assert flows_api.call("POST", path, {"flow": "x", "inputs": [1]}, token=a.admin_token).status == 400
    assert flows_api.call("POST", path, {"flow": "x", "status": "success"}, token=a.admin_token).status == 400
    assert _queued(queue_url) == []


def test_cancel_is_idempotent_and_final(flows_api: Api, tenants, queue_url: str):
    a, _ = tenants
    flows_api.call(
        "PUT", f"{A}/workspaces/{a.workspace_id}/flows/hello", {"script": SCRIPT}, token=a.admin_token
    )
    eid = flows_api.call(
        "POST", f"{A}/workspaces/{a.workspace_id}/executions", {"flow": "hello"}, token=a.admin_token
    ).body["id"]
    path = f"{A}/workspaces/{a.workspace_id}/executions/{eid}/cancel"
    first = flows_api.call("POST", path, token=a.admin_token)
    assert (first.status, first.body["status"]) == (200, "cancelled")
    again = flows_api.call("POST", path, token=a.admin_token)
    assert (again.status, again.body["status"]) == (200, "cancelled")


def test_another_contract_sees_no_flows_or_executions(flows_api: Api, tenants, queue_url: str):
    a, b = tenants
    ws = a.workspace_id
    flows_api.call("PUT", f"{A}/workspaces/{ws}/flows/hello", {"script": SCRIPT}, token=a.admin_token)
    eid = flows_api.call(
        "POST", f"{A}/workspaces/{ws}/executions", {"flow": "hello"}, token=a.admin_token
    ).body["id"]
    probes = [
        ("PUT", f"{A}/workspaces/{ws}/flows/hello", {"script": SCRIPT + "#evil\n"}),
        ("GET", f"{A}/workspaces/{ws}/flows/hello", None),
        ("DELETE", f"{A}/workspaces/{ws}/flows/hello", None),
        ("GET", f"{A}/workspaces/{ws}/flows", None),
        ("POST", f"{A}/workspaces/{ws}/executions", {"flow": "hello"}),
        ("GET", f"{A}/workspaces/{ws}/executions", None),
        ("GET", f"{A}/workspaces/{ws}/executions/{eid}", None),
        ("POST", f"{A}/workspaces/{ws}/executions/{eid}/cancel", None),
        # an execution id of A read through B's own workspace is not found either
        ("GET", f"{A}/workspaces/{b.workspace_id}/executions/{eid}", None),
    ]
    for method, path, body in probes:
        answer = flows_api.call(method, path, body, token=b.admin_token)
        assert answer.status == 404, (method, path, answer.body)
    assert flows_api.call("GET", f"{A}/workspaces/{ws}/flows/hello", token=a.admin_token).body["version"] == 1
    status = flows_api.call("GET", f"{A}/workspaces/{ws}/executions/{eid}", token=a.admin_token).body[
        "status"
    ]
    assert status == "pending"


def test_members_without_workspace_access_are_403(flows_api: Api, tenants, queue_url: str):
    a, _ = tenants
    answer = flows_api.call("GET", f"{A}/workspaces/{a.workspace_id}/flows", token=a.member_token)
    assert answer.status == 403


def test_scripts_are_limited_in_utf8_bytes_not_characters(flows_api: Api, tenants):
    a, _ = tenants
    # 50,000 characters of three bytes each: 150,000 bytes, over the 128 KiB limit
    script = "def handler(system, this):\n    return {'x': '" + "漢" * 50_000 + "'}\n"
    answer = flows_api.call(
        "PUT", f"{A}/workspaces/{a.workspace_id}/flows/wide", {"script": script}, token=a.admin_token
    )
    assert answer.status == 400
    assert "bytes" in answer.body["error"]["message"]


def test_an_active_flow_cannot_be_deleted(flows_api: Api, tenants):
    a, _ = tenants
    path = f"{A}/workspaces/{a.workspace_id}/flows/hello"
    flows_api.call("PUT", path, {"script": SCRIPT}, token=a.admin_token)
    assert flows_api.call("POST", f"{path}/activate", token=a.admin_token).status == 200
    refused = flows_api.call("DELETE", path, token=a.admin_token)
    assert (refused.status, refused.error_code) == (409, "flow_active")
    assert flows_api.call("POST", f"{path}/deactivate", token=a.admin_token).status == 200
    assert flows_api.call("DELETE", path, token=a.admin_token).status == 204


def test_a_posted_message_can_be_read_where_its_location_points(flows_api: Api, tenants):
    a, b = tenants
    path = f"{A}/workspaces/{a.workspace_id}/flows/hello"
    flows_api.call("PUT", path, {"script": SCRIPT}, token=a.admin_token)
    flows_api.call("POST", f"{path}/activate", token=a.admin_token)
    posted = flows_api.call("POST", f"{path}/messages", {"n": 1}, token=a.admin_token)
    assert posted.status == 202
    read = flows_api.call("GET", posted.headers["Location"], token=a.admin_token)
    assert (read.status, read.body["id"], read.body["body"]) == (200, posted.body["id"], {"n": 1})
    assert flows_api.call("GET", posted.headers["Location"], token=b.admin_token).status == 404


def test_cancelling_the_jobs_of_a_task_reports_the_task(flows_api: Api, tenants):
    # Given an execution running an operation task's jobs (a slow flow), and the runner's task hook
    import threading

    from flowgate.flows.models import ExecutionStatus
    from flowgate.flows.service import ACTIVE
    from flowgate.wiring import container

    a, _ = tenants
    slow = "import time\ndef handler(system, this):\n    time.sleep(20)\n"
    flows_api.call(
        "PUT", f"{A}/workspaces/{a.workspace_id}/flows/slow", {"script": slow}, token=a.admin_token
    )
    item = container().flows.create_flow_execution(a.workspace_id, "slow", {}, a.admin_id, task_id="task-1")
    reported: list[tuple[str, bool]] = []
    runner = container().runner
    runner.on_task_done = lambda task_id, success, message: reported.append((task_id, success))
    worker = threading.Thread(target=runner.run_claimed, args=(item["id"],))
    worker.start()
    # When the execution is cancelled while it runs
    deadline = time.monotonic() + 10
    while (container().flow_store.get_execution(item["id"]) or {}).get(
        "status"
    ) == "pending" and time.monotonic() < deadline:
        time.sleep(0.05)
    container().flow_store.transition(item["id"], ExecutionStatus.CANCELLED, allowed_from=ACTIVE)
    worker.join(15)
    # Then the task hears that its jobs ended without success
    assert not worker.is_alive()
    assert reported == [("task-1", False)]


def test_limited_workspaces_store_a_bounded_number_of_executions(
    flows_api: Api, tenants, root_token: str, api: Api, monkeypatch: pytest.MonkeyPatch
):
    # Given a quota of 3 stored executions for limited workspaces
    from flowgate import wiring

    monkeypatch.setenv("MAX_STORED_EXECUTIONS_LIMITED", "3")
    wiring.install(None)  # a new container process reads the environment
    a, b = tenants
    for t in (a, b):
        flows_api.call(
            "PUT", f"{A}/workspaces/{t.workspace_id}/flows/hello", {"script": SCRIPT}, token=t.admin_token
        )
    path = f"{A}/workspaces/{a.workspace_id}/executions"
    # When four executions are started
    answers = [flows_api.call("POST", path, {"flow": "hello"}, token=a.admin_token) for _ in range(4)]
    # Then the fourth is refused, clearly, and nothing was stored for it
    assert [x.status for x in answers] == [202, 202, 202, 409]
    assert answers[3].error_code == "quota_exceeded"
    assert len(flows_api.call("GET", path, token=a.admin_token).body["items"]) == 3
    # another workspace has its own count, and a full workspace has no such quota
    assert (
        flows_api.call(
            "POST", f"{A}/workspaces/{b.workspace_id}/executions", {"flow": "hello"}, token=b.admin_token
        ).status
        == 202
    )
    api.call("PATCH", f"{A}/workspaces/{a.workspace_id}", {"kind": "full"}, token=root_token)
    assert flows_api.call("POST", path, {"flow": "hello"}, token=a.admin_token).status == 202


SETTINGS = {
    "timeout_seconds": 600,
    "log_level": "debug",
    "log_directory": "/var/log/%WORKSPACE.ID%/flows",
    "retain_successful_logs": True,
    "retain_failed_logs": False,
}
DEFAULTS = {
    "timeout_seconds": None,
    "log_level": "info",
    "log_directory": None,
    "retain_successful_logs": False,
    "retain_failed_logs": True,
}


def test_a_flow_has_settings_with_defaults(flows_api: Api, tenants):
    a, _ = tenants
    path = f"{A}/workspaces/{a.workspace_id}/flows"
    plain = flows_api.call("PUT", f"{path}/plain", {"script": SCRIPT}, token=a.admin_token)
    assert plain.status == 201
    assert {k: plain.body[k] for k in DEFAULTS} == DEFAULTS
    assert {
        k: v
        for k, v in flows_api.call("GET", f"{path}/plain", token=a.admin_token).body.items()
        if k in DEFAULTS
    } == DEFAULTS
    made = flows_api.call("PUT", f"{path}/tuned", {"script": SCRIPT, **SETTINGS}, token=a.admin_token)
    assert made.status == 201
    # a variable reference's periods are stored as underscores (variable names in flows have none)
    stored = {**SETTINGS, "log_directory": "/var/log/%WORKSPACE_ID%/flows"}
    assert {k: made.body[k] for k in SETTINGS} == stored
    read = flows_api.call("GET", f"{path}/tuned", token=a.admin_token)
    assert (read.status, {k: read.body[k] for k in SETTINGS}) == (200, stored)
    # the same settings again are no new version; any one of them changed is one
    again = flows_api.call("PUT", f"{path}/tuned", {"script": SCRIPT, **SETTINGS}, token=a.admin_token)
    assert (again.status, again.body["version"]) == (200, 1)
    for n, (field, value) in enumerate(
        [
            ("log_level", "error"),
            ("timeout_seconds", 1),
            ("retain_failed_logs", True),
            ("log_directory", "/x"),
        ],
        2,
    ):
        changed = flows_api.call(
            "PUT", f"{path}/tuned", {"script": SCRIPT, **SETTINGS, field: value}, token=a.admin_token
        )
        assert (changed.status, changed.body["version"], changed.body[field]) == (200, n, value)
    # a PUT is the flow's whole representation: settings it leaves out go back to their defaults
    reset = flows_api.call("PUT", f"{path}/tuned", {"script": SCRIPT}, token=a.admin_token)
    assert (reset.status, reset.body["version"]) == (200, 6)
    assert {k: reset.body[k] for k in DEFAULTS} == DEFAULTS
    listed = flows_api.call("GET", path, token=a.admin_token)
    assert listed.status == 200
    assert sorted(f["name"] for f in listed.body["items"]) == ["plain", "tuned"]


@pytest.mark.parametrize(
    "settings",
    [
        {"timeout_seconds": 0},
        {"timeout_seconds": 86401},
        {"timeout_seconds": -5},
        {"timeout_seconds": "60"},
        {"timeout_seconds": 1.5},
        {"timeout_seconds": True},
        {"log_level": "verbose"},
        {"log_level": "INFO"},
        {"log_level": None},
        {"log_level": 3},
        {"log_directory": "d" * 1025},
        {"log_directory": 5},
        {"retain_successful_logs": "yes"},
        {"retain_failed_logs": 1},
        {"retain_failed_logs": None},
        {"logLevel": "info"},
        {"unknown": 1},
    ],
)
def test_bad_settings_are_400(flows_api: Api, tenants, settings):
    a, _ = tenants
    path = f"{A}/workspaces/{a.workspace_id}/flows/bad"
    answer = flows_api.call("PUT", path, {"script": SCRIPT, **settings}, token=a.admin_token)
    assert answer.status == 400, answer.body
    assert flows_api.call("GET", path, token=a.admin_token).status == 404


def test_settings_at_their_limits_are_accepted(flows_api: Api, tenants):
    a, _ = tenants
    path = f"{A}/workspaces/{a.workspace_id}/flows"
    limits: dict[str, dict[str, Any]] = {
        "one": {"timeout_seconds": 1, "log_level": "none", "log_directory": ""},
        "day": {"timeout_seconds": 86400, "log_level": "warning", "log_directory": "é" * 1024},
        "nulls": {"timeout_seconds": None, "log_directory": None, "description": None},
    }
    for name, settings in limits.items():
        answer = flows_api.call("PUT", f"{path}/{name}", {"script": SCRIPT, **settings}, token=a.admin_token)
        assert answer.status == 201, (name, answer.body)
        assert {k: answer.body[k] for k in settings} == settings
        read = flows_api.call("GET", f"{path}/{name}", token=a.admin_token).body
        assert {k: read[k] for k in settings} == settings


def test_a_log_directory_names_only_variables_the_workspace_defines(flows_api: Api, tenants):
    from flowgate.variables.models import PutVariableRequest
    from flowgate.wiring import container

    a, b = tenants
    path = f"{A}/workspaces/{a.workspace_id}/flows/logs"
    body = {"script": SCRIPT, "log_directory": "/logs/%SITE.DIR%/%EXECUTION.ID%"}
    refused = flows_api.call("PUT", path, body, token=a.admin_token)
    assert (refused.status, refused.error_code) == (400, "unknown_variable")
    assert "log_directory" in refused.body["error"]["message"]
    assert "SITE_DIR" in refused.body["error"]["message"]
    assert flows_api.call("GET", path, token=a.admin_token).status == 404
    # defined in another workspace is not defined here
    container().variables.put(b.workspace_id, "SITE_DIR", PutVariableRequest(value="/b"), b.admin_id)
    assert flows_api.call("PUT", path, body, token=a.admin_token).status == 400
    container().variables.put(a.workspace_id, "SITE_DIR", PutVariableRequest(value="/a"), a.admin_id)
    saved = flows_api.call("PUT", path, body, token=a.admin_token)
    assert (saved.status, saved.body["log_directory"]) == (201, "/logs/%SITE_DIR%/%EXECUTION_ID%")
