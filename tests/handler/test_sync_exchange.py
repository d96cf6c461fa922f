"""The signed exchange of workspace links against moto, from both ends, with keys the test holds.

The controlled end: the sync function's inbound route `POST /api/latest/sync_config/{name}/sync`, called
through its real handler with requests the test signs as the peer (flowgate.sync.signing), and answers
the test verifies with the config's public key. The controlling end: the Sender, built from the
container's parts, whose peer is a fake Transport that plays the peer with the peer's keys.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import os
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flowgate import wiring
from flowgate.clock import now
from flowgate.errors import Unauthorized
from flowgate.messages import SyncDue
from flowgate.sync.exchange import NOT_VERIFIED, Sender
from flowgate.sync.keys import fingerprint
from flowgate.sync.ports import Answer, SyncFailed
from flowgate.sync.protocol import Envelope, Status
from flowgate.sync.signing import sign_request, sign_response, verify_request, verify_response
from flowgate.wiring import Container, container
from tests.handler.conftest import Api, Tenant, lambda_context, load_function, make_tenant
from tests.support.apigw import http_request, template_routes, through_gateway
from tests.support.events import SqsQueue, batch

A = "/api/latest"
HOST = "flowgate.example.com"  # the Host the peer calls (a custom domain: the path has no stage)
PEER_URL = "https://peer.example.com/api/latest/sync_config/from-us/sync"
# Not ASCII on purpose: the signature covers the body's bytes, as sent.
SCRIPT = "def handler(system, this, inputs):\n    return {'greeting': 'héllo ✓ ' + inputs.get('who', '')}\n"
EMPTY = {"v": 1}


# ---- keys (RSA-2048, made once per module) -----------------------------------------------------------------


@functools.cache
def _rsa(tag: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _fp(key: rsa.RSAPrivateKey) -> str:
    return fingerprint(key.public_key())


def _keyring(key: rsa.RSAPrivateKey) -> dict[str, rsa.RSAPublicKey]:
    return {_fp(key): key.public_key()}


HERE, PEER, STRANGER = "here", "peer", "stranger"  # this side's pair, the peer's, and nobody's


# ---- the workspace under test, its configs, its executions -------------------------------------------------


@dataclass
class Workspace:
    tenant: Tenant
    sync: Api
    flows: Api

    @property
    def id(self) -> str:
        return self.tenant.workspace_id

    def put_config(self, name: str, expect: int = 201, **fields: Any) -> dict[str, Any]:
        body = {
            "own_private_key": _private_pem(_rsa(HERE)),
            "remote_public_key": _public_pem(_rsa(PEER)),
            **fields,
        }
        made = self.sync.call(
            "PUT", f"{A}/workspaces/{self.id}/sync_config/{name}", body, token=self.tenant.admin_token
        )
        assert made.status == expect, made.body
        view: dict[str, Any] = made.body
        return view

    def config(self, name: str) -> dict[str, Any]:
        shown = self.sync.call(
            "GET", f"{A}/workspaces/{self.id}/sync_config/{name}", token=self.tenant.admin_token
        )
        assert shown.status == 200, shown.body
        view: dict[str, Any] = shown.body
        return view

    def executions(self) -> list[dict[str, Any]]:
        return list(container().flow_store.list_executions(self.id, 100, None).items)

    def execution(self, eid: str) -> dict[str, Any]:
        item = container().flow_store.get_execution(eid)
        assert item is not None, eid
        return item

    def outbox(self, name: str) -> list[dict[str, Any]]:
        item = container().sync_store.get(name)
        assert item is not None
        return [json.loads(q.body) for q in container().sync_store.outbox(item["id"], 100)]


@pytest.fixture
def ws(api: Api, root_token: str) -> Workspace:
    return Workspace(
        make_tenant(api, root_token, "w"),
        Api(load_function("sync"), "sync"),
        Api(load_function("flows"), "flows"),
    )


def _queued_runs() -> list[str]:
    """The execution ids now queued for the runner (each then in flight)."""
    url = os.environ["EXECUTION_QUEUE_URL"]
    raw = boto3.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"])["execution_id"] for m in raw]


# ---- the controlled end: signed requests to the inbound route ----------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def _url(name: str, host: str = HOST) -> str:
    return f"https://{host}{A}/sync_config/{name}/sync"


def _body(envelope: Mapping[str, Any]) -> bytes:
    return json.dumps(envelope, ensure_ascii=False).encode()


def _signed(
    body: bytes,
    name: str,
    *,
    key: str = PEER,
    url: str | None = None,
    created: dt.datetime | None = None,
) -> tuple[dict[str, str], str]:
    """The headers of a request signed by `key` for the inbound URL of `name`, and its nonce."""
    nonce = secrets.token_urlsafe(24)
    headers = sign_request(_rsa(key), "POST", url or _url(name), body, nonce=nonce, created=created)
    return headers, nonce


def _post(sync: ModuleType, name: str, body: bytes, headers: Mapping[str, str], host: str = HOST) -> Reply:
    """The request as API Gateway hands it to the sync function, and the answer as the peer gets it."""
    request = http_request(
        "POST",
        f"{A}/sync_config/{name}/sync",
        headers={**headers, "Host": host, "X-Forwarded-Proto": "https"},
        body=body.decode(),
    )
    answer = through_gateway(sync.handler, Path(str(sync.__file__)), request, lambda_context("sync"))
    return Reply(answer.status, dict(answer.headers), answer.body)


def _exchange(ws: Workspace, name: str, envelope: Mapping[str, Any], key: str = PEER) -> tuple[Reply, str]:
    body = _body(envelope)
    headers, nonce = _signed(body, name, key=key)
    return _post(ws.sync.module, name, body, headers), nonce


def _run(peer_execution_id: str, flow: str = "remote-hello", **inputs: Any) -> dict[str, Any]:
    return {
        "kind": "run",
        "id": f"run:{peer_execution_id}",
        "execution_id": peer_execution_id,
        "flow": flow,
        "script": SCRIPT,
        "inputs": inputs,
        "started_by": "someone@peer",
    }


def test_a_signed_empty_envelope_gets_a_signed_answer(ws: Workspace):
    # Given a controlled config (no remote_url) that knows the peer's key
    view = ws.put_config("from-peer")
    assert (view["role"], view["dials_out"]) == ("controlled", False)

    # When the peer sends a signed empty envelope
    reply, nonce = _exchange(ws, "from-peer", EMPTY)

    # Then it is a 200 whose signature verifies with the config's public key, bound to the request's nonce
    assert reply.status == 200, reply.body
    for header in ("Signature", "Signature-Input", "Content-Digest"):
        assert reply.headers.get(header), (header, reply.headers)
    own = serialization.load_pem_public_key(view["own_public_key"].encode())
    assert isinstance(own, rsa.RSAPublicKey)
    assert verify_response({view["own_key_fingerprint"]: own}, 200, reply.headers, reply.body, nonce) == _fp(
        _rsa(HERE)
    )
    with pytest.raises(Unauthorized):  # it answers this request, no other
        verify_response({view["own_key_fingerprint"]: own}, 200, reply.headers, reply.body, "another-nonce")
    assert Envelope.model_validate_json(reply.body) == Envelope()

    # And the link's health shows the exchange and the peer's key
    health = ws.config("from-peer")["health"]
    assert health["last_success_at"] is not None
    assert (health["peer_key_fingerprint"], health["last_error"]) == (_fp(_rsa(PEER)), None)

    # And on API Gateway's own domain the signed URL starts with the stage, as the peer sees it
    route = template_routes().table.match("POST", f"{A}/sync_config/from-peer/sync")
    assert route is not None
    aws_host = "abc123defg.execute-api.us-east-1.amazonaws.com"
    body = _body(EMPTY)
    headers, nonce = _signed(
        body, "from-peer", url=f"https://{aws_host}/{route.route.stage}{A}/sync_config/from-peer/sync"
    )
    on_aws = _post(ws.sync.module, "from-peer", body, headers, host=aws_host)
    assert on_aws.status == 200, on_aws.body
    assert verify_response({view["own_key_fingerprint"]: own}, 200, on_aws.headers, on_aws.body, nonce)


def test_a_run_makes_one_queued_execution_of_the_script_sent_and_no_flow(ws: Workspace):
    # Given a controlled config
    ws.put_config("from-peer")
    peer_eid = str(uuid.uuid4())
    body = _body({"v": 1, "messages": [_run(peer_eid, who="you")]})
    headers, _ = _signed(body, "from-peer")

    # When the peer sends a run
    reply = _post(ws.sync.module, "from-peer", body, headers)

    # Then it is acknowledged, and exactly one execution of the script sent is made and queued
    assert reply.status == 200, reply.body
    assert reply.json["acks"] == [f"run:{peer_eid}"]
    [made] = ws.executions()
    assert (made["type"], made["status"], made["flow"]) == ("flow", "pending", "remote-hello")
    assert made["script"] == SCRIPT
    assert made["inputs"] == {"who": "you"}
    assert made["started_by"] == "sync:from-peer"
    assert made["origin"] == {
        "sync_config": "from-peer",
        "key_fingerprint": _fp(_rsa(PEER)),
        "execution_id": peer_eid,
    }
    assert _queued_runs() == [made["id"]]

    # And no flow of that name is made here
    assert container().flow_store.get_flow(ws.id, "remote-hello") is None
    flows = ws.flows.call("GET", f"{A}/workspaces/{ws.id}/flows", token=ws.tenant.admin_token)
    assert flows.body["items"] == []

    # When the same message comes again, in a new request
    again, _ = _exchange(ws, "from-peer", {"v": 1, "messages": [_run(peer_eid, who="you")]})

    # Then it is acknowledged again and makes nothing new
    assert (again.status, again.json["acks"]) == (200, [f"run:{peer_eid}"])
    assert ws.executions() == [made]
    assert _queued_runs() == []

    # When the first request is replayed as it was
    replayed = _post(ws.sync.module, "from-peer", body, headers)

    # Then it is refused as a replay, and nothing changes
    assert (replayed.status, replayed.json["error"]["code"]) == (401, "replayed_nonce")
    assert ws.executions() == [made]
    assert _queued_runs() == []


def test_a_run_delivered_twice_counts_once_against_the_workspace_quota(ws: Workspace):
    # Given a controlled config in a limited workspace
    ws.put_config("from-peer")
    run = {"v": 1, "messages": [_run(str(uuid.uuid4()))]}

    # When the peer sends the same run twice (its first answer was lost)
    for _ in range(2):
        reply, _ = _exchange(ws, "from-peer", run)
        assert reply.status == 200, reply.body

    # Then one execution is stored, and one is counted
    assert len(ws.executions()) == 1
    counter = container().table.get(f"WS#{ws.id}", f"EXECCOUNT#{now().date().isoformat()}")
    assert counter is not None
    assert counter["started"] == 1


def test_a_run_the_workspace_quota_refuses_is_reported_to_the_peer(ws: Workspace):
    # Given a controlled config in a limited workspace whose quota of stored executions is used up
    ws.put_config("from-peer")
    quota = container().settings.max_stored_executions_limited
    container().table.put(
        {"PK": f"WS#{ws.id}", "SK": f"EXECCOUNT#{now().date().isoformat()}", "started": quota, "ttl": 2**31}
    )
    peer_eid = str(uuid.uuid4())

    # When the peer sends a run
    reply, _ = _exchange(ws, "from-peer", {"v": 1, "messages": [_run(peer_eid)]})

    # Then no execution is made, and the peer learns it: the run is not acknowledged, or a status error
    # for it is on its way
    assert reply.status == 200, reply.body
    assert ws.executions() == []
    errors = [m for m in ws.outbox("from-peer") if m["kind"] == "status" and m["execution_id"] == peer_eid]
    assert f"run:{peer_eid}" not in reply.json["acks"] or [m["status"] for m in errors] == ["error"]


def test_an_unknown_name_a_bad_signature_and_a_disabled_config_get_the_same_401(ws: Workspace):
    # Given a controlled config, a disabled one, and a run to send
    ws.put_config("from-peer")
    ws.put_config("switched-off", enabled=False)
    body = _body({"v": 1, "messages": [_run(str(uuid.uuid4()))]})
    good, _ = _signed(body, "from-peer")
    cases: dict[str, tuple[str, bytes, dict[str, str]]] = {
        "unknown name": ("nobody-here", body, _signed(body, "nobody-here")[0]),
        "signed by another key": ("from-peer", body, _signed(body, "from-peer", key=STRANGER)[0]),
        "signed by this side's own key": ("from-peer", body, _signed(body, "from-peer", key=HERE)[0]),
        "signature replaced": ("from-peer", body, {**good, "Signature": "sig1=:AAAA:"}),
        "signature missing": ("from-peer", body, {k: v for k, v in good.items() if k != "Signature"}),
        "body changed": ("from-peer", body.replace(b"remote-hello", b"remote-hellp"), good),
        "another URL signed": (
            "from-peer",
            body,
            _signed(body, "from-peer", url=_url("from-peer", "evil.example"))[0],
        ),
        "disabled config": ("switched-off", body, _signed(body, "switched-off")[0]),
    }

    # When each is sent
    replies = {
        what: _post(ws.sync.module, name, sent, headers) for what, (name, sent, headers) in cases.items()
    }

    # Then each is a 401 with the very same body, so names cannot be probed
    expected = json.dumps({"error": {"code": "invalid_signature", "message": NOT_VERIFIED}}).encode()
    for what, reply in replies.items():
        assert (what, reply.status, reply.body) == (what, 401, expected)
        assert "Signature" not in reply.headers

    # And nothing ran
    assert ws.executions() == []
    assert _queued_runs() == []


def test_a_stale_signature_by_anyone_does_not_tell_a_known_name_from_an_unknown_one(ws: Workspace):
    # Given a controlled config
    ws.put_config("from-peer")
    old = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=600)
    body = _body(EMPTY)

    # When a stranger (no key the config knows) sends requests with an old signature to it and to a name
    # no config has
    known = _post(ws.sync.module, "from-peer", body, _signed(body, "from-peer", key=STRANGER, created=old)[0])
    unknown = _post(
        ws.sync.module, "nobody-here", body, _signed(body, "nobody-here", key=STRANGER, created=old)[0]
    )

    # Then both get the same answer
    assert (known.status, unknown.status) == (401, 401)
    assert known.body == unknown.body


def test_an_envelope_that_is_not_version_1_is_400_and_changes_nothing(ws: Workspace):
    # Given a controlled config
    ws.put_config("from-peer")
    cases: dict[str, dict[str, Any]] = {
        "v 2": {"v": 2, "messages": [_run("peer-1")]},
        "v as text": {"messages": [_run("peer-1")], "v": "1.0"},
        "unknown field": {"v": 1, "messages": [_run("peer-1")], "more": True},
        "unknown kind": {"v": 1, "messages": [{**_run("peer-1"), "kind": "teleport"}]},
        "unknown field in a message": {"v": 1, "messages": [{**_run("peer-1"), "priority": 1}]},
        "wait too long": {"v": 1, "messages": [_run("peer-1")], "wait_seconds": 3600},
    }

    for what, envelope in cases.items():
        # When the peer sends a signed envelope that is not version 1 of the format
        reply, _ = _exchange(ws, "from-peer", envelope)

        # Then it is a 400 that says so
        assert reply.status == 400, (what, reply.body)
        assert "version 1" in reply.json["error"]["message"], (what, reply.body)

    # And nothing ran
    assert ws.executions() == []
    assert _queued_runs() == []


def test_a_status_sent_to_a_controlled_config_is_403_and_changes_nothing(ws: Workspace):
    # Given a controlled config with a message waiting for the peer
    view = ws.put_config("from-peer")
    item = container().sync_store.get("from-peer")
    assert item is not None
    waiting = Status(
        id="status:waiting:1", execution_id="peer-1", remote_execution_id="here-1", status="running"
    )
    container().sync_outbox.add(item, waiting)
    local = str(uuid.uuid4())
    status = {
        "kind": "status",
        "id": "status:forged",
        "execution_id": local,
        "remote_execution_id": "x",
        "status": "error",
    }

    # When the peer sends a run and a status (controlled -> controlling only) in one envelope, and acks
    # the waiting message
    reply, _ = _exchange(
        ws, "from-peer", {"v": 1, "messages": [_run("peer-2"), status], "acks": [waiting.id]}
    )

    # Then the envelope is refused whole: no run, and the acknowledged message is still waiting
    assert (reply.status, reply.json["error"]["code"]) == (403, "not_linked"), reply.body
    assert ws.executions() == []
    assert _queued_runs() == []
    assert [m["id"] for m in ws.outbox("from-peer")] == [waiting.id]
    assert ws.config("from-peer")["health"]["backlog"] == 1
    assert view["version"] == ws.config("from-peer")["version"]


def test_a_run_of_a_flow_not_allowed_queues_a_status_error_until_acknowledged(ws: Workspace):
    # Given a controlled config that lets the peer run one flow only
    ws.put_config("from-peer", allowed_flows=["remote-hello"])
    peer_eid = str(uuid.uuid4())

    # When the peer sends a run of another flow
    reply, _ = _exchange(ws, "from-peer", {"v": 1, "messages": [_run(peer_eid, flow="something-else")]})

    # Then no execution is made, and a status error for it is queued and already in the answer
    assert reply.status == 200, reply.body
    assert ws.executions() == []
    assert _queued_runs() == []
    [queued] = ws.outbox("from-peer")
    assert (queued["kind"], queued["execution_id"], queued["status"]) == ("status", peer_eid, "error")
    assert "something-else" in queued["message"]
    assert "allowed_flows" in queued["message"]
    assert reply.json["acks"] == [f"run:{peer_eid}"]
    assert reply.json["messages"] == [queued]
    assert ws.config("from-peer")["health"]["backlog"] == 1

    # When the peer runs the allowed flow and acknowledges the status
    allowed, _ = _exchange(
        ws, "from-peer", {"v": 1, "messages": [_run("peer-allowed")], "acks": [queued["id"]]}
    )

    # Then the allowed flow runs, and the acknowledged status leaves the outbox
    assert allowed.status == 200, allowed.body
    assert [e["origin"]["execution_id"] for e in ws.executions()] == ["peer-allowed"]
    assert ws.outbox("from-peer") == []
    assert allowed.json["messages"] == []


def test_a_rotated_peer_key_verifies_at_once_and_the_old_one_retires(ws: Workspace):
    # Given a controlled config whose keys this container has loaded
    ws.put_config("from-peer")
    assert _exchange(ws, "from-peer", EMPTY)[0].status == 200

    # When the peer's next key is added
    ws.put_config("from-peer", 200, remote_public_key_next=_public_pem(_rsa("peer-next")))

    # Then both keys verify
    assert _exchange(ws, "from-peer", EMPTY, key="peer-next")[0].status == 200
    assert _exchange(ws, "from-peer", EMPTY, key=PEER)[0].status == 200
    assert ws.config("from-peer")["health"]["peer_key_fingerprint"] == _fp(_rsa(PEER))

    # When the rotation has ended
    ws.put_config("from-peer", 200, rotation_ends_at="2020-01-01T00:00:00Z")

    # Then only the next key verifies
    assert _exchange(ws, "from-peer", EMPTY, key="peer-next")[0].status == 200
    assert _exchange(ws, "from-peer", EMPTY, key=PEER)[0].status == 401


def test_concurrent_deliveries_of_one_request_are_accepted_once(ws: Workspace, atomic_writes: None):
    # Given a controlled config whose keys are loaded, and one signed run
    ws.put_config("from-peer")
    assert _exchange(ws, "from-peer", EMPTY)[0].status == 200
    body = _body({"v": 1, "messages": [_run(str(uuid.uuid4()))]})
    headers, _ = _signed(body, "from-peer")
    functions = [load_function("sync") for _ in range(8)]  # as if 8 Lambda instances took them
    start = threading.Barrier(len(functions))
    replies: list[Reply] = []
    lock = threading.Lock()

    def deliver(sync: ModuleType) -> None:
        start.wait()
        reply = _post(sync, "from-peer", body, headers)
        with lock:
            replies.append(reply)

    # When 8 deliveries of the same request arrive at once
    threads = [threading.Thread(target=deliver, args=(f,)) for f in functions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then exactly one is answered, the others are replays, and one execution is made and queued
    outcomes = sorted((r.status, r.json.get("error", {}).get("code")) for r in replies)
    assert outcomes == [(200, None)] + [(401, "replayed_nonce")] * 7
    assert len(ws.executions()) == 1
    assert len(_queued_runs()) == 1


# ---- the controlling end: the Sender and a peer the test plays ---------------------------------------------


class MemoryNonces:
    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def remember(self, key_id: str, nonce: str, ttl_seconds: int) -> bool:
        if (key_id, nonce) in self.seen:
            return False
        self.seen.add((key_id, nonce))
        return True


@dataclass
class FakePeer:
    """The peer's side of the exchange (a flowgate.sync.ports.Transport): it verifies each request with
    the caller's public key, records the messages and acks it got, acknowledges the messages, and answers
    with its own outbox (kept until the caller acknowledges it), signed with the peer's key."""

    expected_url: str = PEER_URL
    pending: list[dict[str, Any]] = field(default_factory=list)  # the peer's outbox
    received: list[str] = field(default_factory=list)  # the ids of the messages it got
    runs: list[dict[str, Any]] = field(default_factory=list)
    acks: list[str] = field(default_factory=list)  # what the caller acknowledged
    down: bool = False  # raise before the request reaches the peer
    answer_lost: bool = False  # the peer takes the request, its answer never arrives
    acknowledge: bool = True
    signer: str = PEER
    wrong_nonce: bool = False
    nonces: MemoryNonces = field(default_factory=MemoryNonces)
    requests: int = 0
    max_requests: int = 25  # a sender that goes on past this would never stop: the test fails instead

    def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        ca_certificate: str | None,
        verify_ssl: bool,
        timeout: float,
    ) -> Answer:
        self.requests += 1
        if self.requests > self.max_requests:
            raise RuntimeError(f"the sender does not stop: {self.requests} requests in this test")
        if self.down:
            raise SyncFailed("the peer could not be reached: connection refused")
        assert url == self.expected_url
        verified = verify_request(
            _keyring(_rsa(HERE)), self.nonces, method="POST", url=url, headers=headers, body=body
        )
        envelope = json.loads(body)
        self.received += [m["id"] for m in envelope["messages"]]
        self.runs += [m for m in envelope["messages"] if m["kind"] == "run"]
        self.acks += envelope["acks"]
        self.pending = [m for m in self.pending if m["id"] not in envelope["acks"]]
        acks = [m["id"] for m in envelope["messages"]] if self.acknowledge else []
        answer = json.dumps({"v": 1, "messages": self.pending, "acks": acks}).encode()
        nonce = "not-the-request-nonce" if self.wrong_nonce else verified.nonce
        signed = sign_response(_rsa(self.signer), 200, answer, nonce)
        if self.answer_lost:
            raise SyncFailed("the peer could not be reached: read timed out")
        return Answer(200, signed, answer)


