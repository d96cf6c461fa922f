"""Workspace linking (seed 000) between two local stacks: two processes, two moto servers, real HTTP.

Stack A is the controlling deployment, stack B the controlled one. The test also plays a peer itself
(it holds the keys it generated) to try the attacks the exchange must refuse.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from flowgate.sync.keys import KeyPair, generate
from flowgate.sync.signing import sign_request
from tests.e2e.conftest import ADMIN, Stack, launch

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-linking")]
A = "/api/latest"
# Short long polls so that a listening side's work leaves within seconds, and one round per trigger
# (the local stack runs one sender invocation at a time).
LINKING = "SyncLongPollSeconds=2 SyncPollSeconds=0"

# Seed 000's example, verbatim but for its two placeholders.
SEED_EXAMPLE = """import flow_api
def handler(system: flow_api.System, this: flow_api.Execution, inputs: dict):
    this.flow(
        'remote-hello',
        remote_workspace_name='link-to-b',
    )
    return this.success('all done')
"""
REMOTE_HELLO = """import flow_api
def handler(system: flow_api.System, this: flow_api.Execution, inputs: dict):
    this.log('hello from the linked workspace')
    return {'greeting': 'hello ' + inputs.get('who', 'nobody'), 'twice': inputs.get('n', 0) * 2}
"""
WAITS_FOR_OUTPUTS = """import flow_api
def handler(system: flow_api.System, this: flow_api.Execution, inputs: dict):
    child = this.flow('remote-hello', remote_workspace_name='link-to-b', run=False, who='parent', n=21)
    child.run_async()
    child.wait()
    return {'child': child.get('output_value')}
"""


@dataclass
class Tenant:
    stack: Stack
    ws: str
    admin: str  # an org admin's token
    member: str  # a member's token (may use the workspace, not configure links)

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> requests.Response:
        return self.stack.call(method, f"{A}/workspaces/{self.ws}{path}", body, token or self.admin)


def _tenant(stack: Stack) -> Tenant:
    root = stack.login(*ADMIN)
    tag = uuid.uuid4().hex[:8]
    cid = stack.call("POST", f"{A}/contracts", {"name": f"link-{tag}"}, root).json()["id"]
    ids = {}
    for who, role in (("admin", "org_admin"), ("member", "member")):
        made = stack.call(
            "POST",
            f"{A}/contracts/{cid}/members",
            {"username": f"{who}-{tag}", "password": f"{who}-{tag}-password", "role": role, "privileges": []},
            root,
        )
        assert made.status_code == 201, made.text
        ids[who] = made.json()["id"]
    admin = stack.login(f"admin-{tag}", f"admin-{tag}-password")
    made = stack.call("POST", f"{A}/contracts/{cid}/workspaces", {"name": "ops", "kind": "full"}, root)
    assert made.status_code == 201, made.text
    ws = made.json()["id"]
    member = stack.login(f"member-{tag}", f"member-{tag}-password")
    assert stack.call("PUT", f"{A}/workspaces/{ws}/access/{ids['member']}", {"role": "member"}, admin).ok
    return Tenant(stack, ws, admin, member)


def _until(predicate: Any, timeout: float = 40, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _final(t: Tenant, eid: str, timeout: float = 40) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        item = t.call("GET", f"/executions/{eid}").json()
        return item if item["status"] in ("success", "error", "cancelled") else None

    return _until(ended, timeout, f"execution {eid} to end")  # type: ignore[no-any-return]


@dataclass
class Link:
    a: Tenant
    b: Tenant
    k1: KeyPair  # A's pair
    k2: KeyPair  # B's pair


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Stack]]:
    env = {"FLOWGATE_ADMIN_USERNAME": ADMIN[0], "FLOWGATE_ADMIN_PASSWORD": ADMIN[1]}
    a = launch(tmp_path_factory.mktemp("stack-a"), env, extra_overrides=LINKING)
    try:
        b = launch(tmp_path_factory.mktemp("stack-b"), env, extra_overrides=LINKING)
    except BaseException:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


def _inbound(stack: Stack, name: str) -> str:
    return f"{stack.base}{A}/sync_config/{name}/sync"


@pytest.fixture(scope="module")
def link(stacks: tuple[Stack, Stack]) -> Link:
    """Seed 000's configuration: A controls B; key 1 is A's, key 2 is B's."""
    a, b = _tenant(stacks[0]), _tenant(stacks[1])
    k1, k2 = generate(), generate()
    made = b.call(
        "PUT",
        "/sync_config/link-from-a",
        {"enabled": True, "own_private_key": k2.private_pem, "remote_public_key": k1.public_pem},
    )
    assert made.status_code == 201, made.text
    made = a.call(
        "PUT",
        "/sync_config/link-to-b",
        {
            "enabled": True,
            "remote_url": _inbound(b.stack, "link-from-a"),
            "own_private_key": k1.private_pem,
            "remote_public_key": k2.public_pem,
        },
    )
    assert made.status_code == 201, made.text
    for name, script in (
        ("remote-hello", REMOTE_HELLO),
        ("main", SEED_EXAMPLE),
        ("waits", WAITS_FOR_OUTPUTS),
    ):
        assert a.call("PUT", f"/flows/{name}", {"script": script}).status_code == 201
    return Link(a, b, k1, k2)


