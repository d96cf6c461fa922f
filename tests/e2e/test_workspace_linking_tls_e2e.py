"""Workspace linking over HTTPS: two local stacks serving TLS with certificates of a CA the test makes,
so `ca_certificate` and `verify_ssl` are exercised for real (seed 000: "Only needed when using
self-signed HTTPS certificates")."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from flowgate.sync.keys import generate
from tests.e2e.conftest import ADMIN, Stack, launch
from tests.e2e.test_workspace_linking_e2e import (
    LINKING,
    REMOTE_HELLO,
    SEED_EXAMPLE,
    Tenant,
    _final,
    _inbound,
    _tenant,
    _until,
)
from tests.support.tls import CertificateAuthority, issue_server_certificate, make_ca

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-linking-tls")]


@dataclass
class TlsWorld:
    a: Tenant
    b: Tenant
    ca: CertificateAuthority
    other_ca: CertificateAuthority


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsWorld]:
    pki = tmp_path_factory.mktemp("pki")
    for part in ("ca", "other", "a", "b"):
        (pki / part).mkdir()
    ca = make_ca(pki / "ca")
    other_ca = make_ca(pki / "other", name="Some Other CA")
    env = {"FLOWGATE_ADMIN_USERNAME": ADMIN[0], "FLOWGATE_ADMIN_PASSWORD": ADMIN[1]}
    stacks: list[Stack] = []
    try:
        for side in ("a", "b"):
            cert, key = issue_server_certificate(ca, pki / side)
            stacks.append(
                launch(
                    tmp_path_factory.mktemp(f"tls-{side}"),
                    env,
                    extra_overrides=LINKING,
                    tls_cert=cert,
                    tls_key=key,
                )
            )
        for s in stacks:
            assert s.base.startswith("https://")
        for s in stacks:
            s.verify = str(ca.cert_path)  # the tests' own client trusts the CA, as any client must
        yield TlsWorld(_tenant(stacks[0]), _tenant(stacks[1]), ca, other_ca)
    finally:
        for s in stacks:
            s.stop()


def _link(w: TlsWorld, names: tuple[str, str], **fields: object) -> None:
    kc, kd = generate(), generate()
    made = w.b.call(
        "PUT",
        f"/sync_config/{names[1]}",
        {"own_private_key": kd.private_pem, "remote_public_key": kc.public_pem},
    )
    assert made.status_code == 201, made.text
    made = w.a.call(
        "PUT",
        f"/sync_config/{names[0]}",
        {
            "remote_url": _inbound(w.b.stack, names[1]),
            "own_private_key": kc.private_pem,
            "remote_public_key": kd.public_pem,
            **fields,
        },
    )
    assert made.status_code == 201, made.text


def test_the_seed_example_runs_over_https_with_the_links_own_ca(world: TlsWorld):
    _link(world, ("tls-to-b", "tls-from-a"), ca_certificate=world.ca.cert_pem)
    for name, script in (
        ("remote-hello", REMOTE_HELLO),
        ("main", SEED_EXAMPLE.replace("link-to-b", "tls-to-b")),
    ):
        assert world.a.call("PUT", f"/flows/{name}", {"script": script}).status_code == 201
    done = _final(world.a, world.a.call("POST", "/executions", {"flow": "main"}).json()["id"])
    assert (done["status"], done["message"]) == ("success", "all done"), done
    assert world.a.call("GET", "/sync_config/tls-to-b").json()["ca_certificate"] == world.ca.cert_pem


def test_a_peer_certificate_from_another_ca_is_refused_and_nothing_is_sent(world: TlsWorld):
    _link(world, ("wrong-ca-to-b", "wrong-ca-from-a"), ca_certificate=world.other_ca.cert_pem)
    assert world.a.call("PUT", "/flows/remote-hello", {"script": REMOTE_HELLO}).status_code in (200, 201)
    started = world.a.call(
        "POST", "/executions", {"flow": "remote-hello", "remote_workspace_name": "wrong-ca-to-b"}
    ).json()["id"]
    health = _until(
        lambda: (h := world.a.call("GET", "/sync_config/wrong-ca-to-b").json()["health"])["last_error"] and h,
        what="the TLS refusal on the link",
    )
    assert "TLS certificate was not accepted" in health["last_error"]
    assert health["backlog"] >= 1
    assert world.a.call("GET", f"/executions/{started}").json()["status"] == "pending"
    items = world.b.call("GET", "/executions").json()["items"]
    assert not [e for e in items if (e.get("origin") or {}).get("sync_config") == "wrong-ca-from-a"]


def test_verify_ssl_off_is_allowed_and_shown(world: TlsWorld):
    _link(world, ("noverify-to-b", "noverify-from-a"), verify_ssl=False)
    shown = world.a.call("GET", "/sync_config/noverify-to-b").json()
    assert shown["verify_ssl"] is False
    assert world.a.call("PUT", "/flows/remote-hello", {"script": REMOTE_HELLO}).status_code in (200, 201)
    started = world.a.call(
        "POST", "/executions", {"flow": "remote-hello", "remote_workspace_name": "noverify-to-b"}
    ).json()["id"]
    assert _final(world.a, started)["status"] == "success"
    assert "TLS verification turned off" in world.a.stack.everything_logged()