def _retry_now(name: str) -> None:
    """Skip the link's backoff after a failed round (the sweep would bring it when due)."""
    container().sync_store.record_health(name, retry_at=None)


def _sender(peer: FakePeer, c: Container | None = None) -> Sender:
    """The container's own Sender (its store, keys, applier, outbox, executions), `peer` its transport."""
    sender = copy.copy((c or container()).sync_sender)
    sender.transport = peer
    return sender


def _status(child: str, status: str = "success", n: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "kind": "status",
        "id": f"status:theirs-{child}:{n}",
        "execution_id": child,
        "remote_execution_id": f"theirs-{child}",
        "status": status,
        "outputs": {},
        "message": None,
        "log": [],
        "log_truncated": False,
        "duration_ms": None,
        **fields,
    }


@pytest.fixture
def controlling(ws: Workspace) -> tuple[Workspace, str]:
    """A controlling config "to-peer" that dials the peer, and a child execution sent through it (its id)."""
    view = ws.put_config("to-peer", remote_url=PEER_URL)
    assert (view["role"], view["dials_out"]) == ("controlling", True)
    flow = ws.flows.call(
        "PUT", f"{A}/workspaces/{ws.id}/flows/remote-hello", {"script": SCRIPT}, token=ws.tenant.admin_token
    )
    assert flow.status == 201, flow.body
    started = ws.flows.call(
        "POST",
        f"{A}/workspaces/{ws.id}/executions",
        {"flow": "remote-hello", "inputs": {"who": "peer"}, "remote_workspace_name": "to-peer"},
        token=ws.tenant.admin_token,
    )
    assert started.status == 202, started.body
    return ws, str(started.body["id"])