def test_the_seed_example_runs_the_flow_in_the_linked_workspace(link: Link):
    started = link.a.call("POST", "/executions", {"flow": "main"})
    assert started.status_code == 202, started.text

    done = _final(link.a, started.json()["id"])

    health = link.a.call("GET", "/sync_config/link-to-b").json()["health"]
    assert (done["status"], done["message"]) == ("success", "all done"), (done, health)
    children = [e for e in link.a.call("GET", "/executions").json()["items"] if e["parent"] == done["id"]]
    assert len(children) == 1
    child = link.a.call("GET", f"/executions/{children[0]['id']}").json()
    assert child["status"] == "success"
    assert child["remote"]["sync_config"] == "link-to-b"
    assert child["outputs"] == {"greeting": "hello nobody", "twice": 0}
    assert child["log"] == ["hello from the linked workspace"]


def test_outputs_come_back_to_wait_and_get(link: Link):
    started = link.a.call("POST", "/executions", {"flow": "waits"})
    done = _final(link.a, started.json()["id"])
    assert done["status"] == "success", done
    assert done["outputs"] == {"child": {"greeting": "hello parent", "twice": 42}}


def test_the_remote_shows_the_script_and_its_origin_and_has_no_flow(link: Link):
    started = link.a.call(
        "POST",
        "/executions",
        {"flow": "remote-hello", "inputs": {"who": "api"}, "remote_workspace_name": "link-to-b"},
    )
    assert started.status_code == 202, started.text
    mine = _final(link.a, started.json()["id"])
    assert mine["outputs"]["greeting"] == "hello api"
    theirs = link.b.call("GET", f"/executions/{mine['remote']['remote_execution_id']}").json()
    assert theirs["script"] == REMOTE_HELLO
    assert theirs["flow"] == "remote-hello"
    assert theirs["origin"]["sync_config"] == "link-from-a"
    assert theirs["origin"]["execution_id"] == mine["id"]
    assert theirs["origin"]["key_fingerprint"] == link.k1.fingerprint
    assert link.b.call("GET", "/flows/remote-hello").status_code == 404
    health = link.a.call("GET", "/sync_config/link-to-b").json()["health"]
    assert health["last_success_at"]
    assert health["peer_key_fingerprint"] == link.k2.fingerprint


def test_a_remote_error_fails_the_child(link: Link):
    script = "def handler(system, this, inputs):\n    raise RuntimeError('only the remote network knows')\n"
    assert link.a.call("PUT", "/flows/breaks", {"script": script}).status_code == 201
    started = link.a.call("POST", "/executions", {"flow": "breaks", "remote_workspace_name": "link-to-b"})
    done = _final(link.a, started.json()["id"])
    assert done["status"] == "error"
    assert "only the remote network knows" in done["message"]


