"""Artifact propagation (seed 004) between two local stacks: two processes, two moto servers, real HTTP.

Stack S is the staging deployment, stack P the production one; each tenant gets a site (a workspace) on
both. The test talks to both as an EFT administrator's script would: the EFT-style login (its body
without a JSON content type), `Authorization: EFTAdminAuthToken`, JSON:API documents and the JSON-RPC
`propagate` call on an artifact's path; flows, connectors and run-time variables are made and read
through the native API. Loopback is the local stacks' outbound allow-list, so each stack may reach the
other at `http://127.0.0.1:<port>`.
"""

from __future__ import annotations

import base64
import copy
import http.server
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.e2e.conftest import ADMIN, Stack, launch

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-propagation")]
A = "/api/latest"
JSON_API = "application/vnd.api+json"
ROOT_FOLDER = "00000000-0000-0000-0000-000000000000"
SEED_ID = "00000000-0000-0000-0000-000000000001"
HELLO = "import flow_api\ndef handler(system, this, inputs):\n    return this.success('hello v1')\n"
HELLO_2 = (
    "import flow_api\ndef handler(system, this, inputs):\n"
    "    this.log('propagated')\n    return this.success('hello v2')\n"
)

# Seed 004's two request bodies, verbatim (whitespace included) apart from endpoint, site name and
# credentials, which are placeholders filled in per test. <SP> marks the seed's trailing spaces.
SEED_SUCCESS_BODY = """{
   "jsonrpc": "2.0",
   "method": "propagate",
   "id": "1",
   "params":<SP>
   {
   "targetEndpoint": "http://target:4450",
   "targetSiteName": "targetSite",
   "targetAdminUsername": "targetAdminLogin",
   "targetAdminPassword": "targetAdminPassword"
   }
}""".replace("<SP>", " ")
SEED_FAILURE_BODY = """{
  "jsonrpc": "2.0",
  "method": "propagate",
  "id": "1",
  "params":<SP>
  {
  "targetEndpoint": "http://target:4450",
  "targetSiteName": "targetSite",
  "targetAdminUsername":<SP>
   "targetAdminLogin","targetAdminPassword":<SP>
   "targetAdminPassword"
  }
}""".replace("<SP>", " ")


@dataclass
class Site:
    """One tenant's site (workspace) on one stack, with its org admin's credentials and sessions."""

    stack: Stack
    ws: str
    name: str
    username: str
    password: str
    token: str  # a native bearer token (POST /api/latest/auth/login)
    eft: str  # an admin session of the EFT-style login

    @property
    def endpoint(self) -> str:
        # `http://127.0.0.1:<port>`: plain http, as loopback is on the local stacks' outbound allow-list
        return self.stack.base

    def native(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.stack.call(method, f"{A}/workspaces/{self.ws}{path}", body, self.token)

    def admin(self, method: str, path: str, body: Any = None, raw: str | None = None) -> requests.Response:
        """A call of the EFT-style API on this site (`path` below /Admin/v2/sites/<site>)."""
        headers = {"Authorization": f"EFTAdminAuthToken {self.eft}", "Accept": JSON_API}
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        if data is not None:
            headers["Content-Type"] = JSON_API
        answer = requests.request(
            method,
            self.stack.url(f"/Admin/v2/sites/{self.ws}{path}"),
            data=data,
            headers=headers,
            timeout=60,
        )
        assert answer.status_code < 500, answer.text
        return answer

    def artifact(self, kind: str, artifact_id: str) -> dict[str, Any] | None:
        answer = self.admin("GET", f"/{kind}/{artifact_id}")
        if answer.status_code == 404:
            return None
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]  # type: ignore[no-any-return]

    def artifacts(self, kind: str) -> list[dict[str, Any]]:
        answer = self.admin("GET", f"/{kind}")
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]  # type: ignore[no-any-return]

    def everything(self) -> dict[str, Any]:
        """What the site holds, as the admin API and the native API show it (for "nothing changed")."""
        return {
            **{kind: self.artifacts(kind) for kind in KINDS},
            "flows": sorted((f["name"], f["version"]) for f in self.native("GET", "/flows").json()["items"]),
            "connectors": sorted(
                (c["name"], c["version"]) for c in self.native("GET", "/connectors").json()["items"]
            ),
        }