def test_the_sender_function_delivers_the_outbox_and_retries_while_the_peer_is_down(
    controlling: tuple[Workspace, str], monkeypatch: pytest.MonkeyPatch
):
    # Given a child execution sent through the link: its run waits in the outbox, and the sender is due
    ws, child = controlling
    assert [m["id"] for m in ws.outbox("to-peer")] == [f"run:{child}"]
    assert _queued_runs() == []  # it runs in the linked workspace, not here
    queue = SqsQueue.at(os.environ["SYNC_QUEUE_URL"])
    due = queue.records()
    assert [json.loads(r["body"]) for r in due] == [json.loads(SyncDue(sync_config="to-peer").body())]

    # And the sender function, whose peer is played by the test (down for now), polling no longer
    monkeypatch.setenv("SYNC_POLL_SECONDS", "0")
    peer = FakePeer(down=True)
    fresh = Container.from_environ()
    wiring.install(Container(fresh.settings, fresh.environ, sync_sender=_sender(peer, fresh)))
    sender = load_function("sync", "sender")

    # When the sender function takes the trigger
    failed = sender.handler(batch(*due), lambda_context("sync-sender"))

    # Then the record is taken (no redelivery piles up while the peer is down): the failure and the next
    # try are on the link, which the sweep brings, and the run stays in the outbox
    assert failed == {"batchItemFailures": []}
    assert [m["id"] for m in ws.outbox("to-peer")] == [f"run:{child}"]
    assert "could not be reached" in ws.config("to-peer")["health"]["last_error"]
    item = container().sync_store.get("to-peer") or {}
    assert (item["failures"], float(item["retry_at"]) > time.time()) == (1, True)

    # When the retry comes, due, and the peer is back
    _retry_now("to-peer")
    peer.down = False
    retried = sender.handler(batch(queue.forged(SyncDue(sync_config="to-peer").body())), lambda_context("s"))

    # Then the peer got the run once, as it was sent, and the acknowledged run left the outbox
    assert retried == {"batchItemFailures": []}
    assert peer.received == [f"run:{child}"]
    [run] = peer.runs
    assert (run["execution_id"], run["flow"], run["script"], run["inputs"]) == (
        child,
        "remote-hello",
        SCRIPT,
        {"who": "peer"},
    )
    assert ws.outbox("to-peer") == []

    # And the link's health shows the exchange; the child waits for the peer's report
    health = ws.config("to-peer")["health"]
    assert (health["backlog"], health["last_error"], health["peer_key_fingerprint"]) == (
        0,
        None,
        _fp(_rsa(PEER)),
    )
    assert health["last_success_at"] is not None
    assert ws.execution(child)["status"] == "pending"