def test_keys_are_never_shown_and_members_may_not_configure(link: Link):
    shown = link.a.call("GET", "/sync_config/link-to-b")
    assert shown.status_code == 200
    text = shown.text
    assert "PRIVATE KEY" not in text
    assert link.k2.public_pem.strip() not in text
    view = shown.json()
    assert view["own_key_fingerprint"] == link.k1.fingerprint
    assert view["remote_key_fingerprint"] == link.k2.fingerprint
    assert view["own_public_key"].strip() == link.k1.public_pem.strip()
    assert link.a.call("GET", "/sync_config/link-to-b", token=link.a.member).status_code == 403
    assert link.a.call("GET", "/sync_config", token=link.a.member).status_code == 403


# ---- the exchange, attacked: the test is a peer that holds key 1 -------------------------------------


def _signed(link: Link, body: bytes, *, url: str | None = None, **kw: Any) -> dict[str, str]:
    from flowgate.sync.keys import private_key

    key = private_key(kw.pop("pem", link.k1.private_pem), "key")
    return sign_request(key, "POST", url or _inbound(link.b.stack, "link-from-a"), body, **kw)


def _post(link: Link, body: bytes, headers: dict[str, str], name: str = "link-from-a") -> requests.Response:
    return requests.post(_inbound(link.b.stack, name), data=body, headers=headers, timeout=30)


def _post_raw(link: Link, body: bytes, headers: list[tuple[str, str]]) -> int:
    """POST with headers as given, a name twice if listed twice (requests would merge them)."""
    import http.client
    from urllib.parse import urlsplit

    target = urlsplit(_inbound(link.b.stack, "link-from-a"))
    connection = http.client.HTTPConnection(target.hostname or "", target.port, timeout=30)
    try:
        connection.putrequest("POST", target.path)
        for name, value in [*headers, ("Content-Length", str(len(body)))]:
            connection.putheader(name, value)
        connection.endheaders(body)
        return connection.getresponse().status
    finally:
        connection.close()


def _run_message(execution_id: str) -> bytes:
    message = {
        "kind": "run",
        "id": f"run:{execution_id}",
        "execution_id": execution_id,
        "flow": "injected",
        "script": "def handler(system, this, inputs):\n    return {'ran': True}\n",
    }
    return json.dumps({"v": 1, "messages": [message]}).encode()


def test_a_signed_request_is_answered_and_its_replay_refused(link: Link):
    body = json.dumps({"v": 1}).encode()
    headers = _signed(link, body)
    first = _post(link, body, headers)
    assert first.status_code == 200, first.text
    assert first.headers["Signature"]
    assert first.headers["Content-Digest"]
    again = _post(link, body, headers)
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "replayed_nonce"


def test_attacks_are_refused_with_401_and_change_nothing(link: Link):
    eid = str(uuid.uuid4())
    body = _run_message(eid)
    good = _signed(link, body)
    other = generate()
    cases = {
        "one body byte changed": (body.replace(b"injected", b"injectee"), good),
        "json re-serialized": (json.dumps(json.loads(body), indent=1).encode(), good),
        "signature missing": (body, {k: v for k, v in good.items() if k != "Signature"}),
        "signature empty": (body, {**good, "Signature": ""}),
        "signature not base64": (body, {**good, "Signature": "sig1=:not base64!:"}),
        "signature 10 KB": (body, {**good, "Signature": "sig1=:" + "A" * 10_240 + ":"}),
        "unknown key": (body, _signed(link, body, pem=other.private_pem)),
        "created 301 s ago": (body, _signed(link, body, created=_ago(301))),
        "created 301 s ahead": (body, _signed(link, body, created=_ago(-301))),
        "another URL signed": (body, _signed(link, body, url=_inbound(link.b.stack, "elsewhere"))),
    }
    for what, (sent, headers) in cases.items():
        answer = _post(link, sent, headers)
        assert answer.status_code == 401, (what, answer.status_code, answer.text)
    duplicated = _post_raw(link, body, [*good.items(), ("Signature", good["Signature"])])
    assert duplicated == 401
    assert link.b.call("GET", f"/executions/{_their_id(link, eid)}").status_code == 404
    # 299 s old still verifies (and then runs the message)
    assert _post(link, body, _signed(link, body, created=_ago(299, toward_now=True))).status_code == 200


