"""What the handlers really answer is what the OpenAPI document says (issue 9, item 4): a session over
the four REST functions, successes and refusals, each answer's status documented for its route and
each refusal in the documented error shape. (The bounded schemathesis run would generalise this.)"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from devstack import openapi
from tests.handler.conftest import ADMIN, Answer, Api, Tenant, load_function

A = "/api/latest"
SCRIPT = "import flow_api\n\ndef handler(system, this, inputs):\n    return this.success('hi')\n"
DOCUMENT: dict[str, Any] = json.loads(openapi.DOCUMENT.read_text())
TEMPLATES = [
    (re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$"), path)
    for path in DOCUMENT["paths"]
]


def _template(path: str) -> str:
    matches = [template for pattern, template in TEMPLATES if pattern.match(path)]
    assert matches, path
    return str(min(matches, key=lambda t: t.count("{")))  # the literal segment wins (as routing does)


class Recording:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int, Any]] = []

    def wrap(self, api: Api) -> Api:
        call = api.call

        def recorded(method: str, path: str, *args: Any, **kwargs: Any) -> Answer:
            answer = call(method, path, *args, **kwargs)
            self.seen.append((method, _template(path), answer.status, answer.body))
            return answer

        api.call = recorded  # type: ignore[method-assign]
        return api


@pytest.fixture
def recording() -> Recording:
    return Recording()


def test_every_status_answered_is_documented(
    api: Api, root_token: str, tenants: tuple[Tenant, Tenant], recording: Recording
) -> None:
    a, b = tenants
    identity = recording.wrap(api)
    flows = recording.wrap(Api(load_function("flows"), "flows"))
    connectors = recording.wrap(Api(load_function("connectors"), "connectors"))
    workflow = recording.wrap(Api(load_function("workflow"), "workflow"))
    ws = f"{A}/workspaces/{a.workspace_id}"

    # identity
    identity.call("GET", f"{A}/health")
    identity.call("POST", f"{A}/auth/login", {"username": "nobody", "password": "wrong"})
    identity.call("GET", f"{A}/auth/me")
    token = identity.call("POST", f"{A}/auth/tokens", {"name": "ci"}, token=a.admin_token).body
    identity.call("DELETE", f"{A}/auth/tokens/{token['id']}", token=a.admin_token)
    identity.call("GET", f"{A}/contracts/{b.contract_id}", token=a.admin_token)
    identity.call("POST", f"{A}/contracts", {"name": "x"}, token=a.member_token)
    identity.call("POST", f"{A}/contracts", {"name": "x\u202e"}, token=root_token)
    identity.call("PATCH", ws, {"name": "renamed"}, token=a.admin_token, headers={"If-Match": "99"})
    identity.call("PATCH", ws, {"name": "renamed"}, token=a.admin_token, headers={"If-Match": "x"})
    identity.call(
        "POST", f"{A}/contracts", raw="name=x", token=root_token, headers={"Content-Type": "text/plain"}
    )
    identity.call("POST", f"{A}/contracts", raw=json.dumps({"name": "x" * 70_000}), token=root_token)
    identity.call("GET", f"{A}/contracts", token=root_token, query={"cursor": "forged"})
    identity.call("GET", f"{A}/contracts", token=root_token, query={"limit": "0"})

    # flows
    flows.call("PUT", f"{ws}/flows/hello", {"script": SCRIPT}, token=a.admin_token)
    flows.call("PUT", f"{ws}/flows/hello", {"script": SCRIPT}, token=a.admin_token)
    flows.call("POST", f"{ws}/executions", {"flow": "hello", "inputs": {"n": 1}}, token=a.admin_token)
    flows.call("POST", f"{ws}/executions", raw='{"flow": "hello", "inputs": {"n": NaN}}', token=a.admin_token)
    flows.call("POST", f"{ws}/flows/hello/activate", token=a.admin_token)
    flows.call("POST", f"{ws}/flows/hello/messages", {"n": 1}, token=a.admin_token)
    flows.call("DELETE", f"{ws}/flows/hello", token=a.admin_token)  # active: 409
    flows.call("POST", f"{ws}/flows/hello/deactivate", token=a.admin_token)
    flows.call("POST", f"{ws}/flows/hello/deactivate", token=a.admin_token)  # not active: 409
    flows.call("DELETE", f"{ws}/flows/hello", token=a.admin_token)
    flows.call("GET", f"{ws}/flows/hello", token=b.admin_token)
    flows.call("GET", f"{ws}/executions", token=a.admin_token, query={"limit": "1"})

    # connectors
    value = json.dumps({"url": "https://api.example.com/v1"})
    connectors.call("PUT", f"{ws}/connectors/api", {"type": "REST", "value": value}, token=a.admin_token)
    connectors.call("PUT", f"{ws}/connectors/api", {"type": "REST", "value": value}, token=a.admin_token)
    connectors.call("POST", f"{ws}/connectors/api/run", {"inputs": {}}, token=a.admin_token)
    connectors.call("PUT", f"{ws}/secrets/key", {"value": {"k": "v"}}, token=a.admin_token)
    connectors.call("DELETE", f"{ws}/secrets/key", token=a.admin_token)
    connectors.call("DELETE", f"{ws}/connectors/api", token=a.admin_token)
    connectors.call("GET", f"{ws}/connectors/api", token=a.admin_token)

    # workflow
    cloud = f"/api/cloud/workspaces/{a.workspace_id}"
    vm = workflow.call(
        "POST", f"{cloud}/virtualmachines", {"name": "web", "cpu": 1, "ram": 512}, token=a.admin_token
    )
    workflow.call("POST", f"{cloud}/virtualmachines/{vm.body['id']}/action/deploy", token=a.admin_token)
    workflow.call("GET", f"{cloud}/virtualmachines", token=a.admin_token)
    workflow.call(
        "GET",
        f"/api/admin/enterprises/{a.contract_id}/action/pendingtasks",
        basic=ADMIN,
        query={"type": "deploy"},
    )
    workflow.call(
        "GET",
        f"/api/admin/enterprises/{a.contract_id}/action/pendingtasks",
        basic=ADMIN,
        query={"since": "-5"},
    )
    workflow.call(
        "POST", "/api/object/task/00000000-0000-0000-0000-000000000000/action/continue", basic=ADMIN
    )
    workflow.call("GET", "/api/config/properties", token=a.member_token)

    statuses = {s for _, _, s, _ in recording.seen}
    assert {200, 201, 202, 204, 400, 401, 403, 404, 409, 412, 413, 415} <= statuses
    for method, template, status, body in recording.seen:
        documented = DOCUMENT["paths"][template][method.lower()]["responses"]
        assert str(status) in documented, (method, template, status, body)
        assert status < 500, (method, template, body)
        if status >= 400:
            assert set(body) == {"error"}, body
            assert set(body["error"]) == {"code", "message"}, body
