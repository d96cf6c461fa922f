"""The connectors function against moto: connectors, write-only vault secrets, connection runs, bad input,
and tenancy on every route (DESIGN §3.0, §3.5, §5)."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import boto3
import pytest

from flowgate.observability import logger
from flowgate.wiring import container
from tests.handler.conftest import Answer, Api, Tenant, load_function

A = "/api/latest"
SECRET = "vault-Only-Val7e-9f3k"
OTHER_SECRET = "second-Vault-Val8e-2z"
GOOD_URL = "https://api.example.com/v1"


@pytest.fixture
def queue_url(aws: str) -> str:
    return os.environ["EXECUTION_QUEUE_URL"]


@pytest.fixture
def capi(api: Api, queue_url: str) -> Api:
    return Api(load_function("connectors"), "connectors")


def _queued(url: str) -> list[dict[str, Any]]:
    raw = boto3.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in raw]


def _no_secret_in(*answers: Answer) -> None:
    for answer in answers:
        text = json.dumps(answer.body) + json.dumps(answer.headers)
        assert SECRET not in text, answer.body
        assert OTHER_SECRET not in text, answer.body


def _ws(t: Tenant) -> str:
    return f"{A}/workspaces/{t.workspace_id}"


def rest_body(url: str = GOOD_URL, secrets: list[str] | None = None, **value: Any) -> dict[str, Any]:
    return {"type": "REST", "value": json.dumps({"url": url, **value}), "secrets": secrets or []}


# ---- connectors: create, replace, read, list, delete -------------------------------------------------------


def test_a_connector_is_created_replaced_read_listed_and_deleted(capi: Api, tenants: tuple[Tenant, Tenant]):
    # Given a workspace with no connectors
    a, _ = tenants
    path = f"{_ws(a)}/connectors/api"
    yaml_text = f"url: {GOOD_URL}\nmethod: POST  # a comment\n"

    # When the connector is created
    first = capi.call(
        "PUT", path, {"type": "rest", "value": yaml_text, "description": "d"}, token=a.admin_token
    )

    # Then it is 201 with its location, version 1, the text as saved and the mapping it holds
    assert first.status == 201, first.body
    assert first.headers["Location"] == path
    assert (first.body["name"], first.body["type"], first.body["version"]) == ("api", "REST", 1)
    assert first.body["value"] == yaml_text
    assert first.body["parsed"] == {"url": GOOD_URL, "method": "POST"}
    assert (first.body["workspace_id"], first.body["created_by"]) == (a.workspace_id, a.admin_id)

    # When it is replaced
    second = capi.call("PUT", path, rest_body(f"{GOOD_URL}/v2"), token=a.admin_token)

    # Then it is 200, keeps its id and counts the version; missing fields take defaults
    assert second.status == 200, second.body
    assert (second.body["id"], second.body["version"]) == (first.body["id"], 2)
    assert second.body["parsed"] == {"url": f"{GOOD_URL}/v2"}
    assert second.body["description"] is None
    assert second.body["created_at"] == first.body["created_at"]

    # And reading and listing show the replaced connector
    read = capi.call("GET", path, token=a.admin_token)
    assert (read.status, read.body) == (200, second.body)
    capi.call("PUT", f"{_ws(a)}/connectors/zeta", rest_body(), token=a.admin_token)
    listed = capi.call("GET", f"{_ws(a)}/connectors", token=a.admin_token)
    assert listed.status == 200
    assert [(c["name"], c["version"]) for c in listed.body["items"]] == [("api", 2), ("zeta", 1)]
    page = capi.call("GET", f"{_ws(a)}/connectors", token=a.admin_token, query={"limit": "1"}).body
    rest = capi.call(
        "GET", f"{_ws(a)}/connectors", token=a.admin_token, query={"limit": "1", "cursor": page["next"]}
    ).body
    assert [c["name"] for c in page["items"] + rest["items"]] == ["api", "zeta"]

    # When it is deleted
    deleted = capi.call("DELETE", path, token=a.admin_token)

    # Then it is gone, and deleting it again is 404
    assert (deleted.status, deleted.body) == (204, None)
    assert capi.call("GET", path, token=a.admin_token).status == 404
    assert capi.call("DELETE", path, token=a.admin_token).status == 404
    names = [c["name"] for c in capi.call("GET", f"{_ws(a)}/connectors", token=a.admin_token).body["items"]]
    assert names == ["zeta"]


def test_an_unknown_connector_is_404_naming_it(capi: Api, tenants):
    a, _ = tenants
    answer = capi.call("GET", f"{_ws(a)}/connectors/missing", token=a.admin_token)
    assert answer.status == 404
    assert "missing" in answer.body["error"]["message"]


# ---- connectors: bad input ---------------------------------------------------------------------------------


def _git(url: str) -> dict[str, Any]:
    return {"type": "GIT", "value": json.dumps({"repository_url": url, "command": "metadata"})}


BAD_CONNECTORS = [
    pytest.param(
        {"type": "REST", "value": "url: [https://x\nmethod: get\n"},
        "invalid_connector_value",
        "not a valid YAML or JSON document",
        id="invalid-yaml",
    ),
    pytest.param(
        {"type": "REST", "value": "- url: https://x\n- method: get\n"},
        "invalid_connector_value",
        "must be a mapping of inputs (key: value), not a list",
        id="yaml-list",
    ),
    pytest.param(
        {"type": "REST", "value": "just some text"},
        "invalid_connector_value",
        "must be a mapping of inputs (key: value), not a string",
        id="yaml-scalar",
    ),
    pytest.param(
        {"type": "REST", "value": "42"},
        "invalid_connector_value",
        "not a number",
        id="yaml-number",
    ),
    pytest.param(
        {"type": "SOAP", "value": "{}"},
        "unknown_connector_type",
        "unknown connector type 'SOAP'; known types are GIT, REST",
        id="unknown-type",
    ),
    pytest.param(
        {"type": "REST", "value": f"url: {GOOD_URL}\ntimeout: soon\n"},
        "invalid_connector_value",
        "value.timeout:",
        id="wrong-field-type",
    ),
    pytest.param(
        {"type": "REST", "value": f"url: {GOOD_URL}\nverb: get\n"},
        "invalid_connector_value",
        "value.verb: unknown input; the REST connector takes url, method",
        id="unknown-input",
    ),
    pytest.param(
        {"type": "REST", "value": "{}", "owner": "someone-else"},
        "validation_error",
        "owner: unknown field",
        id="unknown-body-field",
    ),
    pytest.param(
        {"type": "REST", "value": {"url": GOOD_URL}},
        "validation_error",
        "value",
        id="value-not-a-string",
    ),
    pytest.param(
        {"type": "REST", "value": "{}", "secrets": "api-key"},
        "validation_error",
        "secrets",
        id="secrets-not-a-list",
    ),
    pytest.param({"value": "{}"}, "validation_error", "type", id="type-missing"),
    pytest.param(
        {"type": "REST", "value": "url: http://169.254.169.254/latest/meta-data/iam/\n"},
        "url_not_allowed",
        "value.url:",
        id="rest-metadata-address",
    ),
    pytest.param(
        {"type": "REST", "value": "url: http://[fd00:ec2::254]/latest/meta-data/\n"},
        "url_not_allowed",
        "value.url:",
        id="rest-metadata-address-v6",
    ),
    pytest.param(
        _git("ext::sh -c touch% /tmp/pwned"),
        "invalid_connector_value",
        "value.repository_url: Value error, remote helpers (such as ext::) are not allowed",
        id="git-ext-helper",
    ),
    pytest.param(
        _git("--upload-pack=touch /tmp/pwned"),
        "invalid_connector_value",
        "value.repository_url: Value error, must not begin with '-'",
        id="git-leading-dash",
    ),
    pytest.param(
        {"type": "REST", "value": "{}", "secrets": ["does-not-exist"]},
        "unknown_secret",
        "secrets: no vault secret 'does-not-exist' in this workspace",
        id="unknown-secret",
    ),
]


def test_bad_connectors_are_a_clear_400_and_store_nothing(capi: Api, tenants, subtests: pytest.Subtests):
    # Given a workspace with one good connector
    a, _ = tenants
    good = capi.call("PUT", f"{_ws(a)}/connectors/good", rest_body(), token=a.admin_token)
    assert good.status == 201

    for case in BAD_CONNECTORS:
        body, code, needle = case.values
        with subtests.test(case=case.id):
            # When a bad connector is PUT, as a new one and as a replacement of the good one
            created = capi.call("PUT", f"{_ws(a)}/connectors/bad", body, token=a.admin_token)
            replaced = capi.call("PUT", f"{_ws(a)}/connectors/good", body, token=a.admin_token)

            # Then each is a 400 naming the problem
            for answer in (created, replaced):
                assert answer.status == 400, answer.body
                assert answer.error_code == code
                assert needle in answer.body["error"]["message"]
            # And nothing was stored or changed
            assert capi.call("GET", f"{_ws(a)}/connectors/bad", token=a.admin_token).status == 404
            assert capi.call("GET", f"{_ws(a)}/connectors/good", token=a.admin_token).body == good.body


def test_connector_and_secret_names_are_checked(capi: Api, tenants, subtests: pytest.Subtests):
    a, _ = tenants
    for name in ("with space", "x" * 129, "ünïcode", "semi;colon"):
        with subtests.test(name=name):
            put = capi.call("PUT", f"{_ws(a)}/connectors/{name}", rest_body(), token=a.admin_token)
            assert put.status == 400, put.body
            assert "name" in put.body["error"]["message"]
            secret = capi.call("PUT", f"{_ws(a)}/secrets/{name}", {"value": {"k": "v"}}, token=a.admin_token)
            assert secret.status == 400, secret.body
    assert capi.call("GET", f"{_ws(a)}/connectors", token=a.admin_token).body["items"] == []
    assert capi.call("GET", f"{_ws(a)}/secrets", token=a.admin_token).body["items"] == []


def test_dot_segment_names_are_refused(capi: Api, tenants):
    # Given a workspace
    a, _ = tenants
    # When a connector named '..' is PUT
    answer = capi.call("PUT", f"{_ws(a)}/connectors/..", rest_body(), token=a.admin_token)
    # Then it is refused, and nothing is stored
    assert answer.status == 400, answer.body
    assert capi.call("GET", f"{_ws(a)}/connectors", token=a.admin_token).body["items"] == []


# ---- vault secrets -----------------------------------------------------------------------------------------


def test_secret_values_are_write_only_and_a_secret_in_use_cannot_be_deleted(capi: Api, tenants):
    # Given a secret and a connector that lists it
    a, _ = tenants
    ws = _ws(a)
    answers: list[Answer] = []

    def call(method: str, path: str, body: Any = None, **kw: Any) -> Answer:
        answer = capi.call(method, path, body, token=a.admin_token, **kw)
        answers.append(answer)
        return answer

    put = call("PUT", f"{ws}/secrets/api-cred", {"value": {"password": SECRET, "username": "svc"}})
    assert put.status in (200, 201), put.body
    assert (put.body["name"], put.body["keys"], put.body["version"]) == (
        "api-cred",
        ["password", "username"],
        1,
    )
    again = call("PUT", f"{ws}/secrets/api-cred", {"value": {"password": OTHER_SECRET, "username": "svc"}})
    assert (again.status, again.body["version"]) == (200, 2)
    call("PUT", f"{ws}/secrets/spare", {"value": {"token": OTHER_SECRET}})
    made = call("PUT", f"{ws}/connectors/api", rest_body(secrets=["api-cred"]))
    assert made.status == 201, made.body
    assert made.body["secrets"] == ["api-cred"]

    # When the secrets are listed
    listed = call("GET", f"{ws}/secrets")

    # Then they show key names and users only
    assert listed.status == 200
    assert [(s["name"], s["keys"], s["used_by"]) for s in listed.body["items"]] == [
        ("api-cred", ["password", "username"], ["api"]),
        ("spare", ["token"], []),
    ]
    assert {k for s in listed.body["items"] for k in s} == {
        "name",
        "keys",
        "version",
        "created_at",
        "updated_at",
        "used_by",
    }

    # When the secret a connector uses is deleted
    refused = call("DELETE", f"{ws}/secrets/api-cred")

    # Then it is 409 naming the connector, and the secret is still there
    assert refused.status == 409
    assert refused.error_code == "secret_in_use"
    assert "'api'" in refused.body["error"]["message"]
    assert [s["name"] for s in call("GET", f"{ws}/secrets").body["items"]] == ["api-cred", "spare"]

    # And once no connector lists it, it can be deleted
    assert call("PUT", f"{ws}/connectors/api", rest_body()).status == 200
    assert call("DELETE", f"{ws}/secrets/api-cred").status == 204
    assert call("DELETE", f"{ws}/secrets/api-cred").status == 404
    assert [s["name"] for s in call("GET", f"{ws}/secrets").body["items"]] == ["spare"]
    call("GET", f"{ws}/connectors/api")
    call("GET", f"{ws}/connectors")
    call("POST", f"{ws}/connectors/api/run", {"inputs": {}})
    # Then no answer of any route ever held a secret value
    _no_secret_in(*answers)


def test_secret_values_stay_out_of_debug_logs(capi: Api, tenants, caplog: pytest.LogCaptureFixture):
    # Given the function's most verbose logging: ours at LogLevel=DEBUG, powertools' own debug lines on
    a, _ = tenants
    caplog.set_level(logging.DEBUG, logger="aws_lambda_powertools")
    caplog.set_level(logging.DEBUG, logger=logger.name)

    # When a secret is PUT
    answer = capi.call("PUT", f"{_ws(a)}/secrets/cred", {"value": {"password": SECRET}}, token=a.admin_token)

    # Then its value is in no log line, as the function writes them
    assert answer.status in (200, 201)
    logs = "\n".join(logger.registered_formatter.format(record) for record in caplog.records)
    assert "Calling API Route Handler" in logs  # the debug lines were captured
    assert SECRET not in logs


BAD_SECRETS = [
    ({"value": {}}, 400, "at least one key"),
    ({"value": "a-string"}, 400, "value"),
    ({"value": {"": "x"}}, 400, "keys must not be empty"),
    ({"value": {"k": "v"}, "name": "other"}, 400, "name: unknown field"),
    ({}, 400, "value"),
    ({"value": {"k": "x" * 70_000}}, 413, "at most 65536"),
]


def test_bad_secrets_are_refused_and_store_nothing(capi: Api, tenants, subtests: pytest.Subtests):
    a, _ = tenants
    for i, (body, status, needle) in enumerate(BAD_SECRETS):
        with subtests.test(case=i):
            answer = capi.call("PUT", f"{_ws(a)}/secrets/s", body, token=a.admin_token)
            assert answer.status == status, answer.body
            assert needle in answer.body["error"]["message"]
            assert capi.call("GET", f"{_ws(a)}/secrets", token=a.admin_token).body["items"] == []


# ---- connection runs ---------------------------------------------------------------------------------------


def test_running_a_connector_queues_one_pending_connection_execution(capi: Api, tenants, queue_url: str):
    # Given a connector
    a, _ = tenants
    capi.call("PUT", f"{_ws(a)}/connectors/api", rest_body(), token=a.admin_token)

    # When it is run with inputs
    answer = capi.call(
        "POST", f"{_ws(a)}/connectors/api/run", {"inputs": {"method": "post"}}, token=a.admin_token
    )

    # Then a pending connection execution is answered with 202 and its location
    assert answer.status == 202, answer.body
    body = answer.body
    assert (body["type"], body["status"], body["connector"], body["connector_type"]) == (
        "connection",
        "pending",
        "api",
        "REST",
    )
    assert (body["inputs"], body["input_sources"]) == ({"method": "post"}, {"method": "call"})
    assert (body["workspace_id"], body["started_by"], body["parent"]) == (a.workspace_id, a.admin_id, None)
    assert answer.headers["Location"] == f"{_ws(a)}/executions/{body['id']}"
    # And exactly one message names it on the execution queue
    assert _queued(queue_url) == [{"version": 1, "execution_id": body["id"], "workspace_id": a.workspace_id}]


def test_a_run_that_cannot_start_queues_nothing(
    capi: Api, tenants, queue_url: str, subtests: pytest.Subtests
):
    # Given a connector
    a, _ = tenants
    capi.call("PUT", f"{_ws(a)}/connectors/api", rest_body(), token=a.admin_token)
    flows_api = Api(load_function("flows"), "flows")
    cases = [
        ("missing", {"inputs": {}}, 404, "connector 'missing' not found"),
        ("api", {"inputs": ["not", "a", "mapping"]}, 400, "inputs"),
        ("api", {"inputs": {}, "status": "success"}, 400, "status: unknown field"),
        ("api", {"inputs": {"x": 1}, "connector": "other"}, 400, "connector: unknown field"),
    ]
    for name, body, status, needle in cases:
        with subtests.test(name=name, body=body):
            # When a run is asked for an unknown connector or with a bad body
            answer = capi.call("POST", f"{_ws(a)}/connectors/{name}/run", body, token=a.admin_token)
            # Then it is refused, and no execution is made or queued
            assert answer.status == status, answer.body
            assert needle in answer.body["error"]["message"]
            assert _queued(queue_url) == []
            assert flows_api.call("GET", f"{_ws(a)}/executions", token=a.admin_token).body["items"] == []


# ---- tenancy: every route ----------------------------------------------------------------------------------


def _routes(t: Tenant) -> list[tuple[str, str, Any]]:
    ws = _ws(t)
    return [
        ("PUT", f"{ws}/connectors/api", rest_body(f"{GOOD_URL}/hijacked")),
        ("PUT", f"{ws}/connectors/planted", rest_body()),
        ("GET", f"{ws}/connectors/api", None),
        ("GET", f"{ws}/connectors", None),
        ("DELETE", f"{ws}/connectors/api", None),
        ("POST", f"{ws}/connectors/api/run", {"inputs": {}}),
        ("POST", f"{ws}/connectors/missing/run", {"inputs": {}}),
        ("PUT", f"{ws}/secrets/cred", {"value": {"password": "overwritten"}}),
        ("PUT", f"{ws}/secrets/planted", {"value": {"k": "v"}}),
        ("GET", f"{ws}/secrets", None),
        ("DELETE", f"{ws}/secrets/cred", None),
        ("DELETE", f"{ws}/secrets/spare", None),
    ]


@pytest.fixture
def stocked(capi: Api, tenants: tuple[Tenant, Tenant]) -> dict[str, Any]:
    """Tenant A's workspace with a secret in use, a spare secret and a connector; what it looks like."""
    a, _ = tenants
    ws = _ws(a)
    assert capi.call("PUT", f"{ws}/secrets/cred", {"value": {"password": SECRET}}, token=a.admin_token).status
    capi.call("PUT", f"{ws}/secrets/spare", {"value": {"token": OTHER_SECRET}}, token=a.admin_token)
    made = capi.call("PUT", f"{ws}/connectors/api", rest_body(secrets=["cred"]), token=a.admin_token)
    assert made.status == 201
    return _snapshot(capi, a)


