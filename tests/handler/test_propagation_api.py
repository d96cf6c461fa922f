"""The propagation function against moto: EFT-style admin login, sites, custom commands with
create-or-replace PUT, tenancy and roles, bad input, and the JSON-RPC `propagate` call (the target is
this same deployment, reached through the handler in-process, so both sides' effects are visible)."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from typing import Any

import pytest

from flowgate.propagation.client import Answer, TargetClient
from flowgate.url_guard import OutboundPolicy
from flowgate.wiring import container
from tests.handler.conftest import Api, Tenant, load_function

CMD_ID = "00000000-0000-0000-0000-000000000001"
SCRIPT = "import flow_api\n\ndef handler(system, this, inputs):\n    return this.success('hi')\n"


@pytest.fixture
def eft(api: Api) -> Api:
    return Api(load_function("propagation"), "propagation")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"EFTAdminAuthToken {token}", "Content-Type": "application/vnd.api+json"}


def _eft_login(eft: Api, username: str, password: str, content_type: str | None = None) -> Any:
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps({"userName": username, "password": password, "authType": "EFT"})
    return eft.call("POST", "/admin/v1/authentication", headers=headers, raw=body)


def _command(name: str, **attributes: Any) -> dict[str, Any]:
    return {"data": {"type": "customCommand", "attributes": {"name": name, **attributes}}}


def test_login_without_a_json_content_type_and_token_use(eft: Api, tenants: tuple[Tenant, Tenant]):
    for content_type in (None, "application/x-www-form-urlencoded", "text/plain"):
        answer = _eft_login(eft, "admin-a", "admin-a-password", content_type)
        assert answer.status == 200, answer.body
        assert set(answer.body) == {"authToken", "permissions"}
        assert answer.body["permissions"][0]["policy"]
    token = answer.body["authToken"]
    session = eft.call("GET", "/admin/v2/authentication", headers=_auth(token))
    assert (session.status, session.body["data"]["username"]) == (200, "admin-a")
    assert eft.call("HEAD", "/admin/v2/keep-alive", headers=_auth(token)).status == 200
    assert eft.call("POST", "/admin/v2/logout", headers=_auth(token)).status == 200
    assert eft.call("GET", "/admin/v2/sites", headers=_auth(token)).status == 401


def test_bad_logins_are_401_and_bad_bodies_400(eft: Api, tenants: tuple[Tenant, Tenant]):
    assert _eft_login(eft, "admin-a", "wrong").status == 401
    assert _eft_login(eft, "nobody", "wrong").status == 401
    assert eft.call("POST", "/admin/v1/authentication", raw="{not json").status == 400
    assert eft.call("POST", "/admin/v1/authentication", raw='{"userName": "x"}').status == 400
    assert eft.call("GET", "/admin/v2/sites").status == 401
    assert eft.call("GET", "/admin/v2/sites", headers=_auth("fgt_nonsense")).status == 401


def test_api_tokens_and_basic_are_not_admin_sessions(eft: Api, api: Api, tenants: tuple[Tenant, Tenant]):
    a, _ = tenants
    issued = api.call("POST", "/api/latest/auth/tokens", {"name": "machine"}, token=a.admin_token)
    assert issued.status == 201, issued.body
    assert eft.call("GET", "/admin/v2/sites", headers=_auth(issued.body["token"])).status == 401
    basic = "Basic " + base64.b64encode(b"admin-a:admin-a-password").decode()
    assert eft.call("GET", "/admin/v2/sites", headers={"Authorization": basic}).status == 401


def test_sites_are_the_contracts_workspaces_for_org_admins_only(eft: Api, tenants: tuple[Tenant, Tenant]):
    a, b = tenants
    listed = eft.call("GET", "/admin/v2/sites", headers=_auth(a.admin_token))
    assert listed.status == 200
    assert listed.headers["Content-Type"].startswith("application/vnd.api+json")
    assert [(s["type"], s["id"], s["attributes"]["name"]) for s in listed.body["data"]] == [
        ("site", a.workspace_id, "ws-a")
    ]
    assert eft.call("GET", f"/Admin/v2/sites/{a.workspace_id}", headers=_auth(a.admin_token)).status == 200
    assert eft.call("GET", f"/admin/v2/sites/{b.workspace_id}", headers=_auth(a.admin_token)).status == 404
    assert eft.call("GET", "/admin/v2/sites", headers=_auth(a.member_token)).status == 403
    assert eft.call(
        "GET", f"/admin/v2/sites/{a.workspace_id}/custom-commands", headers=_auth(a.member_token)
    ).status in (403, 404)


def test_custom_commands_crud_and_create_or_replace(eft: Api, tenants: tuple[Tenant, Tenant]):
    a, b = tenants
    base = f"/Admin/v2/sites/{a.workspace_id}/custom-commands"
    h = _auth(a.admin_token)
    made = eft.call(
        "POST",
        base,
        headers=h,
        raw=json.dumps(
            _command("backup", executable="/bin/backup", processTimeOut=30, useProcessTimeOut=True)
        ),
    )
    assert made.status == 201, made.body
    cid = made.body["data"]["id"]
    assert made.headers["Location"] == f"/admin/v2/sites/{a.workspace_id}/custom-commands/{cid}"
    assert made.headers["ETag"]
    assert made.body["data"]["attributes"]["processTimeOut"] == 30
    # PUT replaces with the full representation: what is missing takes its default.
    put = eft.call("PUT", f"{base}/{cid}", headers=h, raw=json.dumps(_command("backup", description="d")))
    assert put.status == 200, put.body
    attrs = put.body["data"]["attributes"]
    assert (
        attrs["executable"],
        attrs["processTimeOut"],
        attrs["useProcessTimeOut"],
        attrs["description"],
    ) == ("", 60, False, "d")
    # PATCH changes only what it sends.
    patched = eft.call(
        "PATCH",
        f"{base}/{cid}",
        headers=h,
        raw=json.dumps({"data": {"type": "customCommand", "attributes": {"executable": "/bin/x"}}}),
    )
    assert patched.status == 200, patched.body
    assert (
        patched.body["data"]["attributes"]["executable"],
        patched.body["data"]["attributes"]["description"],
    ) == ("/bin/x", "d")
    # PUT of an unknown id creates it with that id.
    created = eft.call("PUT", f"{base}/{CMD_ID}", headers=h, raw=json.dumps(_command("restore")))
    assert (created.status, created.body["data"]["id"]) == (201, CMD_ID)
    listed = eft.call("GET", base, headers=h).body["data"]
    assert sorted(c["attributes"]["name"] for c in listed) == ["backup", "restore"]
    # A name another command has: 409; nothing changed.
    clash = eft.call("PUT", f"{base}/{CMD_ID}", headers=h, raw=json.dumps(_command("backup")))
    assert clash.status == 409
    assert eft.call("GET", f"{base}/{CMD_ID}", headers=h).body["data"]["attributes"]["name"] == "restore"
    # Rename frees the old name.
    assert eft.call("PUT", f"{base}/{CMD_ID}", headers=h, raw=json.dumps(_command("restore2"))).status == 200
    assert eft.call("POST", base, headers=h, raw=json.dumps(_command("restore"))).status == 201
    # Another contract's admin sees none of it.
    hb = _auth(b.admin_token)
    assert eft.call("GET", f"{base}/{cid}", headers=hb).status == 404
    assert eft.call("PUT", f"{base}/{cid}", headers=hb, raw=json.dumps(_command("x"))).status == 404
    assert eft.call("DELETE", f"{base}/{cid}", headers=hb).status == 404
    assert eft.call("DELETE", f"{base}/{cid}", headers=h).status == 204
    assert eft.call("GET", f"{base}/{cid}", headers=h).status == 404
    assert eft.call("DELETE", f"{base}/{cid}", headers=h).status == 404


@pytest.mark.parametrize(
    ("path_id", "body", "code"),
    [
        ("not-a-uuid", _command("x"), "invalid_id"),
        (CMD_ID, _command("x", color="red"), "validation_error"),
        (CMD_ID, {"data": {"type": "aweTask", "attributes": {"name": "x"}}}, "validation_error"),
        (CMD_ID, {"data": {"type": "customCommand", "attributes": {}}}, "validation_error"),
        (CMD_ID, _command("x", processTimeOut="soon"), "validation_error"),
        (CMD_ID, _command("bad name/"), "validation_error"),
        (CMD_ID, {"nodata": 1}, "validation_error"),
    ],
)
def test_bad_artifact_writes_are_400_and_store_nothing(
    eft: Api, tenants: tuple[Tenant, Tenant], path_id: str, body: Any, code: str
):
    a, _ = tenants
    base = f"/admin/v2/sites/{a.workspace_id}/custom-commands"
    answer = eft.call("PUT", f"{base}/{path_id}", headers=_auth(a.admin_token), raw=json.dumps(body))
    assert answer.status == 400, answer.body
    assert answer.error_code == code
    assert eft.call("GET", base, headers=_auth(a.admin_token)).body["data"] == []


def test_unknown_kind_is_404(eft: Api, tenants: tuple[Tenant, Tenant]):
    a, _ = tenants
    assert (
        eft.call("GET", f"/admin/v2/sites/{a.workspace_id}/printers", headers=_auth(a.admin_token)).status
        == 404
    )


def test_concurrent_puts_of_one_name_create_exactly_one(
    eft: Api, tenants: tuple[Tenant, Tenant], atomic_writes: None
):
    a, _ = tenants
    base = f"/admin/v2/sites/{a.workspace_id}/custom-commands"
    statuses: list[int] = []
    lock = threading.Lock()

    def put() -> None:
        answer = eft.call(
            "PUT", f"{base}/{uuid.uuid4()}", headers=_auth(a.admin_token), raw=json.dumps(_command("same"))
        )
        with lock:
            statuses.append(answer.status)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] + [409] * 7
    assert len(eft.call("GET", base, headers=_auth(a.admin_token)).body["data"]) == 1


# ---- propagate: the target is this deployment, reached through the handler ---------------------------


class InProcessTarget(TargetClient):
    """A TargetClient whose requests go to the propagation handler in-process (the e2e tests use HTTP
    between two local stacks): everything but the socket is the real path."""

    def __init__(self, endpoint: str, eft: Api) -> None:
        super().__init__(endpoint, OutboundPolicy.from_allow_list("127.0.0.1/32,target.test"))
        self.eft = eft
        self.calls: list[tuple[str, str]] = []

    def _request(self, method: str, path: str, body: Any = None, *, content_type: str = "") -> Answer:
        self.calls.append((method, path))
        headers = {"Authorization": f"EFTAdminAuthToken {self.token}"} if self.token else {}
        if body is not None:
            headers["Content-Type"] = content_type or "application/vnd.api+json"
        answer = self.eft.call(
            method, path, headers=headers, raw=json.dumps(body) if body is not None else None
        )
        return Answer(answer.status, answer.body if answer.body != "" else None)


@pytest.fixture
def targets(eft: Api) -> list[InProcessTarget]:
    made: list[InProcessTarget] = []

    def factory(endpoint: str) -> InProcessTarget:
        client = InProcessTarget(endpoint, eft)
        made.append(client)
        return client

    container().propagator.client = factory
    return made


def _rpc(**params: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "propagate", "id": "1", "params": params})


def _params(tenant_tag: str, site: str) -> dict[str, str]:
    return {
        "targetEndpoint": "http://target.test:4450",
        "targetSiteName": site,
        "targetAdminUsername": f"admin-{tenant_tag}",
        "targetAdminPassword": f"admin-{tenant_tag}-password",
    }


def test_propagate_creates_then_replaces_by_id_and_keeps_records(
    eft: Api, tenants: tuple[Tenant, Tenant], targets: list[InProcessTarget]
):
    a, b = tenants
    src = f"/Admin/v2/sites/{a.workspace_id}/custom-commands/{CMD_ID}"
    dst = f"/admin/v2/sites/{b.workspace_id}/custom-commands/{CMD_ID}"
    ha, hb = _auth(a.admin_token), _auth(b.admin_token)
    assert (
        eft.call("PUT", src, headers=ha, raw=json.dumps(_command("backup", executable="/bin/b"))).status
        == 201
    )
    first = eft.call("POST", src, headers=ha, raw=_rpc(**_params("b", "ws-b")))
    assert (first.status, first.body) == (200, {"jsonrpc": "2.0", "id": "1", "result": "success"})
    copy = eft.call("GET", dst, headers=hb).body["data"]
    assert copy["attributes"] == eft.call("GET", src, headers=ha).body["data"]["attributes"]
    again = eft.call("POST", src, headers=ha, raw=_rpc(**_params("b", "ws-b")))
    assert again.body["result"] == "unchanged"
    assert (
        eft.call(
            "PATCH",
            src,
            headers=ha,
            raw=json.dumps({"data": {"type": "customCommand", "attributes": {"executable": "/bin/c"}}}),
        ).status
        == 200
    )
    dry = eft.call("POST", src, headers=ha, raw=_rpc(**_params("b", "ws-b"), dryRun=True))
    assert dry.body["result"] == {"dryRun": True, "status": "would_replace", "fields": ["executable"]}
    assert eft.call("GET", dst, headers=hb).body["data"]["attributes"]["executable"] == "/bin/b"
    assert eft.call("POST", src, headers=ha, raw=_rpc(**_params("b", "ws-b"))).body["result"] == "success"
    assert eft.call("GET", dst, headers=hb).body["data"]["attributes"]["executable"] == "/bin/c"
    records = eft.call("GET", f"/admin/v2/sites/{a.workspace_id}/propagations", headers=ha).body["items"]
    assert [r["status"] for r in records] == ["replaced", "would_replace", "unchanged", "created"]
    assert all(
        "targetAdminPassword" not in json.dumps(r) and "admin-b-password" not in json.dumps(r)
        for r in records
    )
    # The target audited the writes it took (who, what, outcome).
    audit = container().propagation_store.records(b.workspace_id, "ADMINAUDIT", 10, None).items
    assert [(r["user"], r["outcome"]) for r in audit] == [("admin-b", "replaced"), ("admin-b", "created")]


def test_the_seed_failure_example_missing_artifact(
    eft: Api, tenants: tuple[Tenant, Tenant], targets: list[InProcessTarget]
):
    a, _ = tenants
    src = f"/Admin/v2/sites/{a.workspace_id}/custom-commands/{CMD_ID}"
    answer = eft.call("POST", src, headers=_auth(a.admin_token), raw=_rpc(**_params("b", "ws-b")))
    assert answer.status == 404
    assert answer.body == {
        "jsonrpc": "2.0",
        "id": "1",
        "error": {"code": -32004, "message": f"Not found: custom-command ({CMD_ID})"},
    }
    assert targets == []  # nothing was sent anywhere


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"targetSiteName": "nowhere"}, (424, -32002)),
        ({"targetAdminPassword": "wrong"}, (424, -32001)),
        ({"targetEndpoint": "http://169.254.169.254/"}, (400, -32008)),
        ({"targetEndpoint": "http://10.0.0.1:4450"}, (400, -32008)),
        ({"targetEndpoint": "ftp://target.test"}, (400, -32008)),
        ({"targetEndpoint": "http://203.0.113.7:4450"}, (400, -32008)),  # public, but http with a password
    ],
)
def test_propagate_failures_have_their_codes_and_change_nothing(
    eft: Api,
    tenants: tuple[Tenant, Tenant],
    targets: list[InProcessTarget],
    params: dict[str, str],
    expected: tuple[int, int],
):
    status, code = expected
    a, b = tenants
    src = f"/Admin/v2/sites/{a.workspace_id}/custom-commands/{CMD_ID}"
    assert (
        eft.call("PUT", src, headers=_auth(a.admin_token), raw=json.dumps(_command("backup"))).status == 201
    )
    answer = eft.call(
        "POST", src, headers=_auth(a.admin_token), raw=_rpc(**{**_params("b", "ws-b"), **params})
    )
    assert (answer.status, answer.body["error"]["code"], answer.body["id"]) == (status, code, "1"), (
        answer.body
    )
    assert "wrong" not in json.dumps(answer.body)
    assert (
        eft.call(
            "GET", f"/admin/v2/sites/{b.workspace_id}/custom-commands", headers=_auth(b.admin_token)
        ).body["data"]
        == []
    )


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", -32700),
        ("", -32700),
        ("[]", -32600),
        (json.dumps([{"jsonrpc": "2.0", "method": "propagate", "id": 1}]), -32600),
        (json.dumps({"jsonrpc": "2.0", "method": "propagate", "params": {}}), -32600),  # a notification
        (json.dumps({"jsonrpc": "1.0", "method": "propagate", "id": 1}), -32600),
        (json.dumps({"jsonrpc": "2.0", "method": "copy", "id": 1}), -32601),
        (json.dumps({"jsonrpc": "2.0", "method": "propagate", "id": 1, "params": []}), -32602),
        (json.dumps({"jsonrpc": "2.0", "method": "propagate", "id": 1, "params": {}}), -32602),
        (
            json.dumps({"jsonrpc": "2.0", "method": "propagate", "id": 1, "params": {"targetEndpoint": 5}}),
            -32602,
        ),
    ],
)
def test_malformed_calls_get_the_standard_errors(
    eft: Api, tenants: tuple[Tenant, Tenant], targets: list[InProcessTarget], raw: str, code: int
):
    a, _ = tenants
    src = f"/Admin/v2/sites/{a.workspace_id}/custom-commands/{CMD_ID}"
    eft.call("PUT", src, headers=_auth(a.admin_token), raw=json.dumps(_command("backup")))
    answer = eft.call("POST", src, headers=_auth(a.admin_token), raw=raw)
    assert 400 <= answer.status < 500
    assert answer.body["error"]["code"] == code, answer.body
    assert targets == []


def test_propagate_needs_an_org_admin_of_the_site(
    eft: Api, tenants: tuple[Tenant, Tenant], targets: list[InProcessTarget]
):
    a, b = tenants
    src = f"/Admin/v2/sites/{a.workspace_id}/custom-commands/{CMD_ID}"
    assert eft.call("POST", src, headers=_auth(a.member_token), raw=_rpc(**_params("b", "ws-b"))).status in (
        403,
        404,
    )
    assert eft.call("POST", src, headers=_auth(b.admin_token), raw=_rpc(**_params("b", "ws-b"))).status == 404


def test_flows_and_connectors_are_awe_tasks_and_connection_profiles(
    eft: Api, tenants: tuple[Tenant, Tenant], targets: list[InProcessTarget]
):
    """The same artifact through both APIs, and propagated by id: a flow (its script base64 in `code`)
    and a connector (its value as `connectionSettings` and verbatim `value`)."""
    a, b = tenants
    flows = Api(load_function("flows"), "flows")
    connectors = Api(load_function("connectors"), "connectors")
    w = f"/api/latest/workspaces/{a.workspace_id}"
    flow = flows.call(
        "PUT", f"{w}/flows/hello", {"script": SCRIPT, "description": "greets"}, token=a.admin_token
    )
    assert flow.status == 201, flow.body
    task = eft.call(
        "GET", f"/admin/v2/sites/{a.workspace_id}/awe-tasks/{flow.body['id']}", headers=_auth(a.admin_token)
    )
    assert task.status == 200, task.body
    attributes = task.body["data"]["attributes"]
    assert base64.b64decode(attributes["code"]).decode() == SCRIPT
    assert (attributes["name"], attributes["description"]) == ("hello", "greets")
    assert (
        task.body["data"]["relationships"]["aweFolder"]["data"]["id"]
        == "00000000-0000-0000-0000-000000000000"
    )
    value = "url: https://example.com/v1  # the API\nmethod: get\n"
    made = connectors.call(
        "PUT", f"{w}/connectors/api", {"type": "REST", "value": value}, token=a.admin_token
    )
    assert made.status == 201, made.body
    profile = eft.call(
        "GET",
        f"/admin/v2/sites/{a.workspace_id}/connection-profiles/{made.body['id']}",
        headers=_auth(a.admin_token),
    )
    assert profile.body["data"]["attributes"]["connectionSettings"] == {
        "url": "https://example.com/v1",
        "method": "get",
    }
    for path, artifact_id in (("awe-tasks", flow.body["id"]), ("connection-profiles", made.body["id"])):
        src = f"/admin/v2/sites/{a.workspace_id}/{path}/{artifact_id}"
        answer = eft.call("POST", src, headers=_auth(a.admin_token), raw=_rpc(**_params("b", "ws-b")))
        assert answer.body == {"jsonrpc": "2.0", "id": "1", "result": "success"}, answer.body
    wb = f"/api/latest/workspaces/{b.workspace_id}"
    copied = flows.call("GET", f"{wb}/flows/hello", token=b.admin_token).body
    assert (copied["id"], copied["script"], copied["description"]) == (flow.body["id"], SCRIPT, "greets")
    connector = connectors.call("GET", f"{wb}/connectors/api", token=b.admin_token).body
    assert (connector["id"], connector["value"]) == (made.body["id"], value)
    # An awe task through the admin API with fields the flow does not have: 400, nothing stored.
    bad = {
        "data": {
            "type": "aweTask",
            "attributes": {"name": "x", "code": base64.b64encode(b"x=1").decode(), "color": 1},
        }
    }
    answer = eft.call(
        "PUT",
        f"/admin/v2/sites/{a.workspace_id}/awe-tasks/{CMD_ID}",
        headers=_auth(a.admin_token),
        raw=json.dumps(bad),
    )
    assert (answer.status, answer.error_code) == (400, "validation_error")
    # A script with a syntax error is refused as the native API refuses it.
    broken = {
        "data": {
            "type": "aweTask",
            "attributes": {"name": "x", "code": base64.b64encode(b"def (:\n").decode()},
        }
    }
    answer = eft.call(
        "PUT",
        f"/admin/v2/sites/{a.workspace_id}/awe-tasks/{CMD_ID}",
        headers=_auth(a.admin_token),
        raw=json.dumps(broken),
    )
    assert answer.status == 400
    assert (
        eft.call(
            "GET", f"/admin/v2/sites/{a.workspace_id}/awe-tasks/{CMD_ID}", headers=_auth(a.admin_token)
        ).status
        == 404
    )


def test_unknown_variables_and_secrets_on_the_target_fail_and_change_nothing(
    eft: Api, tenants: tuple[Tenant, Tenant], targets: list[InProcessTarget]
):
    a, b = tenants
    connectors = Api(load_function("connectors"), "connectors")
    w, wb = f"/api/latest/workspaces/{a.workspace_id}", f"/api/latest/workspaces/{b.workspace_id}"
    assert (
        connectors.call(
            "PUT", f"{w}/variables/API_HOST", {"value": "api.example.com"}, token=a.admin_token
        ).status
        == 201
    )
    made = connectors.call(
        "PUT",
        f"{w}/connectors/api",
        {"type": "REST", "value": "url: https://%API_HOST%/v1\n"},
        token=a.admin_token,
    )
    assert made.status == 201, made.body
    src = f"/admin/v2/sites/{a.workspace_id}/connection-profiles/{made.body['id']}"
    answer = eft.call("POST", src, headers=_auth(a.admin_token), raw=_rpc(**_params("b", "ws-b")))
    assert (answer.status, answer.body["error"]["code"]) == (424, -32003), answer.body
    assert answer.body["error"]["data"]["variables"] == ["API_HOST"]
    assert connectors.call("GET", f"{wb}/connectors/api", token=b.admin_token).status == 404
    assert (
        connectors.call(
            "PUT", f"{wb}/variables/API_HOST", {"value": "prod.example.com"}, token=b.admin_token
        ).status
        == 201
    )
    answer = eft.call("POST", src, headers=_auth(a.admin_token), raw=_rpc(**_params("b", "ws-b")))
    assert answer.body.get("result") == "success", answer.body
    # A connector listing a vault secret the target lacks: its own code; the secret is never copied.
    connectors.call(
        "PUT", f"{w}/secrets/token", {"value": {"headers": {"X-Key": "s3cret"}}}, token=a.admin_token
    )
    keyed = connectors.call(
        "PUT",
        f"{w}/connectors/keyed",
        {"type": "REST", "value": "url: https://example.com\n", "secrets": ["token"]},
        token=a.admin_token,
    )
    assert keyed.status == 201, keyed.body
    answer = eft.call(
        "POST",
        f"/admin/v2/sites/{a.workspace_id}/connection-profiles/{keyed.body['id']}",
        headers=_auth(a.admin_token),
        raw=_rpc(**_params("b", "ws-b")),
    )
    assert answer.body["error"]["code"] == -32006, answer.body
    assert "s3cret" not in json.dumps(answer.body)
    assert connectors.call("GET", f"{wb}/connectors/keyed", token=b.admin_token).status == 404


def test_many_artifacts_to_several_targets_with_a_result_per_item(
    eft: Api, tenants: tuple[Tenant, Tenant], api: Api, root_token: str, targets: list[InProcessTarget]
):
    """Beyond EFT: one call, many artifacts, two targets (one failing): each item has its result, the
    call reports a partial failure, and the good target got everything."""
    a, b = tenants
    ha = _auth(a.admin_token)
    base = f"/admin/v2/sites/{a.workspace_id}/custom-commands"
    ids = [
        eft.call("POST", base, headers=ha, raw=json.dumps(_command(f"c{i}"))).body["data"]["id"]
        for i in range(3)
    ]
    artifacts = [{"type": "customCommand", "id": i} for i in ids]
    good, bad = _params("b", "ws-b"), {**_params("b", "ws-b"), "targetSiteName": "nowhere"}
    body: dict[str, Any] = {
        "jsonrpc": "2.0",
        "method": "propagate",
        "id": 7,
        "params": {"artifacts": artifacts, "targets": [good, bad]},
    }
    answer = eft.call(
        "POST", f"/admin/v2/sites/{a.workspace_id}/propagations", headers=ha, raw=json.dumps(body)
    )
    assert (answer.status, answer.body["error"]["code"], answer.body["id"]) == (424, -32009, 7), answer.body
    results = answer.body["error"]["data"]["results"]
    assert [(r["targetSiteName"], r["status"]) for r in results] == [("ws-b", "created")] * 3 + [
        ("nowhere", "failed")
    ] * 3
    assert {r.get("code") for r in results[3:]} == {-32002}
    copies = eft.call(
        "GET", f"/admin/v2/sites/{b.workspace_id}/custom-commands", headers=_auth(b.admin_token)
    ).body["data"]
    assert sorted(c["id"] for c in copies) == sorted(ids)
    # All good: the result lists each item; a second run finds them unchanged; one login per target.
    body["params"]["targets"] = [good]
    targets.clear()
    again = eft.call(
        "POST", f"/admin/v2/sites/{a.workspace_id}/propagations", headers=ha, raw=json.dumps(body)
    )
    assert again.status == 200, again.body
    assert [r["status"] for r in again.body["result"]["results"]] == ["unchanged"] * 3
    assert [c for c in targets[0].calls if c[1] == "/admin/v1/authentication"] == [
        ("POST", "/admin/v1/authentication")
    ]
    # An unknown artifact in the list: -32004 before anything is sent.
    body["params"]["artifacts"].append({"type": "customCommand", "id": CMD_ID})
    missing = eft.call(
        "POST", f"/admin/v2/sites/{a.workspace_id}/propagations", headers=ha, raw=json.dumps(body)
    )
    assert (missing.status, missing.body["error"]["code"]) == (404, -32004)
    bad_params = {**body, "params": {"artifacts": [], "targets": [good]}}
    answer = eft.call(
        "POST", f"/admin/v2/sites/{a.workspace_id}/propagations", headers=ha, raw=json.dumps(bad_params)
    )
    assert answer.body["error"]["code"] == -32602


def test_user_groups_and_folders_stay_the_targets_on_every_propagation(
    eft: Api, tenants: tuple[Tenant, Tenant], targets: list[InProcessTarget]
):
    """Seed 004's exceptions: a new copy has no user groups and sits in the root folder; a replaced copy
    keeps the target's user groups and folder, whatever the source's are."""
    a, b = tenants
    ha, hb = _auth(a.admin_token), _auth(b.admin_token)
    sa, sb = f"/admin/v2/sites/{a.workspace_id}", f"/admin/v2/sites/{b.workspace_id}"

    def made(headers: dict[str, str], site: str, path: str, document: dict[str, Any]) -> str:
        answer = eft.call("POST", f"{site}/{path}", headers=headers, raw=json.dumps(document))
        assert answer.status == 201, answer.body
        return str(answer.body["data"]["id"])

    group_a = made(
        ha,
        sa,
        "user-groups",
        {"data": {"type": "userGroup", "attributes": {"name": "ops", "members": [a.admin_id]}}},
    )
    folder_a = made(
        ha, sa, "awe-tasks-folders", {"data": {"type": "aweFolder", "attributes": {"name": "jobs"}}}
    )
    groups = {
        "executionPermissions": {"data": {"users": [], "userGroups": [{"type": "userGroup", "id": group_a}]}}
    }
    command = {**_command("backup")["data"], "relationships": groups}
    command_id = made(ha, sa, "custom-commands", {"data": command})
    code = base64.b64encode(SCRIPT.encode()).decode()
    task = {
        "type": "aweTask",
        "attributes": {"name": "nightly", "code": code},
        "relationships": {"aweFolder": {"data": {"type": "aweFolder", "id": folder_a}}},
    }
    task_id = made(ha, sa, "awe-tasks", {"data": task})
    assert (
        eft.call("GET", f"{sa}/awe-tasks/{task_id}", headers=ha).body["data"]["relationships"]["aweFolder"][
            "data"
        ]["id"]
        == folder_a
    )
    for path, artifact_id in (("custom-commands", command_id), ("awe-tasks", task_id)):
        answer = eft.call("POST", f"{sa}/{path}/{artifact_id}", headers=ha, raw=_rpc(**_params("b", "ws-b")))
        assert answer.body.get("result") == "success", answer.body
    first_command = eft.call("GET", f"{sb}/custom-commands/{command_id}", headers=hb).body["data"]
    assert first_command["relationships"]["executionPermissions"]["data"]["userGroups"] == []
    first_task = eft.call("GET", f"{sb}/awe-tasks/{task_id}", headers=hb).body["data"]
    assert first_task["relationships"]["aweFolder"]["data"]["id"] == "00000000-0000-0000-0000-000000000000"
    # The target files its copies its own way; the source changes the artifacts; propagate again.
    group_b = made(
        hb, sb, "user-groups", {"data": {"type": "userGroup", "attributes": {"name": "night-shift"}}}
    )
    folder_b = made(
        hb, sb, "awe-tasks-folders", {"data": {"type": "aweTaskFolder", "attributes": {"name": "prod"}}}
    )
    patch = {
        "data": {
            "type": "customCommand",
            "attributes": {},
            "relationships": {
                "executionPermissions": {
                    "data": {"users": [], "userGroups": [{"type": "userGroup", "id": group_b}]}
                }
            },
        }
    }
    assert (
        eft.call("PATCH", f"{sb}/custom-commands/{command_id}", headers=hb, raw=json.dumps(patch)).status
        == 200
    )
    patch = {
        "data": {
            "type": "aweTask",
            "attributes": {},
            "relationships": {"aweFolder": {"data": {"type": "aweFolder", "id": folder_b}}},
        }
    }
    assert eft.call("PATCH", f"{sb}/awe-tasks/{task_id}", headers=hb, raw=json.dumps(patch)).status == 200
    change = {"data": {"type": "customCommand", "attributes": {"executable": "/bin/v2"}}}
    assert (
        eft.call("PATCH", f"{sa}/custom-commands/{command_id}", headers=ha, raw=json.dumps(change)).status
        == 200
    )
    change = {"data": {"type": "aweTask", "attributes": {"description": "v2"}}}
    assert eft.call("PATCH", f"{sa}/awe-tasks/{task_id}", headers=ha, raw=json.dumps(change)).status == 200
    for path, artifact_id in (("custom-commands", command_id), ("awe-tasks", task_id)):
        answer = eft.call("POST", f"{sa}/{path}/{artifact_id}", headers=ha, raw=_rpc(**_params("b", "ws-b")))
        assert answer.body.get("result") == "success", answer.body
    second_command = eft.call("GET", f"{sb}/custom-commands/{command_id}", headers=hb).body["data"]
    assert second_command["attributes"]["executable"] == "/bin/v2"
    assert second_command["relationships"]["executionPermissions"]["data"]["userGroups"] == [
        {"type": "userGroup", "id": group_b}
    ]
    second_task = eft.call("GET", f"{sb}/awe-tasks/{task_id}", headers=hb).body["data"]
    assert (
        second_task["attributes"]["description"],
        second_task["relationships"]["aweFolder"]["data"]["id"],
    ) == ("v2", folder_b)
    # Apart from these, the copy is identical to the source.
    source = eft.call("GET", f"{sa}/custom-commands/{command_id}", headers=ha).body["data"]["attributes"]
    assert second_command["attributes"] == source
    # User groups and folders themselves are not propagated; bad references are 400.
    answer = eft.call("POST", f"{sa}/user-groups/{group_a}", headers=ha, raw=_rpc(**_params("b", "ws-b")))
    assert answer.body["error"]["code"] == -32600
    bad = {"data": {"type": "userGroup", "attributes": {"name": "x", "members": [b.admin_id]}}}
    assert (
        eft.call("POST", f"{sa}/user-groups", headers=ha, raw=json.dumps(bad)).error_code == "unknown_member"
    )
    bad = {
        "data": {
            **_command("y")["data"],
            "relationships": {
                "executionPermissions": {"data": {"userGroups": [{"type": "userGroup", "id": CMD_ID}]}}
            },
        }
    }
    assert (
        eft.call("POST", f"{sa}/custom-commands", headers=ha, raw=json.dumps(bad)).error_code
        == "unknown_user_group"
    )


def test_an_artifacts_permissions_limit_who_may_act_and_stay_the_targets(
    eft: Api, api: Api, root_token: str, tenants: tuple[Tenant, Tenant], targets: list[InProcessTarget]
):
    """ACLs: inherited by default (every administrator of the site); explicit entries limit the other
    administrators (the owner keeps full access); not propagated (a replaced copy keeps the target's)."""
    a, b = tenants
    second = api.call(
        "POST",
        f"/api/latest/contracts/{a.contract_id}/members",
        {"username": "admin2-a", "password": "admin2-a-password", "role": "org_admin"},
        token=root_token,
    )
    assert second.status == 201, second.body
    other = _auth(api.login("admin2-a", "admin2-a-password"))
    ha = _auth(a.admin_token)
    src = f"/admin/v2/sites/{a.workspace_id}/custom-commands/{CMD_ID}"
    assert eft.call("PUT", src, headers=ha, raw=json.dumps(_command("backup"))).status == 201
    assert eft.call("GET", f"{src}/permissions", headers=ha).body["data"]["attributes"] == {
        "inherited": True,
        "entries": [],
    }
    assert eft.call("GET", src, headers=other).status == 200
    acl = {
        "data": {
            "type": "permissions",
            "attributes": {
                "inherited": False,
                "entries": [{"member": a.admin_id, "permissions": ["read", "write", "propagate"]}],
            },
        }
    }
    assert eft.call("PUT", f"{src}/permissions", headers=ha, raw=json.dumps(acl)).status == 200
    assert eft.call("GET", src, headers=other).error_code == "acl_denied"
    assert eft.call("PUT", src, headers=other, raw=json.dumps(_command("mine"))).status == 403
    assert eft.call("DELETE", src, headers=ha).status == 403  # not given delete
    assert eft.call("POST", src, headers=other, raw=_rpc(**_params("b", "ws-b"))).status == 403
    listed = eft.call("GET", f"/admin/v2/sites/{a.workspace_id}/custom-commands", headers=other).body["data"]
    assert listed == []
    # Propagated: the copy's permissions are the target's defaults (inherited), not the source's.
    assert eft.call("POST", src, headers=ha, raw=_rpc(**_params("b", "ws-b"))).body.get("result") == "success"
    dst = f"/admin/v2/sites/{b.workspace_id}/custom-commands/{CMD_ID}"
    hb = _auth(b.admin_token)
    assert eft.call("GET", f"{dst}/permissions", headers=hb).body["data"]["attributes"]["inherited"] is True
    bad = {
        "data": {
            "type": "permissions",
            "attributes": {"inherited": False, "entries": [{"member": b.admin_id, "permissions": ["fly"]}]},
        }
    }
    assert eft.call("PUT", f"{dst}/permissions", headers=hb, raw=json.dumps(bad)).status == 400
    mine = {
        "data": {
            "type": "permissions",
            "attributes": {
                "inherited": False,
                "entries": [{"member": b.admin_id, "permissions": ["read", "write"]}],
            },
        }
    }
    assert eft.call("PUT", f"{dst}/permissions", headers=hb, raw=json.dumps(mine)).status == 200
    assert (
        eft.call(
            "PATCH",
            src,
            headers=ha,
            raw=json.dumps({"data": {"type": "customCommand", "attributes": {"executable": "/bin/z"}}}),
        ).status
        == 200
    )
    assert eft.call("POST", src, headers=ha, raw=_rpc(**_params("b", "ws-b"))).body.get("result") == "success"
    kept = eft.call("GET", f"{dst}/permissions", headers=hb).body["data"]["attributes"]
    assert kept == {"inherited": False, "entries": [{"member": b.admin_id, "permissions": ["read", "write"]}]}
    # Another contract's member in an entry: 400.
    foreign = {
        "data": {
            "type": "permissions",
            "attributes": {"inherited": False, "entries": [{"member": a.admin_id, "permissions": ["read"]}]},
        }
    }
    assert (
        eft.call("PUT", f"{dst}/permissions", headers=hb, raw=json.dumps(foreign)).error_code
        == "unknown_member"
    )


def test_the_seed_call_is_read_as_json_whatever_its_content_type(
    eft: Api, tenants: tuple[Tenant, Tenant], targets: list[InProcessTarget]
):
    """Seed 004's example sends no content type (curl sends a form's): the call is JSON all the same."""
    a, _ = tenants
    src = f"/Admin/v2/sites/{a.workspace_id}/custom-commands/{CMD_ID}"
    assert (
        eft.call("PUT", src, headers=_auth(a.admin_token), raw=json.dumps(_command("backup"))).status == 201
    )
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):
        headers = {"Authorization": f"EFTAdminAuthToken {a.admin_token}", "Content-Type": content_type}
        answer = eft.call("POST", src, headers=headers, raw=_rpc(**_params("b", "ws-b")))
        assert answer.body.get("result") in ("success", "unchanged"), answer.body


