"""No input makes a 5xx (issue 9, item 2 and 6; DESIGN §5): what DynamoDB cannot hold, JSON nested past
any parser's stack, out-of-range times, forged cursors and names that are not text are each a 4xx with
its own code, naming the field, and store nothing. Through the real handlers, against moto."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import boto3
import pytest

from tests.handler.conftest import ADMIN, Api, Tenant, load_function

A = "/api/latest"
SCRIPT = "import flow_api\n\ndef handler(system, this, inputs):\n    return this.success('hi')\n"
JSON = {"Content-Type": "application/json"}

# JSON texts of a document at `a.b[2]` that DynamoDB cannot hold, and the code each is refused with.
UNSTORABLE = [
    ('{"a": {"b": [1, 2, 1e400]}}', "unstorable_number", "a.b[2]"),
    ('{"a": {"b": [1, 2, 1.1e-308]}}', "unstorable_number", "a.b[2]"),
    ('{"a": {"b": [1, 2, NaN]}}', "unstorable_number", "a.b[2]"),
    ('{"a": {"b": [1, 2, -Infinity]}}', "unstorable_number", "a.b[2]"),
    ('{"a": {"b": [1, 2, 1234567890123456789012345678901234567890]}}', "unstorable_number", "a.b[2]"),
    ('{"a": {"b": [1, 2, {"": 1}]}}', "empty_key", "a.b[2]"),
    ('{"a": {"b": [1, 2, "\\ud800"]}}', "invalid_text", "body"),  # refused at the edge, before parsing
]
DEEP = "[" * 10_000 + "]" * 10_000


@pytest.fixture
def flows_api(api: Api) -> Api:
    return Api(load_function("flows"), "flows")


@pytest.fixture
def capi(api: Api) -> Api:
    return Api(load_function("connectors"), "connectors")


@pytest.fixture
def wapi(api: Api) -> Api:
    return Api(load_function("workflow"), "workflow")


def _queued(url: str) -> list[dict[str, Any]]:
    raw = boto3.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in raw]


def _refused(answer: Any, code: str, *needles: str) -> None:
    assert 400 <= answer.status < 500, (answer.status, answer.body)
    assert answer.error_code == code, answer.body
    for needle in needles:
        assert needle in answer.body["error"]["message"], answer.body


def _flow(flows_api: Api, t: Tenant, name: str = "hello") -> str:
    path = f"{A}/workspaces/{t.workspace_id}/flows/{name}"
    assert flows_api.call("PUT", path, {"script": SCRIPT}, token=t.admin_token).status == 201
    return path


# ---- JSON nested too deep: refused at the edge, on every function's JSON routes ----------------------


@pytest.mark.parametrize(
    ("function", "method", "path"),
    [
        ("identity", "POST", f"{A}/contracts"),
        ("identity", "POST", f"{A}/auth/login"),
        ("flows", "POST", f"{A}/workspaces/WS/executions"),
        ("flows", "POST", f"{A}/workspaces/WS/flows/hello/messages"),
        ("connectors", "PUT", f"{A}/workspaces/WS/secrets/s"),
        ("workflow", "POST", "/api/cloud/workspaces/WS/virtualmachines"),
        ("workflow", "POST", "/api/object/task/00000000-0000-0000-0000-000000000000/action/continue"),
    ],
)
def test_json_nested_ten_thousand_levels_is_a_400_on_every_function(
    api: Api, tenants: tuple[Tenant, Tenant], function: str, method: str, path: str
) -> None:
    a, _ = tenants
    target = api if function == "identity" else Api(load_function(function), function)
    answer = target.call(
        method, path.replace("WS", a.workspace_id), raw=DEEP, headers=JSON, token=a.admin_token
    )
    _refused(answer, "too_deep", "64 levels")
    # the same without a Content-Type (read as JSON)
    bare = target.call(method, path.replace("WS", a.workspace_id), raw=DEEP, token=a.admin_token)
    _refused(bare, "too_deep")


def test_a_number_too_long_to_convert_is_a_400(api: Api, root_token: str) -> None:
    answer = api.call(
        "POST", f"{A}/contracts", raw='{"name": ' + "9" * 5000 + "}", headers=JSON, token=root_token
    )
    _refused(answer, "unstorable_number")


# ---- documents DynamoDB cannot hold: execution inputs, messages, connector runs -----------------------


@pytest.mark.parametrize(("document", "code", "where"), UNSTORABLE)
def test_execution_inputs_dynamodb_cannot_hold_are_a_400_naming_the_path(
    flows_api: Api, tenants: tuple[Tenant, Tenant], document: str, code: str, where: str
) -> None:
    a, _ = tenants
    _flow(flows_api, a)
    executions = f"{A}/workspaces/{a.workspace_id}/executions"
    raw = '{"flow": "hello", "inputs": ' + document + "}"
    answer = flows_api.call("POST", executions, raw=raw, headers=JSON, token=a.admin_token)
    _refused(answer, code, f"inputs.{where}" if where != "body" else "surrogate")
    # nothing was stored or queued
    assert flows_api.call("GET", executions, token=a.admin_token).body["items"] == []
    assert _queued(os.environ["EXECUTION_QUEUE_URL"]) == []


@pytest.mark.parametrize(("document", "code", "where"), UNSTORABLE)
def test_flow_messages_dynamodb_cannot_hold_are_a_400_naming_the_path(
    flows_api: Api, tenants: tuple[Tenant, Tenant], document: str, code: str, where: str
) -> None:
    a, _ = tenants
    path = _flow(flows_api, a)
    assert flows_api.call("POST", f"{path}/activate", token=a.admin_token).status == 200
    answer = flows_api.call("POST", f"{path}/messages", raw=document, headers=JSON, token=a.admin_token)
    _refused(answer, code, f"body.{where}" if where != "body" else "surrogate")
    assert flows_api.call("GET", f"{path}/messages", token=a.admin_token).body["items"] == []


def test_inputs_nested_deeper_than_a_stored_document_may_be_are_a_400(
    flows_api: Api, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    _flow(flows_api, a)
    executions = f"{A}/workspaces/{a.workspace_id}/executions"
    nested: Any = 1
    for _ in range(30):  # within the edge's 64 levels, past a stored document's 20
        nested = {"x": nested}
    answer = flows_api.call("POST", executions, {"flow": "hello", "inputs": nested}, token=a.admin_token)
    _refused(answer, "too_deep", "inputs.x.x", "20 levels")
    assert flows_api.call("GET", executions, token=a.admin_token).body["items"] == []


def test_connector_runs_vault_secrets_and_connector_values_are_checked(
    capi: Api, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    ws = f"{A}/workspaces/{a.workspace_id}"
    connector = {"type": "REST", "value": json.dumps({"url": "https://api.example.com/v1"})}
    assert capi.call("PUT", f"{ws}/connectors/api", connector, token=a.admin_token).status == 201
    # a run's inputs
    run = capi.call(
        "POST", f"{ws}/connectors/api/run", raw='{"inputs": {"n": 1e400}}', headers=JSON, token=a.admin_token
    )
    _refused(run, "unstorable_number", "inputs.n")
    # a vault secret's value
    secret = capi.call(
        "PUT", f"{ws}/secrets/key", raw='{"value": {"auth": {"": "x"}}}', headers=JSON, token=a.admin_token
    )
    _refused(secret, "empty_key", "value.auth")
    assert capi.call("GET", f"{ws}/secrets", token=a.admin_token).body["items"] == []
    # a connector's value (YAML), once parsed
    for value, code in (
        (
            "url: https://api.example.com\nretries: 1234567890123456789012345678901234567890\n",
            "unstorable_number",
        ),
        ('{"url": "https://api.example.com", "headers": {"": "x"}}', "empty_key"),
    ):
        answer = capi.call(
            "PUT", f"{ws}/connectors/odd", {"type": "REST", "value": value}, token=a.admin_token
        )
        _refused(answer, code, "value.")
        assert capi.call("GET", f"{ws}/connectors/odd", token=a.admin_token).status == 404


# ---- pending tasks: times out of range ------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"since": "2000000000000000"},  # year 65,000 and more
        {"until": "-1"},
        {"since": "1" * 40},
    ],
)
def test_pending_task_times_out_of_range_are_a_400(
    wapi: Api, tenants: tuple[Tenant, Tenant], query: dict[str, str]
) -> None:
    a, _ = tenants
    answer = wapi.call(
        "GET", f"/api/admin/enterprises/{a.contract_id}/action/pendingtasks", basic=ADMIN, query=query
    )
    _refused(answer, "invalid_time", next(iter(query)))


# ---- cursors: sealed, and bound to the listing they page ----------------------------------------------


def _forged(key: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def test_a_forged_cursor_is_a_400(flows_api: Api, tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    for cursor in (
        _forged({"PK": f"WS#{b.workspace_id}", "SK": "FLOW#hello"}),  # another tenant's key, unsealed
        _forged({"PK": {"S": "x"}}),  # type: ignore[dict-item]
        "A" * 200,
    ):
        answer = flows_api.call(
            "GET", f"{A}/workspaces/{a.workspace_id}/flows", token=a.admin_token, query={"cursor": cursor}
        )
        _refused(answer, "invalid_cursor")


def test_a_cursor_outside_base64url_is_refused_by_the_documented_pattern(
    flows_api: Api, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    # ASCII only: a cursor of 2048 four-byte characters is 24 KB once percent-encoded, past the gateway.
    for cursor in ("not-base64-%%%", "\U000f4259" * 2048, "a b"):
        answer = flows_api.call(
            "GET", f"{A}/workspaces/{a.workspace_id}/flows", token=a.admin_token, query={"cursor": cursor}
        )
        _refused(answer, "validation_error", "cursor")


def test_a_cursor_replayed_on_another_listing_is_a_400(
    flows_api: Api, api: Api, root_token: str, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    for n in range(3):
        _flow(flows_api, a, f"f{n}")
        _flow(flows_api, b, f"f{n}")
    page = flows_api.call(
        "GET", f"{A}/workspaces/{a.workspace_id}/flows", token=a.admin_token, query={"limit": "1"}
    ).body
    cursor = page["next"]
    assert cursor
    # the cursor pages its own listing
    following = flows_api.call(
        "GET",
        f"{A}/workspaces/{a.workspace_id}/flows",
        token=a.admin_token,
        query={"limit": "1", "cursor": cursor},
    )
    assert following.status == 200
    assert [f["name"] for f in following.body["items"]] == ["f1"]
    # the cursor says nothing readable about the key it carries
    assert a.workspace_id not in base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("latin-1")
    # and no other listing: another tenant's flows, the same workspace's executions, its members
    for target, path, token in (
        (flows_api, f"{A}/workspaces/{b.workspace_id}/flows", b.admin_token),
        (flows_api, f"{A}/workspaces/{a.workspace_id}/executions", a.admin_token),
        (api, f"{A}/contracts/{a.contract_id}/members", root_token),
    ):
        answer = target.call("GET", path, token=token, query={"cursor": cursor})
        _refused(answer, "invalid_cursor")
    # a cursor with one character changed
    tampered = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    answer = flows_api.call(
        "GET", f"{A}/workspaces/{a.workspace_id}/flows", token=a.admin_token, query={"cursor": tampered}
    )
    _refused(answer, "invalid_cursor")


def test_the_cursor_key_is_read_once_per_container(flows_api: Api, tenants: tuple[Tenant, Tenant]) -> None:
    from flowgate import aws as aws_clients
    from flowgate import db

    a, _ = tenants
    for n in range(3):
        _flow(flows_api, a, f"f{n}")
    # Given a container that has not read the key yet, and a count of the key reads
    db._cursor_cipher.cache_clear()
    reads: list[str] = []
    aws_clients.secretsmanager().meta.events.register(  # the container's one cached client
        "before-parameter-build.secrets-manager.GetSecretValue",
        lambda **kw: reads.append(kw["params"]["SecretId"]),
    )
    # When three pages are listed, each making and the later ones reading a cursor
    cursor = None
    names = []
    for _ in range(3):
        page = flows_api.call(
            "GET",
            f"{A}/workspaces/{a.workspace_id}/flows",
            token=a.admin_token,
            query={"limit": "1", **({"cursor": cursor} if cursor else {})},
        ).body
        names += [f["name"] for f in page["items"]]
        cursor = page["next"]
    # Then the key was read once, from the deployment's secret
    assert names == ["f0", "f1", "f2"]
    assert reads == [os.environ["CURSOR_KEY_SECRET_ID"]]


# ---- names are text -------------------------------------------------------------------------------------

BAD_NAMES = [
    "nul\x00byte",
    "esc\x1b[31mred",
    "two\nlines",
    "tab\there",
    "bidi\u202eoverride",
    "isolate\u2066x\u2069",
    "zero\u200bwidth",
    "bom\ufeff",
    "line\u2028separator",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_display_names_refuse_control_and_formatting_characters(
    api: Api, wapi: Api, root_token: str, tenants: tuple[Tenant, Tenant], name: str
) -> None:
    a, _ = tenants
    workspaces = f"{A}/contracts/{a.contract_id}/workspaces"
    before = api.call("GET", workspaces, token=a.admin_token).body["items"]
    tokens_before = api.call("GET", f"{A}/auth/tokens", token=a.admin_token).body["items"]
    cases = [
        (api, "POST", workspaces, {"name": name}, a.admin_token),
        (api, "PATCH", f"{A}/workspaces/{a.workspace_id}", {"name": name}, a.admin_token),
        (api, "POST", f"{A}/contracts", {"name": name}, root_token),
        (api, "PATCH", f"{A}/contracts/{a.contract_id}", {"name": name}, root_token),
        (api, "POST", f"{A}/auth/tokens", {"name": name}, a.admin_token),
        (
            wapi,
            "POST",
            f"/api/cloud/workspaces/{a.workspace_id}/virtualmachines",
            {"name": name, "cpu": 1, "ram": 512},
            a.admin_token,
        ),
        (
            wapi,
            "POST",
            f"/api/cloud/workspaces/{a.workspace_id}/virtualappliances",
            {"name": name, "virtualmachines": ["vm-1"]},
            a.admin_token,
        ),
    ]
    for target, method, path, body, token in cases:
        answer = target.call(method, path, body, token=token)
        _refused(answer, "invalid_name", "name:")
        assert answer.status == 400
    # nothing was created or renamed
    assert api.call("GET", workspaces, token=a.admin_token).body["items"] == before
    assert api.call("GET", f"{A}/contracts/{a.contract_id}", token=root_token).body["name"] == "contract-a"
    assert api.call("GET", f"{A}/auth/tokens", token=a.admin_token).body["items"] == tokens_before
    vms = wapi.call("GET", f"/api/cloud/workspaces/{a.workspace_id}/virtualmachines", token=a.admin_token)
    assert vms.body["items"] == []


def test_names_in_other_scripts_and_spaces_are_still_text(api: Api, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    for name in ("Équipe données", "チーム", "ops \u2013 east (2)", "  padded  "):
        made = api.call(
            "POST", f"{A}/contracts/{a.contract_id}/workspaces", {"name": name}, token=a.admin_token
        )
        assert made.status == 201, made.body
        assert made.body["name"] == name.strip()


def test_a_lone_surrogate_in_a_name_is_refused_at_the_edge(api: Api, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    answer = api.call(
        "POST",
        f"{A}/contracts/{a.contract_id}/workspaces",
        raw='{"name": "x\\udc00"}',
        headers=JSON,
        token=a.admin_token,
    )
    _refused(answer, "invalid_text")


def test_enterprise_limits_are_bounded(wapi: Api, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    path = f"/api/admin/enterprises/{a.contract_id}"
    answer = wapi.call("PUT", path, {"limits": {"maxCpu": 10**40}}, basic=ADMIN)
    _refused(answer, "validation_error", "limits.maxCpu")
    assert wapi.call("GET", path, basic=ADMIN).body["limits"].get("maxCpu") is None