def test_an_unknown_config_name_gets_the_same_answer_as_a_bad_signature(link: Link):
    body = json.dumps({"v": 1}).encode()
    unknown = _post(link, body, _signed(link, body, url=_inbound(link.b.stack, "nope")), name="nope")
    bad = _post(link, body, {**_signed(link, body), "Signature": "sig1=:AAAA:"})
    assert unknown.status_code == bad.status_code == 401
    assert unknown.json() == bad.json()


def test_a_status_naming_an_execution_the_link_did_not_start_is_refused(link: Link):
    # B's config is controlled: a status (controlled -> controlling) sent to it is refused whole
    started = link.a.call("POST", "/executions", {"flow": "remote-hello"})  # a local run in A
    local = _final(link.a, started.json()["id"])
    status = {
        "kind": "status",
        "id": "status:forged",
        "execution_id": local["id"],
        "remote_execution_id": str(uuid.uuid4()),
        "status": "error",
        "message": "forged",
    }
    body = json.dumps({"v": 1, "messages": [status]}).encode()
    # A peer holding B's key (key 2) tells A's controlling config about an execution it never sent
    headers = sign_request(_private(link.k2), "POST", _inbound(link.a.stack, "link-to-b"), body)
    answer = requests.post(_inbound(link.a.stack, "link-to-b"), data=body, headers=headers, timeout=30)
    assert answer.status_code == 403, answer.text
    assert link.a.call("GET", f"/executions/{local['id']}").json()["status"] == "success"


def _private(pair: KeyPair) -> Any:
    from flowgate.sync.keys import private_key

    return private_key(pair.private_pem, "key")


def _their_id(link: Link, peer_execution_id: str) -> str:
    config_id = link.b.call("GET", "/sync_config/link-from-a").json()["id"]
    from flowgate.sync.apply import execution_id_for

    return execution_id_for(config_id, peer_execution_id)


def _ago(seconds: int, *, toward_now: bool = False) -> Any:
    """`created` that many whole seconds before now (negative: ahead). The header carries whole
    seconds, so the stamp is rounded away from now (a refusal must not slip into the window by the
    signer's truncation), or toward it (an acceptance must not slip out by the request's latency)."""
    import datetime as dt
    import math

    now = time.time()
    away = (seconds > 0) != toward_now
    stamp = (math.floor(now) if away else math.ceil(now)) - seconds
    return dt.datetime.fromtimestamp(stamp, dt.UTC)


def test_bad_configs_are_refused(link: Link):
    weak = "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAK\n-----END PUBLIC KEY-----\n"
    cases = {
        "garbage key": {"own_private_key": "garbage", "remote_public_key": link.k2.public_pem},
        "private as public": {
            "own_private_key": link.k1.private_pem,
            "remote_public_key": link.k1.private_pem,
        },
        "weak key": {"own_private_key": link.k1.private_pem, "remote_public_key": weak},
        "http remote": {
            "own_private_key": link.k1.private_pem,
            "remote_public_key": link.k2.public_pem,
            "remote_url": "http://example.com/api/latest/sync_config/x/sync",
        },
        "metadata remote": {
            "own_private_key": link.k1.private_pem,
            "remote_public_key": link.k2.public_pem,
            "remote_url": "https://169.254.169.254/latest/meta-data",
        },
        "bad ca": {
            "own_private_key": link.k1.private_pem,
            "remote_public_key": link.k2.public_pem,
            "ca_certificate": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
        },
    }
    for what, body in cases.items():
        answer = link.a.call("PUT", "/sync_config/refused", body)
        assert answer.status_code == 400, (what, answer.text)
        assert link.k1.private_pem.splitlines()[1] not in answer.text  # no key is echoed
    assert link.a.call("GET", "/sync_config/refused").status_code == 404
    # names are unique in the deployment: B's name taken in another tenant of stack B
    other = _tenant(link.b.stack)
    taken = other.call(
        "PUT",
        "/sync_config/link-from-a",
        {"own_private_key": link.k1.private_pem, "remote_public_key": link.k2.public_pem},
    )
    assert taken.status_code == 409
    assert other.call("GET", "/sync_config/link-from-a").status_code == 404
    # and another tenant cannot run through this tenant's link, nor learn that it exists
    assert other.call("PUT", "/flows/remote-hello", {"script": REMOTE_HELLO}).status_code == 201
    borrowed = other.call(
        "POST", "/executions", {"flow": "remote-hello", "remote_workspace_name": "link-from-a"}
    )
    assert borrowed.status_code == 404, borrowed.text
    unknown = other.call(
        "POST", "/executions", {"flow": "remote-hello", "remote_workspace_name": "no-such-link"}
    )
    assert unknown.json()["error"]["message"] == borrowed.json()["error"]["message"].replace(
        "link-from-a", "no-such-link"
    )