def test_a_message_leaves_the_outbox_only_once_acknowledged(controlling: tuple[Workspace, str]):
    # Given a child sent through the link, and a peer that takes the run but whose answer does not arrive
    ws, child = controlling
    peer = FakePeer(answer_lost=True)

    # When the sender exchanges with it
    _sender(peer).run("to-peer")

    # Then the run stays in the outbox
    assert peer.received == [f"run:{child}"]
    assert [m["id"] for m in ws.outbox("to-peer")] == [f"run:{child}"]

    # When the next exchange's answer arrives with the acknowledgement
    _retry_now("to-peer")
    peer.answer_lost = False
    _sender(peer).run("to-peer")

    # Then the run was sent again (the peer applies it once) and leaves the outbox
    assert peer.received == [f"run:{child}"] * 2
    assert ws.outbox("to-peer") == []


def test_a_peer_that_does_not_acknowledge_does_not_keep_the_sender_going(controlling: tuple[Workspace, str]):
    # Given a child sent through the link, and a peer that answers but acknowledges nothing
    ws, child = controlling
    peer = FakePeer(acknowledge=False)

    # When the sender runs (the fake peer gives up after 25 requests, raising)
    _sender(peer).run("to-peer")

    # Then the run ends on its own, its message kept for a later run
    assert set(peer.received) == {f"run:{child}"}
    assert [m["id"] for m in ws.outbox("to-peer")] == [f"run:{child}"]


