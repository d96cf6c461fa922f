"""Concurrent requests of two tenants through the local stack: every answer belongs to its own request.

powertools keeps the current event on the router class, so a local stack that ran "warm containers" as
threads of one process let concurrent requests overwrite each other's event (a body-less cancel once
recorded another tenant's login body as its message). Each warm container is now a process of its own,
serving one event at a time, as on Lambda. 16 clients over two tenants log in, create, read and cancel
at the same time, each with values of its own, and check that every answer carries their values and
no one else's.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
A = "/api/latest"
CLIENTS_PER_TENANT = 8
ROUNDS = 1  # one round already shows a leak (the old devstack leaked 36 answers in two)
FINAL = ("success", "error", "cancelled")
JOBS_FLOW = "import flow_api\ndef handler(system, this, inputs):\n    return this.success('jobs done')\n"
SCRIPT = (
    "import flow_api\n# {marker}\n"
    "def handler(system, this, inputs):\n    return this.success(inputs['marker'])\n"
)


@dataclass
class Client:
    """One concurrent client: a member of one tenant with credentials and values no one else has."""

    number: int
    tenant: str  # "a" or "b"
    cid: str
    ws: str
    other_ws: str  # the other tenant's workspace
    username: str
    password: str
    user_id: str = ""
    markers: list[str] = field(default_factory=list)  # one per round
    executions: dict[str, str] = field(default_factory=dict)  # execution id -> its round's marker
    problems: list[str] = field(default_factory=list)

    def secrets(self) -> list[str]:
        """What must appear in no other client's answers."""
        return [self.username, self.password, *self.markers]