def test_the_controlled_side_behind_nat_dials_out(stacks: tuple[Stack, Stack]):
    """C (controlling, in stack A) listens; D (controlled, in stack B) has the remote_url and dials out.
    Stack A never connects to stack B for this link: C has no URL to connect to."""
    c, d = _tenant(stacks[0]), _tenant(stacks[1])
    kc, kd = generate(), generate()
    made = c.call(
        "PUT",
        "/sync_config/nat-controller",
        {"role": "controlling", "own_private_key": kc.private_pem, "remote_public_key": kd.public_pem},
    )
    assert made.status_code == 201, made.text
    assert made.json()["dials_out"] is False
    made = d.call(
        "PUT",
        "/sync_config/nat-laptop",
        {
            "role": "controlled",
            "remote_url": _inbound(c.stack, "nat-controller"),
            "own_private_key": kd.private_pem,
            "remote_public_key": kc.public_pem,
        },
    )
    assert made.status_code == 201, made.text
    assert c.call("PUT", "/flows/remote-hello", {"script": REMOTE_HELLO}).status_code == 201
    started = c.call(
        "POST",
        "/executions",
        {"flow": "remote-hello", "inputs": {"who": "nat"}, "remote_workspace_name": "nat-controller"},
    )
    done = _final(c, started.json()["id"])
    assert done["status"] == "success", done
    assert done["outputs"]["greeting"] == "hello nat"


# ---- more links between the two stacks: each test makes its own tenants and configs ---------------


def _pair(
    controlling: Tenant,
    controlled: Tenant,
    names: tuple[str, str],
    *,
    url: str | None = None,
    **fields: Any,
) -> tuple[KeyPair, KeyPair]:
    """A controlling config `names[0]` in `controlling` that dials `names[1]` in `controlled` (or `url`)."""
    kc, kd = generate(), generate()
    made = controlled.call(
        "PUT",
        f"/sync_config/{names[1]}",
        {"own_private_key": kd.private_pem, "remote_public_key": kc.public_pem},
    )
    assert made.status_code == 201, made.text
    made = controlling.call(
        "PUT",
        f"/sync_config/{names[0]}",
        {
            "remote_url": url or _inbound(controlled.stack, names[1]),
            "own_private_key": kc.private_pem,
            "remote_public_key": kd.public_pem,
            **fields,
        },
    )
    assert made.status_code == 201, made.text
    return kc, kd


def _remote_run(t: Tenant, link_name: str, flow: str = "remote-hello", **inputs: Any) -> str:
    started = t.call(
        "POST", "/executions", {"flow": flow, "inputs": inputs, "remote_workspace_name": link_name}
    )
    assert started.status_code == 202, started.text
    return str(started.json()["id"])


