"""Run-time variables through the connectors function against moto: the variables' routes, a connector
whose value names variables (checked at save, substituted per workspace at run), bad input, and tenancy
on every route (DESIGN §3.0, §5)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from flowgate import wiring
from flowgate.variables.rules import BUILTINS
from flowgate.wiring import container
from tests.handler.conftest import Answer, Api, Tenant, load_function
from tests.unit.test_connectors_rest import serve_echo

A = "/api/latest"


@pytest.fixture
def capi(api: Api, aws: str) -> Api:
    assert os.environ["EXECUTION_QUEUE_URL"]
    return Api(load_function("connectors"), "connectors")


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    with serve_echo() as url:
        yield url


def _ws(t: Tenant) -> str:
    return f"{A}/workspaces/{t.workspace_id}"


def _put(capi: Api, t: Tenant, name: str, value: str, **extra: Any) -> Answer:
    return capi.call("PUT", f"{_ws(t)}/variables/{name}", {"value": value, **extra}, token=t.admin_token)


def rest_body(value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "REST", "value": json.dumps(value)}


# ---- the variables' routes ---------------------------------------------------------------------------------


def test_a_variable_is_created_replaced_read_listed_and_deleted(capi: Api, tenants: tuple[Tenant, Tenant]):
    # Given a workspace without variables
    a, _ = tenants
    path = f"{_ws(a)}/variables/API_HOST"

    # When a variable is created
    first = _put(capi, a, "API_HOST", "api.example.com", description="the API's host")

    # Then it is 201 with its location and version 1
    assert first.status == 201, first.body
    assert first.headers["Location"] == path
    assert {k: first.body[k] for k in ("name", "value", "description", "version", "updated_by")} == {
        "name": "API_HOST",
        "value": "api.example.com",
        "description": "the API's host",
        "version": 1,
        "updated_by": a.admin_id,
    }

    # When the same is PUT again, it is 200 and no new version
    same = _put(capi, a, "API_HOST", "api.example.com", description="the API's host")
    assert (same.status, same.body) == (200, first.body)

    # When it is replaced, it is 200 with the next version; a missing description is gone
    second = _put(capi, a, "API_HOST", "api2.example.com")
    assert second.status == 200, second.body
    assert (second.body["value"], second.body["version"], second.body["description"]) == (
        "api2.example.com",
        2,
        None,
    )
    assert second.body["created_at"] == first.body["created_at"]

    # And reading and listing (paged) show it; a name with periods is a name
    assert capi.call("GET", path, token=a.admin_token).body == second.body
    assert _put(capi, a, "CONNECTION.LOCAL_IP", "10.0.0.1").status == 201
    assert _put(capi, a, "_z", "").status == 201  # an empty value is a value
    listed = capi.call("GET", f"{_ws(a)}/variables", token=a.admin_token)
    assert listed.status == 200
    assert [(v["name"], v["value"]) for v in listed.body["items"]] == [
        ("API_HOST", "api2.example.com"),
        ("CONNECTION.LOCAL_IP", "10.0.0.1"),
        ("_z", ""),
    ]
    names: list[str] = []
    cursor: str | None = None
    while True:
        query = {"limit": "1", **({"cursor": cursor} if cursor else {})}
        page = capi.call("GET", f"{_ws(a)}/variables", token=a.admin_token, query=query).body
        names += [v["name"] for v in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert names == ["API_HOST", "CONNECTION.LOCAL_IP", "_z"]

    # When it is deleted, it is 204 and gone; again is 404
    assert capi.call("DELETE", path, token=a.admin_token).status == 204
    assert capi.call("GET", path, token=a.admin_token).status == 404
    assert capi.call("DELETE", path, token=a.admin_token).status == 404
    remaining = capi.call("GET", f"{_ws(a)}/variables", token=a.admin_token).body["items"]
    assert [v["name"] for v in remaining] == ["CONNECTION.LOCAL_IP", "_z"]


BAD_NAMES = [
    "9lives",
    "dash-ed",
    "with space",
    "x" * 129,
    "ünï",
    ".dot",
    "WORKSPACE_ID",
    "EXECUTION_ID",
    "workspace_name",
]


def test_bad_names_are_400_invalid_name_and_store_nothing(capi: Api, tenants, subtests: pytest.Subtests):
    a, _ = tenants
    for name in BAD_NAMES:
        with subtests.test(name=name):
            answer = _put(capi, a, name, "v")
            assert (answer.status, answer.error_code) == (400, "invalid_name"), answer.body
            # reading or deleting one: a 400 when it cannot be a name, a 404 for a built-in's
            expected = 404 if name.upper() in BUILTINS else 400
            assert capi.call("GET", f"{_ws(a)}/variables/{name}", token=a.admin_token).status == expected
            assert capi.call("DELETE", f"{_ws(a)}/variables/{name}", token=a.admin_token).status == expected
    assert "built-in" in _put(capi, a, "WORKSPACE_NAME", "v").body["error"]["message"]
    assert capi.call("GET", f"{_ws(a)}/variables", token=a.admin_token).body["items"] == []


BAD_BODIES = [
    pytest.param({"value": "v", "secret": True}, "secret: unknown field", id="unknown-field"),
    pytest.param({"value": "x" * 4097}, "value", id="value-too-long"),
    pytest.param({"value": "v", "description": "d" * 1025}, "description", id="description-too-long"),
    pytest.param({"value": 42}, "value", id="value-not-a-string"),
    pytest.param({"value": ["a"]}, "value", id="value-a-list"),
    pytest.param({}, "value", id="value-missing"),
    pytest.param({"value": None}, "value", id="value-null"),
]


def test_bad_bodies_are_a_4xx_and_store_nothing(capi: Api, tenants, subtests: pytest.Subtests):
    a, _ = tenants
    for case in BAD_BODIES:
        body, needle = case.values
        with subtests.test(case=case.id):
            answer = capi.call("PUT", f"{_ws(a)}/variables/V", body, token=a.admin_token)
            assert 400 <= answer.status < 500, answer.body
            assert needle in answer.body["error"]["message"]
    not_json = capi.call(
        "PUT",
        f"{_ws(a)}/variables/V",
        token=a.admin_token,
        raw="{not json",
        headers={"Content-Type": "application/json"},
    )
    assert 400 <= not_json.status < 500
    forged = capi.call("GET", f"{_ws(a)}/variables", token=a.admin_token, query={"cursor": "forged"})
    assert (forged.status, forged.error_code) == (400, "invalid_cursor")
    assert capi.call("GET", f"{_ws(a)}/variables", token=a.admin_token).body["items"] == []


# ---- connectors naming variables ---------------------------------------------------------------------------


def test_a_connector_naming_an_unknown_variable_is_400_naming_field_and_variable(capi: Api, tenants):
    # Given API_HOST defined in B's workspace only
    a, b = tenants
    _put(capi, b, "API_HOST", "api.example.com")
    body = rest_body({"url": "https://%API_HOST%/v1", "headers": {"X-Env": "%ENV% (%WORKSPACE_NAME%)"}})

    # When A saves a connector naming it (and ENV, which no one defines)
    answer = capi.call("PUT", f"{_ws(a)}/connectors/api", body, token=a.admin_token)

    # Then it is a 400 naming each field and variable, and nothing is stored
    assert (answer.status, answer.error_code) == (400, "unknown_variable"), answer.body
    assert answer.body["error"]["message"] == (
        "value.url names the run-time variable %API_HOST%, which workspace 'ws-a' does not define; "
        "value.headers.X-Env names the run-time variable %ENV%, which workspace 'ws-a' does not define"
    )
    assert capi.call("GET", f"{_ws(a)}/connectors/api", token=a.admin_token).status == 404

    # And once A defines them, the same connector is saved as written
    _put(capi, a, "API_HOST", "api.example.com")
    _put(capi, a, "ENV", "qa")
    saved = capi.call("PUT", f"{_ws(a)}/connectors/api", body, token=a.admin_token)
    assert saved.status == 201, saved.body
    assert saved.body["parsed"]["url"] == "https://%API_HOST%/v1"


def test_a_variable_is_substituted_before_the_value_is_validated(capi: Api, tenants):
    a, _ = tenants
    _put(capi, a, "META", "169.254.169.254")
    answer = capi.call(
        "PUT", f"{_ws(a)}/connectors/m", rest_body({"url": "http://%META%/"}), token=a.admin_token
    )
    assert (answer.status, answer.error_code) == (400, "url_not_allowed"), answer.body


@pytest.fixture
def local_runs(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Connector runs may reach 127.0.0.1 (a new container reads the allow-list)."""
    monkeypatch.setenv("OUTBOUND_ALLOW_LIST", "127.0.0.0/8,::1")
    wiring.install(None)


