"""Identity and tenancy through the local stack over real HTTP."""

from __future__ import annotations

import re
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tests.e2e.conftest import ADMIN, Stack, launch

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
A = "/api/latest"


def _tenant(stack: Stack, root_token: str, tag: str) -> dict[str, str]:
    """A contract with an org admin and a plain member, and a limited workspace the admin made."""
    contract = stack.call("POST", f"{A}/contracts", {"name": f"e2e-{tag}"}, root_token)
    assert contract.status_code == 201, contract.text
    cid = contract.json()["id"]
    ids = {}
    for who, role in (("admin", "org_admin"), ("member", "member")):
        made = stack.call(
            "POST",
            f"{A}/contracts/{cid}/members",
            {"username": f"{who}-{tag}", "password": f"{who}-{tag}-password", "role": role, "privileges": []},
            root_token,
        )
        assert made.status_code == 201, made.text
        ids[who] = made.json()["id"]
    admin = stack.login(f"admin-{tag}", f"admin-{tag}-password")
    ws = stack.call(
        "POST", f"{A}/contracts/{cid}/workspaces", {"name": f"ws-{tag}", "kind": "limited"}, admin
    )
    assert ws.status_code == 201, ws.text
    assert ws.json()["kind"] == "limited"
    return {
        "cid": cid,
        "ws": ws.json()["id"],
        "admin": admin,
        "admin_id": ids["admin"],
        "member": stack.login(f"member-{tag}", f"member-{tag}-password"),
        "member_id": ids["member"],
    }


def test_contract_member_workspace_and_tenancy(stack: Stack, root_token: str):
    tag = uuid.uuid4().hex[:6]
    a, b = _tenant(stack, root_token, f"a{tag}"), _tenant(stack, root_token, f"b{tag}")
    # the owner reads its workspace; the other contract gets 404 on every route, and nothing changes
    assert stack.call("GET", f"{A}/workspaces/{a['ws']}", token=a["admin"]).status_code == 200
    probes = [
        ("GET", f"{A}/workspaces/{a['ws']}", None),
        ("PATCH", f"{A}/workspaces/{a['ws']}", {"name": "hijacked"}),
        ("PATCH", f"{A}/workspaces/{a['ws']}", {"kind": "full"}),
        ("GET", f"{A}/workspaces/{a['ws']}/access", None),
        ("PUT", f"{A}/workspaces/{a['ws']}/access/{b['member_id']}", {"role": "workspace_owner"}),
        ("DELETE", f"{A}/workspaces/{a['ws']}/access/{a['admin_id']}", None),
        ("GET", f"{A}/contracts/{a['cid']}", None),
        ("GET", f"{A}/contracts/{a['cid']}/members", None),
        ("GET", f"{A}/contracts/{a['cid']}/workspaces", None),
        ("POST", f"{A}/contracts/{a['cid']}/workspaces", {"name": "planted"}),
    ]
    for method, path, body in probes:
        for token in (b["admin"], b["member"]):
            answer = stack.call(method, path, body, token)
            assert answer.status_code == 404, (method, path, answer.text)
            assert set(answer.json()["error"]) == {"code", "message"}
    after = stack.call("GET", f"{A}/workspaces/{a['ws']}", token=a["admin"]).json()
    assert (after["name"], after["kind"], after["version"]) == (f"ws-a{tag}", "limited", 1)
    # a plain member of the same contract cannot change the kind (403); the platform admin can
    stack.call("PUT", f"{A}/workspaces/{a['ws']}/access/{a['member_id']}", {"role": "member"}, a["admin"])
    refused = stack.call("PATCH", f"{A}/workspaces/{a['ws']}", {"kind": "full"}, a["member"])
    assert refused.status_code == 403
    assert (
        stack.call("PATCH", f"{A}/workspaces/{a['ws']}", {"kind": "full"}, root_token).json()["kind"]
        == "full"
    )
    # no token at all is 401
    assert stack.call("GET", f"{A}/workspaces/{a['ws']}").status_code == 401


def test_basic_auth_and_machine_tokens_over_http(stack: Stack, root_token: str):
    tag = uuid.uuid4().hex[:6]
    t = _tenant(stack, root_token, f"c{tag}")
    basic = requests.get(
        stack.url(f"{A}/workspaces/{t['ws']}"), auth=(f"admin-c{tag}", f"admin-c{tag}-password"), timeout=30
    )
    assert basic.status_code == 200
    wrong = requests.get(stack.url(f"{A}/auth/me"), auth=(f"admin-c{tag}", "nope-nope-nope"), timeout=30)
    assert wrong.status_code == 401
    assert "Basic" in wrong.headers["WWW-Authenticate"]
    machine = stack.call("POST", f"{A}/auth/tokens", {"name": "deployer"}, t["admin"]).json()
    assert stack.call("GET", f"{A}/workspaces/{t['ws']}", token=machine["token"]).status_code == 200