KINDS = ("custom-commands", "awe-tasks", "connection-profiles")


def eft_login(stack: Stack, username: str, password: str) -> requests.Response:
    """EFT's admin login as vendor scripts send it: a JSON body without a JSON content type."""
    body = {"userName": username, "password": password, "authType": "EFT"}
    return requests.post(stack.url("/admin/v1/authentication"), data=json.dumps(body), timeout=60)


def _site(stack: Stack, name: str) -> Site:
    """A contract with an org admin and one full workspace named `name` (made by the platform admin)."""
    root = stack.login(*ADMIN)
    tag = uuid.uuid4().hex[:8]
    cid = stack.call("POST", f"{A}/contracts", {"name": f"prop-{tag}"}, root).json()["id"]
    username, password = f"eftadmin-{tag}", f"eftadmin-{tag}-password"
    made = stack.call(
        "POST",
        f"{A}/contracts/{cid}/members",
        {"username": username, "password": password, "role": "org_admin", "privileges": []},
        root,
    )
    assert made.status_code == 201, made.text
    made = stack.call("POST", f"{A}/contracts/{cid}/workspaces", {"name": name, "kind": "full"}, root)
    assert made.status_code == 201, made.text
    login = eft_login(stack, username, password)
    assert login.status_code == 200, login.text
    return Site(
        stack,
        made.json()["id"],
        name,
        username,
        password,
        stack.login(username, password),
        login.json()["authToken"],
    )


@dataclass
class Pair:
    staging: Site
    production: Site

    def propagate(
        self, kind: str, artifact_id: str, *, call_id: str | int = "1", **params: Any
    ) -> requests.Response:
        """`propagate` of staging's artifact to production (params override the right ones)."""
        body = {
            "jsonrpc": "2.0",
            "method": "propagate",
            "id": call_id,
            "params": {**target_params(self.production), **params},
        }
        return self.staging.admin("POST", f"/{kind}/{artifact_id}", raw=json.dumps(body))


def target_params(site: Site) -> dict[str, str]:
    return {
        "targetEndpoint": site.endpoint,
        "targetSiteName": site.name,
        "targetAdminUsername": site.username,
        "targetAdminPassword": site.password,
    }


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Stack]]:
    """Staging and production, started side by side (each stack allows loopback as an outbound URL)."""
    env = {"FLOWGATE_ADMIN_USERNAME": ADMIN[0], "FLOWGATE_ADMIN_PASSWORD": ADMIN[1]}
    dirs = [tmp_path_factory.mktemp(name) for name in ("stack-staging", "stack-production")]
    with ThreadPoolExecutor(2) as pool:
        starts = [pool.submit(launch, d, env) for d in dirs]
    started = [s.result() for s in starts if s.exception() is None]
    if len(started) < 2:
        for stack in started:
            stack.stop()
        for s in starts:
            s.result()  # raises the failed start's error
    yield started[0], started[1]
    for stack in started:
        stack.stop()


@pytest.fixture
def pair(stacks: tuple[Stack, Stack]) -> Pair:
    """A fresh tenant on each stack: site "staging" on S, site "production" on P."""
    return Pair(_site(stacks[0], "staging"), _site(stacks[1], "production"))


def _command(name: str, **attributes: Any) -> dict[str, Any]:
    return {"data": {"type": "customCommand", "attributes": {"name": name, **attributes}}}