def _snapshot(capi: Api, t: Tenant) -> dict[str, Any]:
    ws = _ws(t)
    return {
        "connectors": capi.call("GET", f"{ws}/connectors", token=t.admin_token).body,
        "secrets": capi.call("GET", f"{ws}/secrets", token=t.admin_token).body,
        "vault": {n: container().connectors.vault.get(t.workspace_id, n) for n in ("cred", "spare")},
    }


def test_another_contract_gets_404_on_every_route_and_changes_nothing(
    capi: Api, tenants, stocked: dict[str, Any], queue_url: str
):
    # Given tenant A's stocked workspace
    a, b = tenants

    # When both users of another contract try every route on it
    for method, path, body in _routes(a):
        for token in (b.admin_token, b.member_token):
            answer = capi.call(method, path, body, token=token)
            # Then each is a 404 that holds no secret
            assert answer.status == 404, (method, path, answer.body)
            _no_secret_in(answer)

    # And nothing changed, nothing was queued
    assert _snapshot(capi, a) == stocked
    assert _queued(queue_url) == []


def test_a_member_without_access_to_the_workspace_gets_403_and_changes_nothing(
    capi: Api, tenants, stocked: dict[str, Any], queue_url: str
):
    # Given a member of A's contract who was given no access to A's workspace
    a, _ = tenants

    # When they try every route on it
    for method, path, body in _routes(a):
        answer = capi.call(method, path, body, token=a.member_token)
        # Then each is a 403
        assert answer.status == 403, (method, path, answer.body)
        _no_secret_in(answer)

    # And nothing changed, nothing was queued
    assert _snapshot(capi, a) == stocked
    assert _queued(queue_url) == []


def test_a_connector_cannot_list_a_secret_of_another_workspace(capi: Api, tenants):
    # Given a secret in B's workspace
    a, b = tenants
    capi.call("PUT", f"{_ws(b)}/secrets/b-cred", {"value": {"password": SECRET}}, token=b.admin_token)

    # When A saves a connector that lists it
    answer = capi.call("PUT", f"{_ws(a)}/connectors/api", rest_body(secrets=["b-cred"]), token=a.admin_token)

    # Then it is not found in A's workspace
    assert (answer.status, answer.error_code) == (400, "unknown_secret")
    assert capi.call("GET", f"{_ws(a)}/connectors/api", token=a.admin_token).status == 404