def _every_admin_route(t: Tenant, artifact_ids: dict[str, str]) -> list[tuple[str, str, str | None]]:
    site = f"/admin/v2/sites/{t.workspace_id}"
    routes: list[tuple[str, str, str | None]] = [
        ("GET", site, None),
        ("GET", f"{site}/propagations", None),
        ("GET", f"{site}/propagation-targets", None),
        (
            "POST",
            f"{site}/propagations",
            json.dumps({"jsonrpc": "2.0", "method": "propagate", "id": 1, "params": {}}),
        ),
    ]
    for kind, artifact_id in artifact_ids.items():
        item = f"{site}/{kind}/{artifact_id}"
        routes += [
            ("GET", f"{site}/{kind}", None),
            ("POST", f"{site}/{kind}", json.dumps({"data": {"type": "x", "attributes": {}}})),
            ("GET", item, None),
            ("PUT", item, json.dumps({"data": {"type": "x", "attributes": {}}})),
            ("PATCH", item, json.dumps({"data": {"type": "x", "attributes": {}}})),
            ("DELETE", item, None),
            ("POST", item, _rpc(**_params("a", "ws-a"))),
            ("GET", f"{item}/permissions", None),
            ("PUT", f"{item}/permissions", json.dumps({"data": {"type": "permissions", "attributes": {}}})),
        ]
    return routes