def _final(site: Site, eid: str, timeout: float = 40) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = site.native("GET", f"/executions/{eid}").json()
        if item["status"] in ("success", "error", "cancelled"):
            return item  # type: ignore[no-any-return]
        time.sleep(0.3)
    raise AssertionError(f"execution {eid} did not end in {timeout} s")


def _without_created(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if k != "created"}


# ---- (1) an EFT-style script ----------------------------------------------------------------------


def test_an_eft_style_script_logs_in_lists_sites_and_puts_an_artifact(pair: Pair):
    site = pair.staging
    login = eft_login(site.stack, site.username, site.password)
    assert login.status_code == 200, login.text
    assert set(login.json()) == {"authToken", "permissions"}
    headers = {"Authorization": f"EFTAdminAuthToken {login.json()['authToken']}"}

    listed = requests.get(site.stack.url("/admin/v2/sites"), headers=headers, timeout=60)
    assert listed.status_code == 200, listed.text
    assert listed.headers["Content-Type"].startswith(JSON_API)
    found = [s for s in listed.json()["data"] if s["attributes"]["name"] == "staging"]
    assert [(s["type"], s["id"]) for s in found] == [("site", site.ws)]
    site_id = found[0]["id"]

    base = site.stack.url(f"/Admin/v2/sites/{site_id}/custom-commands")
    command_id = str(uuid.uuid4())
    put = requests.put(
        f"{base}/{command_id}",
        data=json.dumps(_command("nightly-backup", executable="/opt/backup.sh", processTimeOut=120)),
        headers={**headers, "Content-Type": JSON_API},
        timeout=60,
    )
    assert put.status_code == 201, put.text
    assert put.json()["data"]["id"] == command_id
    got = requests.get(f"{base}/{command_id}", headers=headers, timeout=60)
    assert got.status_code == 200, got.text
    assert got.headers["ETag"]
    attributes = got.json()["data"]["attributes"]
    assert (attributes["name"], attributes["executable"], attributes["processTimeOut"]) == (
        "nightly-backup",
        "/opt/backup.sh",
        120,
    )
    # A second PUT is the full representation: what it leaves out takes its default again.
    again = requests.put(
        f"{base}/{command_id}",
        data=json.dumps(_command("nightly-backup", description="d")),
        headers={**headers, "Content-Type": JSON_API},
        timeout=60,
    )
    assert again.status_code == 200, again.text
    replaced = again.json()["data"]["attributes"]
    assert (replaced["executable"], replaced["processTimeOut"], replaced["description"]) == ("", 60, "d")
    # The same API under the lowercase prefix, and with the wrong token scheme nothing is shown.
    lower = requests.get(
        site.stack.url(f"/admin/v2/sites/{site_id}/custom-commands/{command_id}"), headers=headers, timeout=60
    )
    assert lower.json()["data"]["attributes"] == replaced
    assert requests.get(site.stack.url("/admin/v2/sites"), timeout=60).status_code == 401


def test_a_loopback_ip_target_over_http_is_allowed(pair: Pair):
    """The local stacks allow-list loopback (127.0.0.0/8): `http://127.0.0.1:<port>` is a target over
    plain http (an address literal in an allow-listed network, not only an allow-listed host name)."""
    command_id = _make_command(pair.staging)
    answer = pair.propagate(
        "custom-commands",
        command_id,
        targetEndpoint=pair.production.stack.base,  # http://127.0.0.1:<port>
    )
    assert answer.json() == {"jsonrpc": "2.0", "id": "1", "result": "success"}, answer.text


# ---- (2) each kind propagates by id; a second propagation replaces the copy ------------------------


def _make_command(site: Site) -> str:
    command_id = str(uuid.uuid4())
    made = site.admin("PUT", f"/custom-commands/{command_id}", _command("deploy", executable="/opt/deploy"))
    assert made.status_code == 201, made.text
    return command_id


def _change_command(site: Site, command_id: str) -> None:
    patch = {
        "data": {"type": "customCommand", "attributes": {"executable": "/opt/deploy-v2", "processTimeOut": 5}}
    }
    assert site.admin("PATCH", f"/custom-commands/{command_id}", patch).status_code == 200