class _Tool(BaseHTTPRequestHandler):
    """The workflow tool's endpoint: takes every webhook and decides nothing (the clients cancel)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def workflow_tool() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Tool)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hooks"
    server.shutdown()


def _setup(stack: Stack, root_token: str, tool_url: str) -> list[Client]:
    tag = uuid.uuid4().hex[:8]
    tenants = {}
    for name in ("a", "b"):
        made = stack.call("POST", f"{A}/contracts", {"name": f"iso-{name}-{tag}"}, root_token)
        assert made.status_code == 201, made.text
        tenants[name] = {"cid": made.json()["id"]}
    clients = []
    for number in range(2 * CLIENTS_PER_TENANT):
        name = "ab"[number % 2]
        username = f"iso-{tag}-{number:02d}-{uuid.uuid4().hex[:6]}"  # none a prefix of another
        password = f"pw-{uuid.uuid4().hex}"
        member = stack.call(
            "POST",
            f"{A}/contracts/{tenants[name]['cid']}/members",
            {"username": username, "password": password, "role": "org_admin", "privileges": []},
            root_token,
        )
        assert member.status_code == 201, member.text
        clients.append(
            Client(number, name, tenants[name]["cid"], "", "", username, password, member.json()["id"])
        )
    for name, tenant in tenants.items():
        first = next(client for client in clients if client.tenant == name)
        ws = stack.call(
            "POST",
            f"{A}/contracts/{tenant['cid']}/workspaces",
            {"name": f"iso-{name}-{tag}", "kind": "limited"},
            stack.login(first.username, first.password),
        )
        assert ws.status_code == 201, ws.text
        tenant["ws"] = ws.json()["id"]
        _hold_operations(stack, tenant["cid"], tenant["ws"], stack.login(first.username, first.password))
    for name, value in (("client.main.workflowEndPoint", tool_url), ("client.main.workflowEnabled", "1")):
        answer = stack.call("POST", "/api/config/properties", {"name": name, "value": value}, root_token)
        assert answer.status_code == 200, answer.text
    for client in clients:
        client.ws = tenants[client.tenant]["ws"]
        client.other_ws = tenants["b" if client.tenant == "a" else "a"]["ws"]
        client.markers = [f"marker-{client.number}-{i}-{uuid.uuid4().hex}" for i in range(ROUNDS)]
    return clients


def _hold_operations(stack: Stack, cid: str, ws: str, admin: str) -> None:
    """Deploys in `ws` run a flow, and are held for approval first (the enterprise's workflow is on)."""
    assert (
        stack.call("PUT", f"{A}/workspaces/{ws}/flows/jobs", {"script": JOBS_FLOW}, admin).status_code == 201
    )
    bound = stack.call("PUT", f"{A}/workspaces/{ws}/operations/deploy", {"flow": "jobs"}, admin)
    assert bound.status_code == 200, bound.text
    enterprise = stack.call("GET", f"/api/admin/enterprises/{cid}", token=admin).json()
    enterprise["workflow"] = True
    assert stack.call("PUT", f"/api/admin/enterprises/{cid}", enterprise, admin).status_code == 200


def _work(stack: Stack, client: Client, start: threading.Barrier) -> None:
    """The client's rounds; every answer is checked against what this client sent."""
    session = requests.Session()

    def call(method: str, path: str, body: Any = None, token: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return session.request(method, stack.url(path), json=body, headers=headers, timeout=60)

    def expect(what: str, condition: bool, answer: requests.Response) -> None:
        if not condition:
            client.problems.append(f"client {client.number} {what}: {answer.status_code} {answer.text[:300]}")

    start.wait(60)
    for round_number, marker in enumerate(client.markers):
        login = call("POST", f"{A}/auth/login", {"username": client.username, "password": client.password})
        expect("login", login.status_code == 200 and bool(login.json().get("token")), login)
        if login.status_code != 200:
            continue
        token = login.json()["token"]

        me = call("GET", f"{A}/auth/me", token=token)
        expect(
            "me",
            me.status_code == 200
            and (me.json()["username"], me.json()["contract_id"]) == (client.username, client.cid),
            me,
        )

        flow = f"iso-{client.number}-{round_number}"
        script = SCRIPT.format(marker=marker)
        put = call(
            "PUT",
            f"{A}/workspaces/{client.ws}/flows/{flow}",
            {"script": script, "description": marker},
            token,
        )
        expect(
            "put flow",
            put.status_code in (200, 201)
            and (put.json()["name"], put.json()["workspace_id"], put.json()["description"])
            == (flow, client.ws, marker)
            and put.json()["script"] == script,
            put,
        )

        inputs = {"marker": marker, "client": client.number}
        started = call(
            "POST", f"{A}/workspaces/{client.ws}/executions", {"flow": flow, "inputs": inputs}, token
        )
        expect(
            "start execution",
            started.status_code in (200, 201, 202)
            and (started.json()["workspace_id"], started.json()["flow"], started.json()["inputs"])
            == (client.ws, flow, inputs)
            and started.json()["started_by"] == client.user_id,
            started,
        )
        if started.status_code not in (200, 201, 202):
            continue
        eid = started.json()["id"]
        client.executions[eid] = marker

        read = call("GET", f"{A}/workspaces/{client.ws}/executions/{eid}", token=token)
        expect(
            "read execution",
            read.status_code == 200
            and (read.json()["id"], read.json()["inputs"], read.json()["script"]) == (eid, inputs, script),
            read,
        )

        # A body-less cancel: what once recorded another request's body as the execution's message
        cancel = call("POST", f"{A}/workspaces/{client.ws}/executions/{eid}/cancel", token=token)
        expect(
            "cancel",
            (cancel.status_code == 200 and cancel.json()["id"] == eid and cancel.json()["inputs"] == inputs)
            or cancel.status_code == 409,  # it ended first
            cancel,
        )

        # A held deploy of a VM of its own, then a body-less cancel of it by its requester: the route
        # that reads the body after an I/O wait, where another request's event once took its place
        vm_name = f"vm-{marker}"
        vm = call(
            "POST",
            f"/api/cloud/workspaces/{client.ws}/virtualmachines",
            {"name": vm_name, "cpu": 1, "ram": 512},
            token,
        )
        expect("create vm", vm.status_code == 201 and vm.json()["name"] == vm_name, vm)
        if vm.status_code != 201:
            continue
        deploy = call(
            "POST",
            f"/api/cloud/workspaces/{client.ws}/virtualmachines/{vm.json()['id']}/action/deploy",
            {},
            token,
        )
        expect("deploy", deploy.status_code == 202 and deploy.json()["state"] == "QUEUEING", deploy)
        if deploy.status_code != 202:
            continue
        task_id = deploy.json()["taskId"]
        held = call("POST", f"/api/object/task/{task_id}/action/cancel", token=token)
        expect(
            "cancel task",
            held.status_code == 200
            and (held.json()["taskId"], held.json()["state"]) == (task_id, "CANCELLED")
            and not (held.json().get("extradata") or {}).get("workflow"),  # no message was sent
            held,
        )

        # The other tenant's workspace stays closed, whatever the other requests in flight
        other = call("GET", f"{A}/workspaces/{client.other_ws}/flows/{flow}", token=token)
        expect("other tenant", other.status_code in (403, 404), other)

        for answer in (login, me, put, started, read, cancel, vm, deploy, held, other):
            client.problems.extend(
                f"client {client.number}: {answer.request.method} {answer.url} answered with {value!r}"
                for value in _foreign(client, answer.text)
            )
    session.close()


_everyone: list[Client] = []


def _foreign(client: Client, text: str) -> list[str]:
    return [
        secret for other in _everyone if other is not client for secret in other.secrets() if secret in text
    ]


def _eventually(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.3)
    return check()


def test_concurrent_clients_of_two_tenants_each_get_their_own_answers(
    stack: Stack, root_token: str, workflow_tool: str
) -> None:
    # Given 16 members, 8 in each of two contracts, each with a password and markers of their own
    clients = _setup(stack, root_token, workflow_tool)
    _everyone[:] = clients
    start = threading.Barrier(len(clients))
    threads = [threading.Thread(target=_work, args=(stack, client, start)) for client in clients]
    # When they all log in, create, read and cancel at the same time
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    print(f"{len(clients)} clients x {ROUNDS} rounds took {time.monotonic() - started:.1f} s")
    assert not any(thread.is_alive() for thread in threads)
    # Then every answer was their own: their values, their tenant, nobody else's values
    problems = [problem for client in clients for problem in client.problems]
    assert problems == [], "\n".join(problems)
    assert sum(len(client.executions) for client in clients) == len(clients) * ROUNDS

    # And every execution ended with its own request's values only (the runner's workers, fed by SQS)
    token = {client.number: stack.login(client.username, client.password) for client in clients}

    def ended(client: Client, eid: str) -> dict[str, Any]:
        answer = stack.call("GET", f"{A}/workspaces/{client.ws}/executions/{eid}", token=token[client.number])
        assert answer.status_code == 200, answer.text
        assert not _foreign(client, answer.text), answer.text
        body: dict[str, Any] = answer.json()
        return body

    for client in clients:
        for eid, marker in client.executions.items():
            assert _eventually(lambda: ended(client, eid)["status"] in FINAL, 60)  # noqa: B023
            execution = ended(client, eid)
            assert execution["inputs"]["marker"] == marker
            if execution["status"] == "success":
                assert execution["message"] == marker
            else:
                assert execution["status"] == "cancelled", execution
                assert marker not in (execution["message"] or "") or execution["message"] == marker