def test_another_contract_and_plain_members_reach_no_admin_route(
    eft: Api, tenants: tuple[Tenant, Tenant], targets: list[InProcessTarget]
):
    """Every route of the admin API: another contract's admin and members get 404 (the site is not
    theirs), a plain member of the site's own contract 403; nothing changes."""
    a, b = tenants
    ha = _auth(a.admin_token)
    site = f"/admin/v2/sites/{a.workspace_id}"
    ids = {}
    for kind, document in (
        ("custom-commands", _command("backup")),
        ("user-groups", {"data": {"type": "userGroup", "attributes": {"name": "ops"}}}),
        ("awe-tasks-folders", {"data": {"type": "aweFolder", "attributes": {"name": "jobs"}}}),
        (
            "awe-tasks",
            {
                "data": {
                    "type": "aweTask",
                    "attributes": {"name": "t", "code": base64.b64encode(SCRIPT.encode()).decode()},
                }
            },
        ),
    ):
        made = eft.call("POST", f"{site}/{kind}", headers=ha, raw=json.dumps(document))
        assert made.status == 201, made.body
        ids[kind] = made.body["data"]["id"]
    before = {kind: eft.call("GET", f"{site}/{kind}", headers=ha).body for kind in ids}
    for method, path, body in _every_admin_route(a, ids):
        for token, allowed in (
            (b.admin_token, (404,)),
            (b.member_token, (403, 404)),
            (a.member_token, (403,)),
        ):
            headers = {
                "Authorization": f"EFTAdminAuthToken {token}",
                "Content-Type": "application/vnd.api+json",
            }
            answer = eft.call(method, path, headers=headers, raw=body)
            assert answer.status in allowed, (method, path, answer.status, answer.body)
    assert {kind: eft.call("GET", f"{site}/{kind}", headers=ha).body for kind in ids} == before
    assert targets == []