def _make_flow(site: Site) -> str:
    made = site.native("PUT", "/flows/greeter", {"script": HELLO, "description": "says hello"})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def _change_flow(site: Site, _: str) -> None:
    assert site.native("PUT", "/flows/greeter", {"script": HELLO_2}).status_code == 200


def _make_connector(site: Site) -> str:
    made = site.native(
        "PUT", "/connectors/inventory", {"type": "REST", "value": "url: https://inventory.example.com/v1\n"}
    )
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def _change_connector(site: Site, _: str) -> None:
    changed = site.native(
        "PUT",
        "/connectors/inventory",
        {"type": "REST", "value": "url: https://inventory.example.com/v2\n", "description": "v2"},
    )
    assert changed.status_code == 200, changed.text


KIND_CASES = {
    "custom-commands": (_make_command, _change_command),
    "awe-tasks": (_make_flow, _change_flow),
    "connection-profiles": (_make_connector, _change_connector),
}


@pytest.mark.parametrize("kind", KIND_CASES)
def test_each_kind_propagates_by_id_and_a_second_propagation_replaces_it(pair: Pair, kind: str):
    make, change = KIND_CASES[kind]
    src, dst = pair.staging, pair.production
    artifact_id = make(src)

    first = pair.propagate(kind, artifact_id)
    assert (first.status_code, first.json()) == (200, {"jsonrpc": "2.0", "id": "1", "result": "success"})
    copy_ = dst.artifact(kind, artifact_id)
    original = src.artifact(kind, artifact_id)
    assert copy_ is not None
    assert original is not None
    assert copy_["id"] == artifact_id
    assert _without_created(copy_["attributes"]) == _without_created(original["attributes"])
    assert [a["id"] for a in dst.artifacts(kind)] == [artifact_id]
    assert pair.propagate(kind, artifact_id).json()["result"] == "unchanged"

    change(src, artifact_id)
    changed = src.artifact(kind, artifact_id)
    assert changed is not None
    assert changed["attributes"] != original["attributes"]
    second = pair.propagate(kind, artifact_id)
    assert second.json() == {"jsonrpc": "2.0", "id": "1", "result": "success"}, second.text
    replaced = dst.artifact(kind, artifact_id)
    assert replaced is not None
    assert _without_created(replaced["attributes"]) == _without_created(changed["attributes"])
    assert [a["id"] for a in dst.artifacts(kind)] == [artifact_id]  # replaced by id, not added

    # The native API on production shows the same artifact by name, with the same id.
    if kind == "awe-tasks":
        flow = dst.native("GET", "/flows/greeter").json()
        assert (flow["id"], flow["script"], flow["version"]) == (artifact_id, HELLO_2, 2)
        started = dst.native("POST", "/executions", {"flow": "greeter"})
        assert started.status_code == 202, started.text
        done = _final(dst, started.json()["id"])
        assert (done["status"], done["message"], done["log"]) == ("success", "hello v2", ["propagated"]), done
    if kind == "connection-profiles":
        connector = dst.native("GET", "/connectors/inventory").json()
        assert (connector["id"], connector["value"], connector["description"]) == (
            artifact_id,
            "url: https://inventory.example.com/v2\n",
            "v2",
        )


# ---- (3) seed 004's two examples ----------------------------------------------------------------


def _seed_body(template: str, target: Site) -> str:
    """The seed's text with the target's endpoint, site name and credentials as the values (the
    parameter names stay: `"targetAdminPassword": "targetAdminPassword"` names itself)."""
    import re

    text = template.replace('"http://target:4450"', json.dumps(target.endpoint))
    text = text.replace('"targetSite"', json.dumps(target.name))
    text = re.sub(r'(:\s*)"targetAdminLogin"', lambda m: m.group(1) + json.dumps(target.username), text)
    text = re.sub(r'(:\s*)"targetAdminPassword"', lambda m: m.group(1) + json.dumps(target.password), text)
    assert json.loads(text)["params"] == target_params(target)
    return text