def _linked_executions(t: Tenant, sync_config: str) -> list[dict[str, Any]]:
    items = t.call("GET", "/executions?limit=100").json()["items"]
    return [e for e in items if (e.get("origin") or {}).get("sync_config") == sync_config]


def test_bidirectional_control_with_two_pairs(stacks: tuple[Stack, Stack]):
    a, b = _tenant(stacks[0]), _tenant(stacks[1])
    _pair(a, b, ("a-runs-in-b", "b-run-by-a"))
    _pair(b, a, ("b-runs-in-a", "a-run-by-b"))
    for t in (a, b):
        assert t.call("PUT", "/flows/remote-hello", {"script": REMOTE_HELLO}).status_code == 201
    there = _final(a, _remote_run(a, "a-runs-in-b", who="b"))
    back = _final(b, _remote_run(b, "b-runs-in-a", who="a"))
    assert (there["status"], there["outputs"]["greeting"]) == ("success", "hello b")
    assert (back["status"], back["outputs"]["greeting"]) == ("success", "hello a")
    # each direction needs its own pair: the controlled config does not start runs
    refused = b.call("POST", "/executions", {"flow": "remote-hello", "remote_workspace_name": "b-run-by-a"})
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "link_controlled"


def test_cancelling_the_execution_cancels_the_remote_run(stacks: tuple[Stack, Stack]):
    a, b = _tenant(stacks[0]), _tenant(stacks[1])
    _pair(a, b, ("cancel-to-b", "cancel-from-a"))
    slow = "import time\ndef handler(system, this, inputs):\n    time.sleep(4)\n    return {'done': True}\n"
    assert a.call("PUT", "/flows/slow", {"script": slow}).status_code == 201
    eid = _remote_run(a, "cancel-to-b", flow="slow")
    running = _until(lambda: _linked_executions(b, "cancel-from-a"), what="the remote run to start")
    assert a.call("POST", f"/executions/{eid}/cancel").json()["status"] == "cancelled"
    theirs = _until(
        lambda: b.call("GET", f"/executions/{running[0]['id']}").json()["status"] == "cancelled",
        what="the remote run to be cancelled",
    )
    assert theirs
    assert a.call("GET", f"/executions/{eid}").json()["status"] == "cancelled"

    # a parent whose child runs remotely: cancelling the parent cancels the remote run too
    parent = (
        "def handler(system, this, inputs):\n"
        "    child = this.flow('slow', remote_workspace_name='cancel-to-b', run=False)\n"
        "    child.run_async()\n"
        "    child.wait()\n"
    )
    assert a.call("PUT", "/flows/parent", {"script": parent}).status_code == 201
    pid = a.call("POST", "/executions", {"flow": "parent"}).json()["id"]
    second = _until(
        lambda: [e for e in _linked_executions(b, "cancel-from-a") if e["id"] != running[0]["id"]],
        what="the parent's remote child to start",
    )
    assert a.call("POST", f"/executions/{pid}/cancel").json()["status"] == "cancelled"
    assert _until(
        lambda: b.call("GET", f"/executions/{second[0]['id']}").json()["status"] == "cancelled",
        what="the remote child to be cancelled with its parent",
    )