def _run(capi: Api, t: Tenant, name: str) -> dict[str, Any]:
    queued = capi.call("POST", f"{_ws(t)}/connectors/{name}/run", {"inputs": {}}, token=t.admin_token)
    assert queued.status == 202, queued.body
    container().runner.handle(queued.body["id"])
    flows_api = Api(load_function("flows"), "flows")
    ended = flows_api.call("GET", f"{_ws(t)}/executions/{queued.body['id']}", token=t.admin_token)
    assert ended.status == 200, ended.body
    return dict(ended.body)


def test_a_connector_run_resolves_variables_per_workspace(capi: Api, tenants, echo: str, local_runs: None):
    # Given one connector value in two workspaces whose API_HOST differ
    port = echo.rsplit(":", 1)[1]
    a, b = tenants
    value = {
        "url": "http://%API_HOST%/echo",
        "params": {"ws": "%WORKSPACE_ID%", "name": "%WORKSPACE_NAME%"},
    }
    for t, host in ((a, f"127.0.0.1:{port}"), (b, f"localhost:{port}")):
        assert _put(capi, t, "API_HOST", host).status == 201
        made = capi.call("PUT", f"{_ws(t)}/connectors/api", rest_body(value), token=t.admin_token)
        assert made.status == 201, made.body

    # When each runs
    ran = {t.workspace_id: _run(capi, t, "api") for t in (a, b)}

    # Then each called its own host, with its own built-ins, and recorded the substituted inputs
    for t, host, name in ((a, "127.0.0.1", "ws-a"), (b, "localhost", "ws-b")):
        execution = ran[t.workspace_id]
        assert execution["status"] == "success", execution["message"]
        assert execution["inputs"]["url"] == f"http://{host}:{port}/echo"
        assert execution["outputs"]["body"]["headers"]["Host"] == f"{host}:{port}"
        assert execution["outputs"]["body"]["args"] == {"ws": t.workspace_id, "name": name}
        # and the connector is stored as written
        stored = capi.call("GET", f"{_ws(t)}/connectors/api", token=t.admin_token).body
        assert stored["parsed"] == value

    # When A's variable changes, A's next run follows it; when it is deleted, the run fails clearly
    _put(capi, a, "API_HOST", f"localhost:{port}")
    changed = _run(capi, a, "api")
    assert (changed["status"], changed["inputs"]["url"]) == ("success", f"http://localhost:{port}/echo")
    assert capi.call("DELETE", f"{_ws(a)}/variables/API_HOST", token=a.admin_token).status == 204
    failed = _run(capi, a, "api")
    assert failed["status"] == "error"
    assert failed["message"] == (
        "value.url names the run-time variable %API_HOST%, which workspace 'ws-a' does not define"
    )
    assert _run(capi, b, "api")["status"] == "success"  # B's is untouched