def test_the_seed_success_example(pair: Pair):
    src, dst = pair.staging, pair.production
    assert (
        src.admin(
            "PUT", f"/custom-commands/{SEED_ID}", _command("seed-command", executable="/bin/true")
        ).status_code
        == 201
    )
    body = _seed_body(SEED_SUCCESS_BODY, dst)
    answer = requests.post(
        src.stack.url(f"/Admin/v2/sites/{src.ws}/custom-commands/{SEED_ID}"),
        data=body,
        headers={"Authorization": f"EFTAdminAuthToken {src.eft}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"jsonrpc": "2.0", "id": "1", "result": "success"}
    copied = dst.artifact("custom-commands", SEED_ID)
    assert copied is not None
    assert copied["attributes"]["executable"] == "/bin/true"


def test_the_seed_failure_example(pair: Pair):
    src, dst = pair.staging, pair.production
    before = dst.everything()
    missing = str(uuid.uuid4())
    answer = requests.post(
        src.stack.url(f"/Admin/v2/sites/{src.ws}/custom-commands/{missing}"),
        data=_seed_body(SEED_FAILURE_BODY, dst),
        headers={"Authorization": f"EFTAdminAuthToken {src.eft}"},
        timeout=60,
    )
    assert answer.status_code == 404, answer.text
    assert answer.json() == {
        "jsonrpc": "2.0",
        "id": "1",
        "error": {"code": -32004, "message": f"Not found: custom-command ({missing})"},
    }
    # The seed's own id, absent from this site, answers alike.
    seed = requests.post(
        src.stack.url(f"/Admin/v2/sites/{src.ws}/custom-commands/{SEED_ID}"),
        data=_seed_body(SEED_FAILURE_BODY, dst),
        headers={"Authorization": f"EFTAdminAuthToken {src.eft}"},
        timeout=60,
    )
    assert (seed.status_code, seed.json()["error"]["message"]) == (
        404,
        f"Not found: custom-command ({SEED_ID})",
    )
    for kind, label in (("awe-tasks", "awe-task"), ("connection-profiles", "connection-profile")):
        other = pair.propagate(kind, missing)
        assert (other.status_code, other.json()["error"]) == (
            404,
            {"code": -32004, "message": f"Not found: {label} ({missing})"},
        )
    assert dst.everything() == before


# ---- (4) run-time variables -----------------------------------------------------------------------


def test_a_connector_naming_a_variable_the_target_lacks_fails_until_it_is_defined(pair: Pair):
    src, dst = pair.staging, pair.production
    value = "url: https://%API_HOST%/v1\n"
    assert src.native("PUT", "/connectors/api", {"type": "REST", "value": value}).status_code == 400
    assert src.native("PUT", "/variables/API_HOST", {"value": "staging.example.com"}).status_code == 201
    made = src.native("PUT", "/connectors/api", {"type": "REST", "value": value})
    assert made.status_code == 201, made.text
    connector_id = made.json()["id"]
    before = dst.everything()

    failed = pair.propagate("connection-profiles", connector_id)
    assert failed.status_code == 424, failed.text
    error = failed.json()["error"]
    assert (error["code"], error["data"]["variables"]) == (-32003, ["API_HOST"]), error
    assert failed.json()["id"] == "1"
    assert dst.everything() == before
    assert dst.native("GET", "/connectors/api").status_code == 404

    assert dst.native("PUT", "/variables/API_HOST", {"value": "production.example.com"}).status_code == 201
    done = pair.propagate("connection-profiles", connector_id)
    assert done.json()["result"] == "success", done.text
    copied = dst.native("GET", "/connectors/api").json()
    assert (copied["id"], copied["value"]) == (connector_id, value)  # the reference, not staging's value


# ---- (5) what is not propagated -------------------------------------------------------------------


def test_a_command_keeps_the_targets_user_groups(pair: Pair):
    src, dst = pair.staging, pair.production
    command_id = _make_command(src)
    # Staging's own group assignment must not travel.
    group = str(uuid.uuid4())
    made = src.admin(
        "PUT", f"/user-groups/{group}", {"data": {"type": "userGroup", "attributes": {"name": "ops"}}}
    )
    assert made.status_code == 201, made.text
    document = {
        "data": {
            "type": "customCommand",
            "attributes": {"name": "deploy", "executable": "/opt/deploy"},
            "relationships": {
                "executionPermissions": {
                    "data": {"users": [], "userGroups": [{"type": "userGroup", "id": group}]}
                }
            },
        }
    }
    assert src.admin("PUT", f"/custom-commands/{command_id}", document).status_code == 200
    assert pair.propagate("custom-commands", command_id).json()["result"] == "success"
    created = dst.artifact("custom-commands", command_id)
    assert created is not None
    assert created["relationships"]["executionPermissions"]["data"]["userGroups"] == []  # a new command: none

    # Production's admin assigns production's own group; a later propagation replaces the command
    # but keeps that assignment.
    theirs = str(uuid.uuid4())
    made = dst.admin(
        "PUT", f"/user-groups/{theirs}", {"data": {"type": "userGroup", "attributes": {"name": "prod-ops"}}}
    )
    assert made.status_code == 201, made.text
    assigned = copy.deepcopy({"data": {k: created[k] for k in ("type", "id", "attributes")}})
    assigned["data"]["relationships"] = {
        "executionPermissions": {"data": {"users": [], "userGroups": [{"type": "userGroup", "id": theirs}]}}
    }
    assert dst.admin("PUT", f"/custom-commands/{command_id}", assigned).status_code == 200
    _change_command(src, command_id)
    assert pair.propagate("custom-commands", command_id).json()["result"] == "success"
    replaced = dst.artifact("custom-commands", command_id)
    assert replaced is not None
    assert replaced["attributes"]["executable"] == "/opt/deploy-v2"
    assert replaced["relationships"]["executionPermissions"]["data"]["userGroups"] == [
        {"type": "userGroup", "id": theirs}
    ]


def test_a_flow_stays_in_the_targets_folder(pair: Pair):
    src, dst = pair.staging, pair.production
    flow_id = _make_flow(src)
    assert pair.propagate("awe-tasks", flow_id).json()["result"] == "success"
    created = dst.artifact("awe-tasks", flow_id)
    assert created is not None
    assert created["relationships"]["aweFolder"]["data"] == {"type": "aweFolder", "id": ROOT_FOLDER}

    folder = str(uuid.uuid4())
    made = dst.admin(
        "PUT", f"/awe-tasks-folders/{folder}", {"data": {"type": "aweFolder", "attributes": {"name": "prod"}}}
    )
    assert made.status_code == 201, made.text
    moved = {
        "data": {
            "type": "aweTask",
            "id": flow_id,
            "attributes": _without_created(created["attributes"]),
            "relationships": {"aweFolder": {"data": {"type": "aweFolder", "id": folder}}},
        }
    }
    assert dst.admin("PUT", f"/awe-tasks/{flow_id}", moved).status_code == 200
    _change_flow(src, flow_id)
    assert pair.propagate("awe-tasks", flow_id).json()["result"] == "success"
    replaced = dst.artifact("awe-tasks", flow_id)
    assert replaced is not None
    assert base64.b64decode(replaced["attributes"]["code"]).decode() == HELLO_2
    assert replaced["relationships"]["aweFolder"]["data"] == {"type": "aweFolder", "id": folder}


# ---- (6) bad input through HTTP -------------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every request with `answer` (a status and headers) and keeps what it was sent."""

    seen: list[tuple[str, str, bytes]]
    answer: tuple[int, dict[str, str]]

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, bytes(self.headers) + body))
        status, headers = self.answer
        self.send_response(status)
        for name, value in {**headers, "Content-Length": "0"}.items():
            self.send_header(name, value)
        self.end_headers()

    do_GET = do_POST = do_PUT = _any

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def redirecting() -> Iterator[tuple[str, str, list[tuple[str, str, bytes]]]]:
    """Two targets on 127.0.0.1 that answer 302: one to another host (127.0.0.2, which records what it
    gets), one to another path of its own host; their endpoints and what the other host was sent."""
    servers = []

    def serve(host: str, status: int, headers: dict[str, str], seen: list[tuple[str, str, bytes]]) -> str:
        handler = type("Handler", (_Recorder,), {"seen": seen, "answer": (status, headers)})
        server = http.server.ThreadingHTTPServer((host, 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://{host}:{server.server_address[1]}"

    elsewhere: list[tuple[str, str, bytes]] = []
    other = serve("127.0.0.2", 200, {"Content-Type": "application/json"}, elsewhere)
    to_other = serve("127.0.0.1", 302, {"Location": f"{other}/admin/v1/authentication"}, [])
    to_itself = serve("127.0.0.1", 302, {"Location": "/moved/admin/v1/authentication"}, [])
    yield to_other, to_itself, elsewhere
    for server in servers:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


BAD_PARAMS = {
    "wrong target password": ({"targetAdminPassword": "not-the-password-1"}, 424, -32001),
    "unknown site name": ({"targetSiteName": "nowhere"}, 424, -32002),
    "metadata address": ({"targetEndpoint": "http://169.254.169.254"}, 400, -32008),
    "metadata address with a port": ({"targetEndpoint": "http://169.254.169.254:80/latest"}, 400, -32008),
    "nothing listening": ({"targetEndpoint": f"http://127.0.0.1:{_closed_port()}"}, 424, -32007),
}


@pytest.mark.parametrize("case", BAD_PARAMS)
def test_propagation_failures_have_their_codes_and_change_nothing(pair: Pair, case: str):
    params, status, code = BAD_PARAMS[case]
    src, dst = pair.staging, pair.production
    command_id = _make_command(src)
    before = (src.everything(), dst.everything())
    answer = pair.propagate("custom-commands", command_id, call_id=7, **params)
    assert (answer.status_code, answer.json()["id"], answer.json()["error"]["code"]) == (status, 7, code), (
        answer.text
    )
    assert "not-the-password-1" not in answer.text
    assert dst.password not in answer.text
    assert (src.everything(), dst.everything()) == before


def _redirected(pair: Pair, target: str) -> dict[str, Any]:
    """Propagate to a target that redirects: refused with a 4xx, nothing changed on either side; the error."""
    src, dst = pair.staging, pair.production
    found = [c["id"] for c in src.artifacts("custom-commands") if c["attributes"]["name"] == "deploy"]
    command_id = found[0] if found else _make_command(src)
    before = (src.everything(), dst.everything())
    answer = pair.propagate("custom-commands", command_id, targetEndpoint=target)
    assert answer.status_code in (400, 424), answer.text
    assert dst.password not in answer.text
    assert (src.everything(), dst.everything()) == before
    return answer.json()["error"]  # type: ignore[no-any-return]


def test_a_target_redirecting_elsewhere_is_not_followed(pair: Pair, redirecting: tuple[str, str, list[Any]]):
    to_other, to_itself, elsewhere = redirecting
    error = _redirected(pair, to_other)
    assert (error["code"], error["data"]["status"]) == (-32007, 302), error
    assert elsewhere == []  # the other host got nothing, so never the password
    same_host = _redirected(pair, to_itself)
    assert (same_host["code"], same_host["data"]["status"]) == (-32007, 302), same_host


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", -32700),
        ("propagate please", -32700),
        ('[{"jsonrpc": "2.0", "method": "propagate", "id": "1", "params": {}}]', -32600),
        ("[]", -32600),
    ],
)
def test_calls_that_are_not_one_json_rpc_call_change_nothing(pair: Pair, raw: str, code: int):
    src, dst = pair.staging, pair.production
    command_id = _make_command(src)
    if raw.startswith("[{"):  # a batch of one real call: not taken either
        raw = json.dumps([{"jsonrpc": "2.0", "method": "propagate", "id": "1", "params": target_params(dst)}])
    before = (src.everything(), dst.everything())
    answer = src.admin("POST", f"/custom-commands/{command_id}", raw=raw)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == code
    assert answer.json()["id"] is None
    assert (src.everything(), dst.everything()) == before