def test_a_status_in_the_answer_ends_the_child_with_its_outputs_once(controlling: tuple[Workspace, str]):
    # Given a child execution sent through the link, and the peer's report of its end
    ws, child = controlling
    peer = FakePeer()
    sender = _sender(peer)
    sender.run("to-peer")
    assert peer.received == [f"run:{child}"]
    outputs = {"greeting": "héllo ✓ peer", "n": 2}
    report = _status(child, outputs=outputs, log=["hello from the peer"], message="done", duration_ms=12)
    peer.pending = [report]

    # When the sender exchanges with the peer
    sender.run("to-peer")

    # Then the child ends in success with the outputs, and the report is acknowledged
    done = ws.execution(child)
    assert (done["status"], done["outputs"], done["log"], done["message"]) == (
        "success",
        outputs,
        ["hello from the peer"],
        "done",
    )
    assert done["remote"] == {"sync_config": "to-peer", "remote_execution_id": f"theirs-{child}"}
    assert peer.acks == [report["id"]]
    assert peer.pending == []

    # When the same report comes again, and then a contradicting one
    peer.pending = [report, _status(child, "error", n=2, message="late")]
    sender.run("to-peer")

    # Then nothing changes: an ended execution stays as it ended
    assert ws.execution(child) == done
    assert peer.acks == [report["id"], report["id"], f"status:theirs-{child}:2"]