def test_key_rotation_without_a_failed_exchange(stacks: tuple[Stack, Stack]):
    a, b = _tenant(stacks[0]), _tenant(stacks[1])
    _, kd = _pair(a, b, ("rotate-to-b", "rotate-from-a"))
    assert a.call("PUT", "/flows/remote-hello", {"script": REMOTE_HELLO}).status_code == 201
    new = generate()
    # A accepts B's next key alongside the current one ...
    view = a.call("GET", "/sync_config/rotate-to-b").json()
    changed = a.call(
        "PUT",
        "/sync_config/rotate-to-b",
        {"remote_url": view["remote_url"], "remote_public_key_next": new.public_pem},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["remote_key_next_fingerprint"] == new.fingerprint
    assert _final(a, _remote_run(a, "rotate-to-b"))["status"] == "success"  # B still signs with the old key
    # ... B switches to the new key ...
    assert (
        b.call("PUT", "/sync_config/rotate-from-a", {"own_private_key": new.private_pem}).status_code == 200
    )
    assert _final(a, _remote_run(a, "rotate-to-b"))["status"] == "success"
    health = a.call("GET", "/sync_config/rotate-to-b").json()["health"]
    assert health["peer_key_fingerprint"] == new.fingerprint
    # ... and A retires the old one by hand
    retired = a.call(
        "PUT",
        "/sync_config/rotate-to-b",
        {
            "remote_url": view["remote_url"],
            "remote_public_key": new.public_pem,
            "remote_public_key_next": None,
        },
    )
    assert retired.json()["remote_key_fingerprint"] == new.fingerprint
    assert retired.json()["remote_key_next_fingerprint"] is None
    assert retired.json()["remote_key_fingerprint"] != kd.fingerprint
    assert _final(a, _remote_run(a, "rotate-to-b"))["status"] == "success"


def test_all_executions_are_mirrored_past_ones_included_and_read_only(stacks: tuple[Stack, Stack]):
    a, b = _tenant(stacks[0]), _tenant(stacks[1])
    assert a.call("PUT", "/flows/local", {"script": REMOTE_HELLO}).status_code == 201
    past = _final(a, a.call("POST", "/executions", {"flow": "local", "inputs": {"who": "past"}}).json()["id"])
    _pair(a, b, ("mirror-to-b", "mirror-from-a"), send_all_executions=True)
    later = _final(
        a, a.call("POST", "/executions", {"flow": "local", "inputs": {"who": "later"}}).json()["id"]
    )

    def mirrored() -> dict[str, dict[str, Any]] | None:
        copies = {e["origin"]["execution_id"]: e for e in _linked_executions(b, "mirror-from-a")}
        done = all(copies.get(x["id"], {}).get("status") == "success" for x in (past, later))
        return copies if done else None

    copies = _until(mirrored, what="both executions mirrored")
    copy = b.call("GET", f"/executions/{copies[later['id']]['id']}").json()
    assert copy["origin"]["mirrored"] is True
    assert copy["outputs"] == {"greeting": "hello later", "twice": 0}
    assert copy["script"] == REMOTE_HELLO
    assert b.call("POST", f"/executions/{copy['id']}/cancel").status_code == 409


class Outage:
    """A TCP relay in front of a stack: up, down (connections refused at once), or losing the answers
    (the request reaches the peer, which applies it; the caller never hears back)."""

    def __init__(self, target_port: int) -> None:
        import socket
        import threading

        self.target_port = target_port
        self.mode = "up"
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: Any) -> None:
        """Relay one connection; the mode is read as bytes flow, so a kept-alive connection follows
        it too: down drops the connection, losing drops it when the answer starts to come back."""
        import socket
        import threading

        if self.mode == "down":
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))

        def pipe(source: Any, sink: Any, answers: bool) -> None:
            try:
                while chunk := source.recv(65536):
                    if self.mode == "down" or (answers and self.mode == "losing"):
                        break  # the request reached the peer (it applies it); its answer is lost
                    sink.sendall(chunk)
            except OSError:
                pass
            finally:
                for s in (source, sink):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pipe, args=(client, upstream, False), daemon=True).start()
        pipe(upstream, client, True)
        client.close()
        upstream.close()

    def close(self) -> None:
        self._stop.set()
        self.server.close()