# ---- (7) dry run ----------------------------------------------------------------------------------


def test_a_dry_run_compares_and_changes_nothing(pair: Pair):
    src, dst = pair.staging, pair.production
    command_id = _make_command(src)
    before = dst.everything()
    created = pair.propagate("custom-commands", command_id, dryRun=True).json()
    assert (created["result"]["dryRun"], created["result"]["status"]) == (True, "would_create"), created
    assert {"name", "executable"} <= set(created["result"]["fields"])
    assert dst.everything() == before

    assert pair.propagate("custom-commands", command_id).json()["result"] == "success"
    same = pair.propagate("custom-commands", command_id, dryRun=True).json()
    assert same["result"] == {"dryRun": True, "status": "unchanged", "fields": []}

    _change_command(src, command_id)
    copied = dst.everything()
    replace = pair.propagate("custom-commands", command_id, dryRun=True).json()
    assert replace["result"] == {
        "dryRun": True,
        "status": "would_replace",
        "fields": ["executable", "processTimeOut"],
    }
    assert dst.everything() == copied
    target_copy = dst.artifact("custom-commands", command_id)
    assert target_copy is not None
    assert target_copy["attributes"]["executable"] == "/opt/deploy"

    # Flows and connectors alike.
    flow_id = _make_flow(src)
    assert pair.propagate("awe-tasks", flow_id, dryRun=True).json()["result"]["status"] == "would_create"
    assert dst.native("GET", "/flows/greeter").status_code == 404
    assert pair.propagate("awe-tasks", flow_id).json()["result"] == "success"
    _change_flow(src, flow_id)
    flow_dry = pair.propagate("awe-tasks", flow_id, dryRun=True).json()["result"]
    assert (flow_dry["status"], flow_dry["fields"]) == ("would_replace", ["code", "description"])
    assert dst.native("GET", "/flows/greeter").json()["script"] == HELLO


# ---- the README's session -------------------------------------------------------------------------


def test_the_readme_propagation_session_runs_verbatim(stacks: tuple[Stack, Stack]):
    """The README's two-stack session, run by bash against these two stacks (only ports and names differ)."""
    import re
    import subprocess

    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- e2e: readme-propagation -->\s*```bash\n(.*?)```", readme, re.S)
    assert block, "README.md lost the propagation session"
    staging, production = stacks
    suffix = uuid.uuid4().hex[:6]
    script = (
        block.group(1)
        .replace("http://127.0.0.1:3000", staging.base)
        .replace("http://127.0.0.1:3001", production.base)
        .replace(
            '"username": "admin", "password": "admin-password-change-me"',
            json.dumps({"username": ADMIN[0], "password": ADMIN[1]})[1:-1],
        )
        .replace("propco", f"propco-{suffix}")
        .replace("propagator", f"propagator-{suffix}")
    )
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.replace(" ", "").replace("\n", "")
    assert out.count('"result":"success"') >= 3, done.stdout
    assert '"status":"would_replace"' in out, done.stdout
    assert '"status":"success","message":"hellofromstaging"' in out, done.stdout
    assert "url:https://%API_HOST%/v1" in out, done.stdout