def test_an_answer_that_is_not_accepted_applies_nothing_and_keeps_the_outbox(
    controlling: tuple[Workspace, str],
):
    # Given a child sent through the link, a local execution, and peers whose answers carry a report
    ws, child = controlling
    local = ws.flows.call(
        "POST", f"{A}/workspaces/{ws.id}/executions", {"flow": "remote-hello"}, token=ws.tenant.admin_token
    )
    assert local.status == 202, local.body
    forged = {"forged": True}
    faults = {
        "signed by another key": (FakePeer(signer=STRANGER), "not accepted"),
        "answers another request": (FakePeer(wrong_nonce=True), "not accepted"),
        "a status for an execution the link did not send": (
            FakePeer(pending=[_status(local.body["id"], outputs=forged)]),
            "refused",
        ),
    }
    before = ws.executions()

    for what, (peer, reason) in faults.items():
        peer.pending = peer.pending or [_status(child, outputs=forged)]

        # When the sender exchanges with the peer
        _sender(peer).run("to-peer")
        _retry_now("to-peer")

        # Then nothing of the answer is applied, the run stays in the outbox, and the health says why
        assert peer.received, what  # the peer did get the request
        assert ws.executions() == before, what
        assert [m["id"] for m in ws.outbox("to-peer")] == [f"run:{child}"], what
        health = ws.config("to-peer")["health"]
        assert reason in health["last_error"], (what, health)
        assert (health["last_error_at"] is not None, health["backlog"]) == (True, 1), what

    # When a peer that answers as it should is reached
    _sender(FakePeer()).run("to-peer")

    # Then the run is delivered and the error is cleared
    assert ws.outbox("to-peer") == []
    assert ws.config("to-peer")["health"]["last_error"] is None