def test_the_remote_down_for_a_minute_and_back_delivers_everything_exactly_once(stacks: tuple[Stack, Stack]):
    from urllib.parse import urlsplit

    a, b = _tenant(stacks[0]), _tenant(stacks[1])
    relay = Outage(urlsplit(b.stack.base).port or 0)
    try:
        url = f"http://127.0.0.1:{relay.port}{A}/sync_config/outage-from-a/sync"
        _pair(a, b, ("outage-to-b", "outage-from-a"), url=url)
        assert a.call("PUT", "/flows/remote-hello", {"script": REMOTE_HELLO}).status_code == 201
        # Given the remote down: runs wait, the link shows the error and the backlog
        relay.mode = "down"
        waiting = [_remote_run(a, "outage-to-b", who=str(i)) for i in range(3)]
        health = _until(
            lambda: (h := a.call("GET", "/sync_config/outage-to-b").json()["health"])["last_error"] and h,
            what="the link to show the error",
        )
        assert "could not be reached" in health["last_error"]
        assert health["backlog"] >= 3
        time.sleep(50)  # a minute down in all: retries with backoff, and the sweep, meanwhile
        assert all(a.call("GET", f"/executions/{e}").json()["status"] == "pending" for e in waiting)
        assert _linked_executions(b, "outage-from-a") == []
        # Then the remote reachable again but its answers lost: it applies, the caller retries
        relay.mode = "losing"
        _until(lambda: len(_linked_executions(b, "outage-from-a")) == 3, what="the runs to reach the remote")
        time.sleep(2)
        # When it is back for good, everything comes back once and nothing ran twice
        relay.mode = "up"
        ended = [_final(a, e, timeout=60) for e in waiting]
        assert [e["status"] for e in ended] == ["success"] * 3
        assert sorted(e["outputs"]["greeting"] for e in ended) == ["hello 0", "hello 1", "hello 2"]
        assert len(_linked_executions(b, "outage-from-a")) == 3
        after = _until(
            lambda: (h := a.call("GET", "/sync_config/outage-to-b").json()["health"])["backlog"] == 0 and h,
            what="the backlog to drain",
        )
        assert after["last_error"] is None
    finally:
        relay.close()


def test_a_sync_interval_sends_in_batches(stacks: tuple[Stack, Stack]):
    a, b = _tenant(stacks[0]), _tenant(stacks[1])
    _pair(a, b, ("batch-to-b", "batch-from-a"), sync_interval=4)
    assert a.call("PUT", "/flows/remote-hello", {"script": REMOTE_HELLO}).status_code == 201
    started = time.monotonic()
    runs = [_remote_run(a, "batch-to-b", who=str(i)) for i in range(3)]
    assert all(_final(a, e)["status"] == "success" for e in runs)
    assert time.monotonic() - started >= 3  # held for the interval, not sent as they happened
    arrived = sorted(e["created_at"] for e in _linked_executions(b, "batch-from-a"))
    assert len(arrived) == 3
    import datetime as dt

    spread = dt.datetime.fromisoformat(arrived[-1]) - dt.datetime.fromisoformat(arrived[0])
    assert spread.total_seconds() < 1  # one envelope brought all three


def test_the_readme_linking_session_runs_verbatim(stacks: tuple[Stack, Stack]):
    """The README's two-stack session, run by bash against these two stacks (only ports and names differ)."""
    import re
    import subprocess

    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- e2e: readme-linking -->\s*```bash\n(.*?)```", readme, re.S)
    assert block, "README.md lost the linking session"
    a, b = stacks
    suffix = uuid.uuid4().hex[:6]
    script = (
        block.group(1)
        .replace("http://127.0.0.1:3000", a.base)
        .replace("http://127.0.0.1:3001", b.base)
        .replace(
            '"username": "admin", "password": "admin-password-change-me"',
            json.dumps({"username": ADMIN[0], "password": ADMIN[1]})[1:-1],
        )
        .replace("linkco", f"linkco-{suffix}")
        .replace("linker", f"linker-{suffix}")
        .replace("from-a", f"from-a-{suffix}")
        .replace("to-b", f"to-b-{suffix}")
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
    out = done.stdout.replace(" ", "")
    sync_log = [line for line in a.everything_logged().splitlines() if '"sync' in line][-30:]
    assert '"status":"success","message":"alldone"' in out.replace("\n", ""), "\n".join(sync_log)
    assert '"greeting":"hellofromB"' in out
    assert '"running in the linked workspace"' in done.stdout
    assert f'"sync_config":"from-a-{suffix}"' in out
    assert "flow hello in B: 404" in done.stdout
    assert "PRIVATE KEY" not in done.stdout