def test_built_ins_pass_the_check_and_cannot_be_defined(capi: Api, tenants):
    a, _ = tenants
    body = rest_body({"url": "https://api.example.com/%WORKSPACE_ID%/%WORKSPACE_NAME%/%EXECUTION_ID%"})
    assert capi.call("PUT", f"{_ws(a)}/connectors/api", body, token=a.admin_token).status == 201
    for name in ("WORKSPACE_ID", "WORKSPACE_NAME", "EXECUTION_ID"):
        assert _put(capi, a, name, "x").error_code == "invalid_name"


# ---- tenancy: every route ----------------------------------------------------------------------------------


def _routes(t: Tenant) -> list[tuple[str, str, Any]]:
    ws = _ws(t)
    return [
        ("PUT", f"{ws}/variables/API_HOST", {"value": "hijacked.example.com"}),
        ("PUT", f"{ws}/variables/PLANTED", {"value": "x"}),
        ("GET", f"{ws}/variables/API_HOST", None),
        ("GET", f"{ws}/variables/MISSING", None),
        ("GET", f"{ws}/variables", None),
        ("DELETE", f"{ws}/variables/API_HOST", None),
    ]


@pytest.fixture
def stocked(capi: Api, tenants: tuple[Tenant, Tenant]) -> Any:
    a, _ = tenants
    assert _put(capi, a, "API_HOST", "api.example.com").status == 201
    return capi.call("GET", f"{_ws(a)}/variables", token=a.admin_token).body


def test_another_contract_gets_404_on_every_route_and_changes_nothing(capi: Api, tenants, stocked: Any):
    a, b = tenants
    for method, path, body in _routes(a):
        for token in (b.admin_token, b.member_token):
            answer = capi.call(method, path, body, token=token)
            assert answer.status == 404, (method, path, answer.body)
            assert "api.example.com" not in json.dumps(answer.body)
    assert capi.call("GET", f"{_ws(a)}/variables", token=a.admin_token).body == stocked
    assert capi.call("GET", f"{_ws(b)}/variables", token=b.admin_token).body["items"] == []


def test_a_member_without_access_to_the_workspace_gets_403_and_changes_nothing(
    capi: Api, tenants, stocked: Any
):
    a, _ = tenants
    for method, path, body in _routes(a):
        answer = capi.call(method, path, body, token=a.member_token)
        assert answer.status == 403, (method, path, answer.body)
        assert "api.example.com" not in json.dumps(answer.body)
    assert capi.call("GET", f"{_ws(a)}/variables", token=a.admin_token).body == stocked


def test_without_a_token_every_route_is_401(capi: Api, tenants, stocked: Any):
    a, _ = tenants
    for method, path, body in _routes(a):
        assert capi.call(method, path, body).status == 401, (method, path)


def test_a_run_knows_its_own_execution_id(capi: Api, tenants, echo: str, local_runs: None):
    """%EXECUTION_ID% is the id of the connection execution the runner runs."""
    a, _ = tenants
    value = {"url": f"{echo}/echo", "method": "get", "params": {"run": "%EXECUTION_ID%"}}
    assert capi.call("PUT", f"{_ws(a)}/connectors/api", rest_body(value), token=a.admin_token).status == 201
    execution = _run(capi, a, "api")
    assert execution["status"] == "success", execution["message"]
    assert execution["outputs"]["body"]["args"] == {"run": execution["id"]}