def test_messages_wait_while_the_peer_is_down_and_are_applied_once_when_it_is_back(
    controlling: tuple[Workspace, str],
):
    # Given a child sent through the link, and a peer that cannot be reached
    ws, child = controlling
    peer = FakePeer(down=True)
    sender = _sender(peer)

    # When the sender tries to exchange
    sender.run("to-peer")
    _retry_now("to-peer")

    # Then the run waits in the outbox, and the health says the peer is unreachable
    assert [m["id"] for m in ws.outbox("to-peer")] == [f"run:{child}"]
    health = ws.config("to-peer")["health"]
    assert "could not be reached" in health["last_error"]
    assert health["backlog"] == 1

    # When the peer is back
    peer.down = False
    sender.run("to-peer")

    # Then it got the run once, and the outbox is empty
    assert peer.received == [f"run:{child}"]
    assert ws.outbox("to-peer") == []
    assert ws.config("to-peer")["health"]["last_error"] is None

    # When the peer reports the end, but its answer is lost on the way
    report = _status(child, outputs={"greeting": "once"})
    peer.pending = [report]
    peer.answer_lost = True
    sender.run("to-peer")
    _retry_now("to-peer")

    # Then nothing is applied yet
    assert ws.execution(child)["status"] == "pending"

    # When the next exchange gets through, and the peer sends its report again (never acknowledged)
    peer.answer_lost = False
    sender.run("to-peer")
    done = ws.execution(child)

    # Then the child ended once, with the report's outputs
    assert (done["status"], done["outputs"]) == ("success", {"greeting": "once"})
    assert peer.acks == [report["id"]]
    peer.pending = [report]
    sender.run("to-peer")
    assert ws.execution(child) == done