def test_bad_input_over_http(stack: Stack, root_token: str):
    headers = {"Authorization": f"Bearer {root_token}", "Content-Type": "application/json"}
    malformed = requests.post(stack.url(f"{A}/contracts"), data="{oops", headers=headers, timeout=30)
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "malformed_json"
    wrong_type = stack.call("POST", f"{A}/contracts", {"name": 42}, root_token)
    assert wrong_type.status_code == 400
    assert "name" in wrong_type.json()["error"]["message"]
    huge = requests.post(
        stack.url(f"{A}/contracts"), data='{"name": "' + "x" * 200_000 + '"}', headers=headers, timeout=30
    )
    assert huge.status_code == 413
    text = requests.post(
        stack.url(f"{A}/contracts"),
        data="name=x",
        headers={**headers, "Content-Type": "text/plain"},
        timeout=30,
    )
    assert text.status_code == 415
    listed = stack.call("GET", f"{A}/contracts", token=root_token).json()["items"]
    assert not any(c["name"] in ("x" * 200_000, "42") for c in listed)
    assert requests.get(stack.url("/api/latest/no-such-route"), timeout=30).status_code in (403, 404)


def test_concurrent_renames_resolve_to_one(stack: Stack, root_token: str):
    tag = uuid.uuid4().hex[:6]
    t = _tenant(stack, root_token, f"d{tag}")
    statuses: list[int] = []
    barrier = threading.Barrier(4)

    def rename(i: int) -> None:
        barrier.wait()
        answer = stack.call(
            "PATCH", f"{A}/workspaces/{t['ws']}", {"name": f"race-{i}"}, t["admin"], headers={"If-Match": "1"}
        )
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=rename, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(statuses)[0] == 200
    assert statuses.count(200) == 1, statuses
    assert all(s in (409, 412) for s in statuses if s != 200)
    assert stack.call("GET", f"{A}/workspaces/{t['ws']}", token=t["admin"]).json()["version"] == 2


def test_openapi_document_is_served(stack: Stack):
    doc = requests.get(stack.url(f"{A}/openapi.json"), timeout=30).json()
    assert "/api/latest/contracts/{cid}/members" in doc["paths"]


def test_a_second_stack_runs_beside_with_a_generated_admin(stack: Stack, tmp_path: Path):
    other = launch(tmp_path, {"FLOWGATE_ADMIN_USERNAME": "", "FLOWGATE_ADMIN_PASSWORD": ""})
    try:
        assert other.base != stack.base
        printed = re.findall(r"username=(\S+) password=(\S+)", other.everything_logged())
        assert len(printed) == 1, "the generated password is printed exactly once"
        token = other.login(*printed[0])
        # the two stacks share nothing: the first stack's admin does not exist in the second
        assert (
            other.call("POST", f"{A}/auth/login", {"username": ADMIN[0], "password": ADMIN[1]}).status_code
            == 401
        )
        assert other.call("GET", f"{A}/contracts", token=token).json()["items"] == []
    finally:
        other.stop()


def test_the_readme_sessions_run_verbatim(stack: Stack):
    """The README's copy-paste sessions, run by bash against this stack (only the port differs)."""
    readme = (ROOT / "README.md").read_text()
    blocks = [
        re.search(rf"<!-- e2e: {name} -->\s*```bash\n(.*?)```", readme, re.S)
        for name in ("readme-session", "readme-flows", "readme-workflow")
    ]
    assert all(blocks), "README.md lost a marked session"
    script = "\n".join(b.group(1) for b in blocks if b).replace("http://127.0.0.1:3000", stack.base)
    script = script.replace("admin-password-change-me", ADMIN[1]).replace(
        "ADMIN_USER=admin", f"ADMIN_USER={ADMIN[0]}"
    )
    suffix = uuid.uuid4().hex[:6]
    script = script.replace("acme", f"acme-{suffix}").replace("alice", f"alice-{suffix}")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.replace(" ", "")
    assert '"kind":"limited"' in out
    assert '"status":"success"' in out
    assert '"status_code":200' in out
    assert '"headers":"vault"' in out
    assert '"headers":"***"' in out
    assert "not-a-real-key" not in done.stdout
    assert '"state":"FINISHED_SUCCESSFULLY"' in out
    assert '"workflow":"approvedbythechangeboard"' in out
    assert '"state":"ON"' in out
