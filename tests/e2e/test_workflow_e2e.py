"""The approval workflow through the local stack, with a workflow tool on loopback written the way
Abiquo's sample connectors are: it receives the POST, parses one task or a `collection`, and POSTs to
`<api_location> + "/" + href` with HTTP Basic credentials of a workflow user."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
import requests
from standardwebhooks.webhooks import Webhook

from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
A = "/api/latest"
JOBS_FLOW = """import flow_api
def handler(system, this, inputs):
    task = inputs['task']
    this.log('running', task['type'], 'jobs:', [j['type'] for j in task['jobs']['collection']])
    this.set_output('ran', task['taskId'])
    return this.success('jobs done')
"""


@dataclass
class WorkflowTool:
    """The outside workflow tool: verifies the signature, then continues, cancels or just waits."""

    api_location: str
    credentials: tuple[str, str]
    secret: str
    policy: str = "wait"  # wait | continue | cancel
    message: str | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    answered_states: list[str | None] = field(default_factory=list)  # the task's state in each answer
    refused: int = 0

    def on_request(self, headers: dict[str, str], body: bytes) -> int:
        try:
            Webhook(self.secret).verify(body, headers)
        except Exception:
            self.refused += 1
            return 401
        payload = json.loads(body)
        tasks = payload.get("collection", [payload])
        self.received.extend(tasks)
        if self.policy != "wait":
            threading.Thread(target=self._decide, args=(tasks,), daemon=True).start()
        return 204

    def _decide(self, tasks: list[dict[str, Any]]) -> None:
        for task in tasks:
            href = next(link["href"] for link in task["links"] if link["rel"] == self.policy)
            data = self.message.encode() if self.message else b"{}"
            kind = "text/plain" if self.message else "application/json"
            answer = requests.post(
                self.api_location + "/" + href,
                data=data,
                auth=self.credentials,
                headers={"Content-Type": kind},
                timeout=30,
            )
            self.answered_states.append(answer.json().get("state") if answer.ok else None)
            self.answers.append(answer.status_code)


@pytest.fixture(scope="module")
def signing_secret(stack: Stack) -> str:
    """The generated webhook key, read from the stack's moto the way an operator reads it from AWS."""
    client = boto3.client(
        "secretsmanager",
        endpoint_url=f"http://127.0.0.1:{stack.process.moto_port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    arn = next(s["ARN"] for s in client.list_secrets()["SecretList"] if "WebhookSigningSecret" in s["Name"])
    return "whsec_" + str(json.loads(client.get_secret_value(SecretId=arn)["SecretString"])["key"])


@pytest.fixture(scope="module")
def tool_server(stack: Stack, signing_secret: str) -> Iterator[tuple[str, dict[str, WorkflowTool]]]:
    """One loopback endpoint; each test registers its own tool under a path of its own."""
    tools: dict[str, WorkflowTool] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            tool = tools.get(self.path.strip("/"))
            status = tool.on_request(dict(self.headers), body) if tool else 404
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", tools
    server.shutdown()


@dataclass
class Tenant:
    cid: str
    ws: str
    admin: str
    requester: str
    requester_id: str
    approver: tuple[str, str]
    tool: WorkflowTool


def _until(predicate: Any, timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} not met within {timeout}s")


@pytest.fixture
def tenant(stack: Stack, root_token: str, tool_server, signing_secret: str) -> Tenant:
    """A contract with workflow on, a requester, a workflow user with WORKFLOW_OVERRIDE, a workspace whose
    deploy/undeploy/reconfigure are bound to a flow, and its own workflow tool as the endpoint."""
    base, tools = tool_server
    tag = uuid.uuid4().hex[:8]
    cid = stack.call("POST", f"{A}/contracts", {"name": f"wf-{tag}"}, root_token).json()["id"]
    people = {
        "admin": ("org_admin", []),
        "req": ("member", []),
        "approver": ("member", ["WORKFLOW_OVERRIDE"]),
    }
    ids = {}
    for who, (role, privileges) in people.items():
        made = stack.call(
            "POST",
            f"{A}/contracts/{cid}/members",
            {
                "username": f"{who}-{tag}",
                "password": f"{who}-{tag}-password",
                "role": role,
                "privileges": privileges,
            },
            root_token,
        )
        assert made.status_code == 201, made.text
        ids[who] = made.json()["id"]
    admin = stack.login(f"admin-{tag}", f"admin-{tag}-password")
    ws = stack.call("POST", f"{A}/contracts/{cid}/workspaces", {"name": "infra"}, admin).json()["id"]
    stack.call("PUT", f"{A}/workspaces/{ws}/access/{ids['req']}", {"role": "member"}, admin)
    assert (
        stack.call("PUT", f"{A}/workspaces/{ws}/flows/jobs", {"script": JOBS_FLOW}, admin).status_code == 201
    )
    for op in ("deploy", "undeploy", "reconfigure"):
        bound = stack.call("PUT", f"{A}/workspaces/{ws}/operations/{op}", {"flow": "jobs"}, admin)
        assert bound.status_code == 200, bound.text
    tool = WorkflowTool(stack.base + "/api", (f"approver-{tag}", f"approver-{tag}-password"), signing_secret)
    tools[tag] = tool
    for name, value in (
        ("client.main.workflowEndPoint", f"{base}/{tag}"),
        ("client.main.workflowEnabled", "1"),
    ):
        answer = stack.call("POST", "/api/config/properties", {"name": name, "value": value}, root_token)
        assert answer.status_code == 200, answer.text
    enterprise = stack.call("GET", f"/api/admin/enterprises/{cid}", token=admin).json()
    enterprise["workflow"] = True
    assert stack.call("PUT", f"/api/admin/enterprises/{cid}", enterprise, admin).status_code == 200
    return Tenant(
        cid, ws, admin, stack.login(f"req-{tag}", f"req-{tag}-password"), ids["req"], tool.credentials, tool
    )


def _vm(stack: Stack, t: Tenant, name: str = "web-1") -> str:
    made = stack.call(
        "POST",
        f"/api/cloud/workspaces/{t.ws}/virtualmachines",
        {"name": name, "cpu": 2, "ram": 2048},
        t.requester,
    )
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def _task(stack: Stack, t: Tenant, uuid_: str) -> dict[str, Any]:
    answer = requests.get(stack.url(f"/api/object/task/{uuid_}"), auth=t.approver, timeout=30)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _final(stack: Stack, t: Tenant, uuid_: str) -> dict[str, Any]:
    final = ("FINISHED_SUCCESSFULLY", "FINISHED_UNSUCCESSFULLY", "CANCELLED", "ABORTED")
    return dict(
        _until(lambda: (task := _task(stack, t, uuid_))["state"] in final and task, what=f"task {uuid_} ends")
    )


def _request(stack: Stack, t: Tenant, vm: str, op: str, body: dict | None = None) -> dict[str, Any]:
    answer = stack.call(
        "POST", f"/api/cloud/workspaces/{t.ws}/virtualmachines/{vm}/action/{op}", body or {}, t.requester
    )
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def test_deploy_is_held_then_continued_and_runs_through_the_bound_flow(stack: Stack, tenant: Tenant):
    tenant.tool.policy = "continue"
    vm = _vm(stack, tenant)
    task = _request(stack, tenant, vm, "deploy")
    assert task["state"] == "QUEUEING"
    assert [j["type"] for j in task["jobs"]["collection"]] == ["SCHEDULE", "CONFIGURE", "POWER_ON"]
    links = {link["rel"]: link["href"] for link in task["links"]}
    assert links["continue"] == f"object/task/{task['taskId']}/action/continue"
    assert not any(h.startswith(("http", "/")) for h in links.values())
    # The continue answers right after its decision; the approval state machine then starts the jobs
    _until(lambda: tenant.tool.answers, what="the workflow tool's continue is answered")
    assert tenant.tool.answers == [202]  # accepted: the jobs start next
    assert tenant.tool.answered_states == ["PENDING"]
    started = _until(
        lambda: _task(stack, tenant, task["taskId"])["state"] in ("STARTED", "FINISHED_SUCCESSFULLY"),
        what="the jobs start",
    )
    assert started
    done = _final(stack, tenant, task["taskId"])
    assert done["state"] == "FINISHED_SUCCESSFULLY", done
    assert tenant.tool.refused == 0
    assert [t["taskId"] for t in tenant.tool.received] == [task["taskId"]]
    [execution] = stack.call("GET", f"{A}/workspaces/{tenant.ws}/executions", token=tenant.admin).json()[
        "items"
    ]
    ran = stack.call(
        "GET", f"{A}/workspaces/{tenant.ws}/executions/{execution['id']}", token=tenant.admin
    ).json()
    assert (ran["status"], ran["flow"], ran["task_id"]) == ("success", "jobs", task["taskId"])
    assert ran["outputs"]["ran"] == task["taskId"]  # the bound flow ran the task's jobs
    vm_now = stack.call(
        "GET", f"/api/cloud/workspaces/{tenant.ws}/virtualmachines/{vm}", token=tenant.requester
    )
    assert vm_now.json()["state"] == "ON"


def test_undeploy_cancelled_with_a_message_runs_nothing(stack: Stack, tenant: Tenant):
    tenant.tool.policy = "continue"
    vm = _vm(stack, tenant)
    _final(stack, tenant, _request(stack, tenant, vm, "deploy")["taskId"])
    tenant.tool.policy, tenant.tool.message = "cancel", "not today: change freeze"
    task = _request(stack, tenant, vm, "undeploy")
    assert [j["type"] for j in task["jobs"]["collection"]] == ["POWER_OFF", "DECONFIGURE"]
    done = _final(stack, tenant, task["taskId"])
    assert done["state"] == "CANCELLED"
    assert done["extradata"]["workflow"] == "not today: change freeze"
    executions = stack.call("GET", f"{A}/workspaces/{tenant.ws}/executions", token=tenant.admin).json()[
        "items"
    ]
    assert len(executions) == 1  # only the deploy's jobs ever ran
    vm_now = stack.call(
        "GET", f"/api/cloud/workspaces/{tenant.ws}/virtualmachines/{vm}", token=tenant.requester
    )
    assert vm_now.json()["state"] == "ON"


def test_no_hold_when_the_enterprise_has_workflow_off(stack: Stack, tenant: Tenant):
    enterprise = stack.call("GET", f"/api/admin/enterprises/{tenant.cid}", token=tenant.admin).json()
    enterprise["workflow"] = False
    assert (
        stack.call("PUT", f"/api/admin/enterprises/{tenant.cid}", enterprise, tenant.admin).status_code == 200
    )
    task = _request(stack, tenant, _vm(stack, tenant), "deploy")
    assert task["state"] in ("PENDING", "STARTED")
    assert _final(stack, tenant, task["taskId"])["state"] == "FINISHED_SUCCESSFULLY"
    time.sleep(0.5)
    assert tenant.tool.received == []


def test_the_user_cancels_an_own_task_but_cannot_continue_it(stack: Stack, tenant: Tenant):
    task = _request(stack, tenant, _vm(stack, tenant), "deploy")
    _until(lambda: tenant.tool.received, what="the webhook arrives")
    path = f"/api/object/task/{task['taskId']}/action"
    assert stack.call("POST", f"{path}/continue", token=tenant.requester).status_code == 403
    cancelled = requests.post(
        stack.url(f"{path}/cancel"), headers={"Authorization": f"Bearer {tenant.requester}"}, timeout=30
    )
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "CANCELLED"


def test_double_click_and_different_decision(stack: Stack, tenant: Tenant):
    task = _request(stack, tenant, _vm(stack, tenant), "deploy")
    _until(lambda: tenant.tool.received, what="the webhook arrives")
    path = f"/api/object/task/{task['taskId']}/action"
    first = requests.post(stack.url(f"{path}/continue"), auth=tenant.approver, timeout=30)
    again = requests.post(stack.url(f"{path}/continue"), auth=tenant.approver, data="{}", timeout=30)
    assert (first.status_code, again.status_code) == (202, 200)  # the repeat answers the recorded outcome
    assert first.json()["state"] == "PENDING"
    assert again.json()["state"] != "QUEUEING"
    other = requests.post(stack.url(f"{path}/cancel"), auth=tenant.approver, timeout=30)
    assert other.status_code == 410
    assert "continue" in other.json()["error"]["message"]
    assert _final(stack, tenant, task["taskId"])["state"] == "FINISHED_SUCCESSFULLY"  # the jobs ran once
    executions = stack.call("GET", f"{A}/workspaces/{tenant.ws}/executions", token=tenant.admin).json()
    assert len(executions["items"]) == 1


def test_concurrent_continue_and_cancel_resolve_to_one(stack: Stack, tenant: Tenant):
    def decide(path: str, decision: str, barrier: threading.Barrier, statuses: dict[str, int]) -> None:
        barrier.wait()
        statuses[decision] = requests.post(
            stack.url(f"{path}/{decision}"), auth=tenant.approver, timeout=30
        ).status_code

    for _ in range(3):
        task = _request(stack, tenant, _vm(stack, tenant, f"race-{uuid.uuid4().hex[:4]}"), "deploy")
        path = f"/api/object/task/{task['taskId']}/action"
        statuses: dict[str, int] = {}
        barrier = threading.Barrier(2)
        threads = [
            threading.Thread(target=decide, args=(path, d, barrier, statuses)) for d in ("continue", "cancel")
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        winners = [d for d, s in statuses.items() if s in (200, 202)]
        assert len(winners) == 1, statuses
        assert all(s in (409, 410) for d, s in statuses.items() if d not in winners), statuses
        assert _final(stack, tenant, task["taskId"])["state"] == (
            "FINISHED_SUCCESSFULLY" if winners == ["continue"] else "CANCELLED"
        )
        audit = requests.get(
            stack.url(f"/api/object/task/{task['taskId']}/audit"), auth=tenant.approver, timeout=30
        )
        assert len(audit.json()) == 2  # both attempts are recorded, one as the winner


def test_timeout_applies_the_default_action(stack: Stack, tenant: Tenant):
    enterprise = stack.call("GET", f"/api/admin/enterprises/{tenant.cid}", token=tenant.admin).json()
    enterprise.update(approvalTimeoutSeconds=2, approvalTimeoutAction="cancel")
    assert (
        stack.call("PUT", f"/api/admin/enterprises/{tenant.cid}", enterprise, tenant.admin).status_code == 200
    )
    task = _request(stack, tenant, _vm(stack, tenant), "deploy")
    done = _final(stack, tenant, task["taskId"])
    assert done["state"] == "CANCELLED"
    assert "TIMED_OUT" in done["extradata"]["workflow"]


def test_timeout_with_the_default_action_continue_runs_the_jobs(stack: Stack, tenant: Tenant):
    enterprise = stack.call("GET", f"/api/admin/enterprises/{tenant.cid}", token=tenant.admin).json()
    enterprise.update(approvalTimeoutSeconds=2, approvalTimeoutAction="continue")
    assert (
        stack.call("PUT", f"/api/admin/enterprises/{tenant.cid}", enterprise, tenant.admin).status_code == 200
    )
    task = _request(stack, tenant, _vm(stack, tenant), "deploy")
    done = _final(stack, tenant, task["taskId"])
    assert done["state"] == "FINISHED_SUCCESSFULLY"
    assert done["extradata"]["workflow"] == "TIMED_OUT: continue after 2s"


def test_pending_tasks_and_the_other_enterprise(stack: Stack, root_token: str, tenant: Tenant):
    vm = _vm(stack, tenant)
    task = _request(stack, tenant, vm, "deploy")
    listed = requests.get(
        stack.url(f"/api/admin/enterprises/{tenant.cid}/action/pendingtasks"),
        auth=tenant.approver,
        timeout=30,
    ).json()
    assert [t["taskId"] for t in listed["collection"]] == [task["taskId"]]
    own = stack.call(
        "GET",
        f"/api/admin/enterprises/{tenant.cid}/users/{tenant.requester_id}/action/pendingtasks",
        token=tenant.requester,
    ).json()
    assert [t["taskId"] for t in own["collection"]] == [task["taskId"]]
    # a member of another contract, even with the privilege, gets 404 for this enterprise and task
    tag = uuid.uuid4().hex[:8]
    other = stack.call("POST", f"{A}/contracts", {"name": f"wf-other-{tag}"}, root_token).json()["id"]
    stack.call(
        "POST",
        f"{A}/contracts/{other}/members",
        {
            "username": f"x-{tag}",
            "password": "x-password-123",
            "role": "org_admin",
            "privileges": ["WORKFLOW_OVERRIDE"],
        },
        root_token,
    )
    outsider = (f"x-{tag}", "x-password-123")
    for method, path in (
        ("GET", f"/api/admin/enterprises/{tenant.cid}/action/pendingtasks"),
        ("GET", f"/api/object/task/{task['taskId']}"),
        ("POST", f"/api/object/task/{task['taskId']}/action/continue"),
        ("POST", f"/api/object/task/{task['taskId']}/action/cancel"),
        ("GET", f"/api/cloud/workspaces/{tenant.ws}/virtualmachines/{vm}"),
    ):
        assert requests.request(method, stack.url(path), auth=outsider, timeout=30).status_code == 404, path
    assert _task(stack, tenant, task["taskId"])["state"] == "QUEUEING"


def test_decision_bodies_that_are_refused(stack: Stack, tenant: Tenant):
    task = _request(stack, tenant, _vm(stack, tenant), "deploy")
    path = stack.url(f"/api/object/task/{task['taskId']}/action/cancel")
    binary = requests.post(
        path,
        data=bytes(range(256)),
        auth=tenant.approver,
        timeout=30,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert binary.status_code == 415
    huge = requests.post(
        path, data="x" * 100_000, auth=tenant.approver, timeout=30, headers={"Content-Type": "text/plain"}
    )
    assert huge.status_code == 413
    assert _task(stack, tenant, task["taskId"])["state"] == "QUEUEING"  # nothing changed