def test_a_controlling_config_that_listens_hands_out_its_runs_and_takes_the_reports(ws: Workspace):
    # Given a controlling config without a remote_url (its controlled peer is behind NAT and dials in), and
    # a child execution sent through it
    view = ws.put_config("nat-controller", role="controlling")
    assert (view["role"], view["dials_out"]) == ("controlling", False)
    flow = ws.flows.call(
        "PUT", f"{A}/workspaces/{ws.id}/flows/remote-hello", {"script": SCRIPT}, token=ws.tenant.admin_token
    )
    assert flow.status == 201, flow.body
    started = ws.flows.call(
        "POST",
        f"{A}/workspaces/{ws.id}/executions",
        {"flow": "remote-hello", "remote_workspace_name": "nat-controller"},
        token=ws.tenant.admin_token,
    )
    assert started.status == 202, started.body
    child = started.body["id"]
    assert SqsQueue.at(os.environ["SYNC_QUEUE_URL"]).receive() == []  # nobody to dial: it waits

    # When the peer dials in
    first, _ = _exchange(ws, "nat-controller", EMPTY)

    # Then the answer hands it the run, which stays queued until acknowledged
    assert first.status == 200, first.body
    assert [(m["kind"], m["execution_id"]) for m in first.json["messages"]] == [("run", child)]
    assert [m["id"] for m in ws.outbox("nat-controller")] == [f"run:{child}"]

    # When the peer acknowledges the run and reports its end
    report = _status(child, outputs={"greeting": "from behind NAT"})
    second, _ = _exchange(ws, "nat-controller", {"v": 1, "messages": [report], "acks": [f"run:{child}"]})

    # Then the report is applied and acknowledged, and the outbox is empty
    assert (second.status, second.json["acks"], second.json["messages"]) == (200, [report["id"]], [])
    done = ws.execution(child)
    assert (done["status"], done["outputs"]) == ("success", {"greeting": "from behind NAT"})
    assert ws.outbox("nat-controller") == []

    # And a run sent to this controlling config is refused whole
    refused, _ = _exchange(ws, "nat-controller", {"v": 1, "messages": [_run("peer-run")]})
    assert (refused.status, refused.json["error"]["code"]) == (403, "not_controlled")
    assert [e["id"] for e in ws.executions()] == [child]


def test_a_report_too_large_to_store_fails_the_child_instead_of_the_exchange(
    controlling: tuple[Workspace, str],
):
    # Given a child sent through the link, and the peer's report with outputs past the item's share
    ws, child = controlling
    peer = FakePeer()
    sender = _sender(peer)
    sender.run("to-peer")
    peer.pending = [_status(child, outputs={"big": "x" * 70_000}, log=["y" * 1000] * 100)]

    # When the sender exchanges with the peer
    sender.run("to-peer")

    # Then the child ends in error saying why, its log cut to its share, and the report is acknowledged
    done = ws.execution(child)
    assert (done["status"], done["outputs"]) == ("error", {})
    assert "at most 65536 can be stored" in done["message"]
    assert 0 < len(done["log"]) < 100
    assert peer.acks == [f"status:theirs-{child}:1"]
    assert ws.config("to-peer")["health"]["last_error"] is None
