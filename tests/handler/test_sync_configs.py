"""The sync function's config routes against moto: sync configs set, read, listed and deleted by org admins,
keys kept in Secrets Manager and never shown, tenancy, names unique in the deployment, and bad input
refused naming the field (seed 000 "Configuration", flowgate.sync.configs)."""

from __future__ import annotations

import datetime
import functools
import json
import threading
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from flowgate.sync.keys import fingerprint
from flowgate.wiring import container
from tests.handler.conftest import Answer, Api, Tenant, load_function, make_tenant

A = "/api/latest"
PEER_URL = "https://peer.example.com/api/latest/sync_config/from-a/sync"


# ---- keys, made once per module (RSA-2048: valid, and faster to make than 3072) ----------------------------


@functools.cache
def _rsa(tag: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> str:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


def _public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _fp(key: rsa.RSAPrivateKey) -> str:
    return fingerprint(key.public_key())


@functools.cache
def _ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


OWN, REMOTE, NEXT = "own", "remote", "next"


@functools.cache
def _certificate() -> str:
    """A self-signed certificate (the peer's TLS CA), PEM."""
    key = _rsa("ca")
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "peer.example.com")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _keys(own: str = OWN, remote: str = REMOTE) -> dict[str, str]:
    return {"own_private_key": _private_pem(_rsa(own)), "remote_public_key": _public_pem(_rsa(remote))}


def _secret_lines() -> list[str]:
    """The body lines of every key that must never be shown: the private keys, and the peer's keys (only
    this side's public key is shown, as own_public_key)."""
    pems = [_private_pem(_rsa(t)) for t in (OWN, REMOTE, NEXT)]
    pems += [_public_pem(_rsa(t)) for t in (REMOTE, NEXT)]
    return [line for pem in pems for line in pem.splitlines() if line and not line.startswith("-----")]


def _no_key_in(*answers: Answer) -> None:
    lines = _secret_lines()
    for answer in answers:
        text = json.dumps(answer.body) + json.dumps(answer.headers)
        leaked = [line for line in lines if line in text]
        assert leaked == [], answer.body


# ---- fixtures and helpers ----------------------------------------------------------------------------------


@pytest.fixture
def sapi(api: Api) -> Api:
    return Api(load_function("sync"), "sync")


@pytest.fixture
def tenant(api: Api, root_token: str) -> Tenant:
    """One tenant, for the tests that need no second one (a tenant costs password hashes)."""
    return make_tenant(api, root_token, "a")


def _path(t: Tenant, name: str = "") -> str:
    base = f"{A}/workspaces/{t.workspace_id}/sync_config"
    return f"{base}/{name}" if name else base


def _secret_id(config_id: str) -> str:
    """The config's one keys secret: `flowgate/<stage>/sync/<config id>/<keys ref>` (a new name for
    each set of keys); a name that does not exist when there is none."""
    prefix = f"flowgate/{container().settings.stage}/sync/{config_id}/"
    listed = boto3.client("secretsmanager").list_secrets(Filters=[{"Key": "name", "Values": [prefix]}])
    names = [s["Name"] for s in listed["SecretList"] if s["Name"].startswith(prefix)]
    assert len(names) <= 1, names  # a replaced set of keys is deleted
    return names[0] if names else prefix + "none"


def _secret(config_id: str) -> dict[str, Any]:
    raw = boto3.client("secretsmanager").get_secret_value(SecretId=_secret_id(config_id))["SecretString"]
    value: dict[str, Any] = json.loads(raw)
    return value


def _secret_exists(config_id: str) -> bool:
    client = boto3.client("secretsmanager")
    try:
        client.get_secret_value(SecretId=_secret_id(config_id))
    except client.exceptions.ResourceNotFoundException:
        return False
    return True


def _make(sapi: Api, t: Tenant, name: str, **fields: Any) -> dict[str, Any]:
    made = sapi.call("PUT", _path(t, name), {**_keys(), **fields}, token=t.admin_token)
    assert made.status == 201, made.body
    body: dict[str, Any] = made.body
    return body


# ---- create, replace, read, list, delete -------------------------------------------------------------------


def test_a_config_is_created_replaced_read_listed_and_deleted(sapi: Api, tenant: Tenant):
    # Given a workspace with no sync configs
    a = tenant
    path = _path(a, "from-peer")

    # When an org admin creates one with its keys
    first = sapi.call("PUT", path, {**_keys(), "description": "the peer"}, token=a.admin_token)

    # Then it is 201 with its location, version 1, and the keys shown only by fingerprint and own public key
    assert first.status == 201, first.body
    assert first.headers["Location"] == path
    view = first.body
    assert (view["name"], view["workspace_id"], view["version"]) == ("from-peer", a.workspace_id, 1)
    assert view["own_key_fingerprint"] == _fp(_rsa(OWN))
    assert view["remote_key_fingerprint"] == _fp(_rsa(REMOTE))
    assert view["remote_key_next_fingerprint"] is None
    assert view["own_public_key"].strip() == _public_pem(_rsa(OWN)).strip()
    assert view["inbound_path"] == f"{A}/sync_config/from-peer/sync"
    assert (view["enabled"], view["verify_ssl"], view["description"]) == (True, True, "the peer")
    assert view["health"] == {
        "last_success_at": None,
        "last_error": None,
        "last_error_at": None,
        "backlog": 0,
        "peer_key_fingerprint": None,
    }

    # When it is replaced without any key
    second = sapi.call("PUT", path, {"description": "renamed", "sync_interval": 60}, token=a.admin_token)

    # Then it is 200, keeps its id and creation time, counts the version, and keeps the stored keys
    assert second.status == 200, second.body
    assert (second.body["id"], second.body["version"]) == (view["id"], 2)
    assert second.body["created_at"] == view["created_at"]
    assert (second.body["description"], second.body["sync_interval"]) == ("renamed", 60)
    for field in ("own_key_fingerprint", "remote_key_fingerprint", "own_public_key"):
        assert second.body[field] == view[field], field
    assert _secret(view["id"]) == {**_keys(), "remote_public_key_next": None}

    # And reading it shows the replaced config
    read = sapi.call("GET", path, token=a.admin_token)
    assert (read.status, read.body) == (200, second.body)

    # And listing pages through the workspace's configs by cursor, in name order
    for name in ("alpha", "zulu"):
        _make(sapi, a, name)
    listed = sapi.call("GET", _path(a), token=a.admin_token)
    assert listed.status == 200
    assert [c["name"] for c in listed.body["items"]] == ["alpha", "from-peer", "zulu"]
    assert listed.body["items"][1] == second.body
    page = sapi.call("GET", _path(a), token=a.admin_token, query={"limit": "2"})
    assert [c["name"] for c in page.body["items"]] == ["alpha", "from-peer"]
    rest = sapi.call("GET", _path(a), token=a.admin_token, query={"limit": "2", "cursor": page.body["next"]})
    assert ([c["name"] for c in rest.body["items"]], rest.body["next"]) == (["zulu"], None)

    # When it is deleted
    deleted = sapi.call("DELETE", path, token=a.admin_token)

    # Then it is gone, and deleting it again is 404
    assert (deleted.status, deleted.body) == (204, None)
    assert sapi.call("GET", path, token=a.admin_token).status == 404
    assert sapi.call("DELETE", path, token=a.admin_token).status == 404
    names = [c["name"] for c in sapi.call("GET", _path(a), token=a.admin_token).body["items"]]
    assert names == ["alpha", "zulu"]

    # And no answer ever held a key
    _no_key_in(first, second, read, listed, page, rest, deleted)


def test_keys_live_in_secrets_manager_and_go_with_the_config(sapi: Api, tenant: Tenant):
    # Given a config made with its keys
    a = tenant
    view = _make(sapi, a, "kept")

    # Then its keys are one JSON secret flowgate/<stage>/sync/<config id>, and not in the table item
    assert _secret(view["id"]) == {**_keys(), "remote_public_key_next": None}
    item = container().sync_store.get("kept")
    assert item is not None
    assert not [line for line in _secret_lines() if line in json.dumps(item, default=str)]

    # When the config is deleted
    assert sapi.call("DELETE", _path(a, "kept"), token=a.admin_token).status == 204

    # Then its secret is deleted too
    assert not _secret_exists(view["id"])


def test_a_new_key_replaces_its_stored_one_and_keeps_the_others(sapi: Api, tenant: Tenant):
    # Given a config
    a = tenant
    view = _make(sapi, a, "rekeyed")

    # When only this side's key is changed
    changed = sapi.call(
        "PUT", _path(a, "rekeyed"), {"own_private_key": _private_pem(_rsa("own-2"))}, token=a.admin_token
    )

    # Then the new key is shown by fingerprint and public key, and the peer's key is kept
    assert changed.status == 200, changed.body
    assert changed.body["own_key_fingerprint"] == _fp(_rsa("own-2"))
    assert changed.body["own_public_key"].strip() == _public_pem(_rsa("own-2")).strip()
    assert changed.body["remote_key_fingerprint"] == view["remote_key_fingerprint"]
    assert _secret(view["id"])["own_private_key"] == _private_pem(_rsa("own-2"))
    assert _secret(view["id"])["remote_public_key"] == _public_pem(_rsa(REMOTE))
    assert "PRIVATE KEY" not in json.dumps(changed.body)


def test_the_next_remote_key_is_shown_during_a_rotation_and_null_retires_it(sapi: Api, tenant: Tenant):
    # Given a config
    a = tenant
    view = _make(sapi, a, "rotating")
    path = _path(a, "rotating")

    # When the peer's next key is added with the end of the rotation
    rotating = sapi.call(
        "PUT",
        path,
        {"remote_public_key_next": _public_pem(_rsa(NEXT)), "rotation_ends_at": "2027-01-31T12:00:00Z"},
        token=a.admin_token,
    )

    # Then both remote keys are shown by fingerprint, with the end of the rotation
    assert rotating.status == 200, rotating.body
    assert rotating.body["remote_key_fingerprint"] == view["remote_key_fingerprint"]
    assert rotating.body["remote_key_next_fingerprint"] == _fp(_rsa(NEXT))
    assert rotating.body["rotation_ends_at"] == "2027-01-31T12:00:00+00:00"
    assert _secret(view["id"])["remote_public_key_next"] == _public_pem(_rsa(NEXT))

    # When a PUT leaves the next key out
    kept = sapi.call("PUT", path, {"description": "still rotating"}, token=a.admin_token)

    # Then the next key is kept
    assert kept.body["remote_key_next_fingerprint"] == _fp(_rsa(NEXT))

    # When the next key is set to null explicitly
    retired = sapi.call("PUT", path, {"remote_public_key_next": None}, token=a.admin_token)

    # Then it is retired; the current keys stay
    assert retired.status == 200, retired.body
    assert retired.body["remote_key_next_fingerprint"] is None
    assert retired.body["remote_key_fingerprint"] == view["remote_key_fingerprint"]
    assert retired.body["own_key_fingerprint"] == view["own_key_fingerprint"]
    assert _secret(view["id"]) == {**_keys(), "remote_public_key_next": None}
    _no_key_in(rotating, kept, retired)


# ---- role, dialing -----------------------------------------------------------------------------------------


def test_a_config_with_a_remote_url_controls_and_dials_out_by_default(sapi: Api, tenant: Tenant):
    # Given a workspace
    a = tenant

    # When configs are made with and without a remote URL, and with the role given
    dialing = _make(sapi, a, "dialing", remote_url=PEER_URL, ca_certificate=_certificate(), verify_ssl=True)
    listening = _make(sapi, a, "listening")
    nat = _make(sapi, a, "behind-nat", remote_url=PEER_URL, role="controlled")
    listener = _make(sapi, a, "controls-listening", role="controlling")
    local = _make(sapi, a, "local-peer", remote_url="http://127.0.0.1:3000/api/latest/sync_config/x/sync")

    # Then the side with a remote URL controls by default; dials_out follows the URL, not the role
    roles = {c["name"]: (c["role"], c["dials_out"]) for c in (dialing, listening, nat, listener, local)}
    assert roles == {
        "dialing": ("controlling", True),
        "listening": ("controlled", False),
        "behind-nat": ("controlled", True),
        "controls-listening": ("controlling", False),
        "local-peer": ("controlling", True),  # plain http to a host on the outbound allow-list
    }

    # And the peer's CA certificate is kept and shown as given
    assert dialing["ca_certificate"] == _certificate()

    # And the sweep knows the enabled configs that dial out, and only those
    assert sorted(container().sync_store.dialers()) == ["behind-nat", "dialing", "local-peer"]
    disabled = sapi.call(
        "PUT", _path(a, "dialing"), {"remote_url": PEER_URL, "enabled": False}, token=a.admin_token
    )
    assert disabled.status == 200, disabled.body
    assert sapi.call("DELETE", _path(a, "local-peer"), token=a.admin_token).status == 204
    assert container().sync_store.dialers() == ["behind-nat"]


# ---- authorization and tenancy -----------------------------------------------------------------------------


def _routes(t: Tenant, name: str) -> list[tuple[str, str, Any]]:
    return [
        ("PUT", _path(t, name), {**_keys(), "description": "taken over"}),
        ("PUT", _path(t, "new-one"), _keys()),
        ("GET", _path(t, name), None),
        ("GET", _path(t), None),
        ("DELETE", _path(t, name), None),
    ]


def _state(sapi: Api, t: Tenant, config_id: str) -> tuple[Any, Any, dict[str, Any]]:
    return (
        sapi.call("GET", _path(t), token=t.admin_token).body,
        container().sync_store.get("new-one"),
        _secret(config_id),
    )


def test_a_member_with_access_to_the_workspace_gets_403_on_every_config_route(
    api: Api, sapi: Api, tenant: Tenant
):
    # Given a config, and a member of the contract with access to its workspace
    a = tenant
    view = _make(sapi, a, "guarded")
    granted = api.call(
        "PUT",
        f"{A}/workspaces/{a.workspace_id}/access/{a.member_id}",
        {"role": "member"},
        token=a.admin_token,
    )
    assert granted.status == 200, granted.body
    before = _state(sapi, a, view["id"])

    # When the member tries every config route
    for method, path, body in _routes(a, "guarded"):
        answer = sapi.call(method, path, body, token=a.member_token)
        # Then each is a 403 that shows nothing
        assert answer.status == 403, (method, path, answer.body)
        _no_key_in(answer)

    # And nothing changed
    assert _state(sapi, a, view["id"]) == before


def test_an_org_admin_of_another_contract_gets_404_and_no_token_401(
    sapi: Api, tenants: tuple[Tenant, Tenant]
):
    # Given a config in A's workspace
    a, b = tenants
    view = _make(sapi, a, "a-only")
    before = _state(sapi, a, view["id"])

    # When B's org admin, and a caller without a token, try every config route on A's workspace
    for method, path, body in _routes(a, "a-only"):
        foreign = sapi.call(method, path, body, token=b.admin_token)
        anonymous = sapi.call(method, path, body)
        # Then B gets 404 (the workspace is not B's to know) and the anonymous caller 401
        assert foreign.status == 404, (method, path, foreign.body)
        assert anonymous.status == 401, (method, path, anonymous.body)
        assert "a-only" not in json.dumps(foreign.body)
        _no_key_in(foreign, anonymous)

    # And nothing changed
    assert _state(sapi, a, view["id"]) == before


def test_a_name_is_unique_in_the_deployment(sapi: Api, tenants: tuple[Tenant, Tenant]):
    # Given a config named "shared-name" in A's workspace
    a, b = tenants
    view = _make(sapi, a, "shared-name")
    before = _state(sapi, a, view["id"])

    # When B's org admin puts a config of the same name in B's workspace
    taken = sapi.call(
        "PUT",
        _path(b, "shared-name"),
        {**_keys("b-own", "b-remote"), "description": "b"},
        token=b.admin_token,
    )

    # Then it is 409 and reveals nothing of A's config
    assert taken.status == 409, taken.body
    text = json.dumps(taken.body)
    for shown in (view["id"], a.workspace_id, view["own_key_fingerprint"], view["remote_key_fingerprint"]):
        assert shown not in text

    # And A's config is unchanged, B has no config and no secret was made for B
    assert _state(sapi, a, view["id"]) == before
    assert sapi.call("GET", _path(b, "shared-name"), token=b.admin_token).status == 404
    assert sapi.call("GET", _path(b), token=b.admin_token).body["items"] == []
    assert sapi.call("DELETE", _path(b, "shared-name"), token=b.admin_token).status == 404
    secrets = boto3.client("secretsmanager").list_secrets()["SecretList"]
    assert [s["Name"] for s in secrets if "/sync/" in s["Name"]] == [_secret_id(view["id"])]


# ---- bad input ---------------------------------------------------------------------------------------------

NOT_A_CERTIFICATE = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


def _bad_inputs() -> dict[str, tuple[dict[str, Any], str]]:
    """What each bad body is, and the field its 400 must name."""
    own = _private_pem(_rsa(OWN))
    remote = _public_pem(_rsa(REMOTE))
    weak = _rsa("weak", 1024)
    return {
        "1024-bit remote key": ({"remote_public_key": _public_pem(weak)}, "remote_public_key"),
        "1024-bit own key": ({"own_private_key": _private_pem(weak)}, "own_private_key"),
        "EC remote key": ({"remote_public_key": _public_pem(_ec())}, "remote_public_key"),
        "EC own key": ({"own_private_key": _private_pem(_ec())}, "own_private_key"),
        "garbage remote key": ({"remote_public_key": "garbage"}, "remote_public_key"),
        "garbage own key": ({"own_private_key": "garbage"}, "own_private_key"),
        "private key as remote key": ({"remote_public_key": own}, "remote_public_key"),
        "public key as own key": ({"own_private_key": remote}, "own_private_key"),
        "encrypted own key": ({"own_private_key": _private_pem(_rsa(OWN), b"passphrase")}, "own_private_key"),
        "own key as remote key": ({"remote_public_key": _public_pem(_rsa(OWN))}, "remote_public_key"),
        "own key as next remote key": (
            {"remote_public_key_next": _public_pem(_rsa(OWN))},
            "remote_public_key",
        ),
        "garbage next key": ({"remote_public_key_next": "garbage"}, "remote_public_key_next"),
        "http to a public host": ({"remote_url": "http://peer.example.com/sync"}, "remote_url"),
        "metadata address": ({"remote_url": "https://169.254.169.254/latest/meta-data"}, "remote_url"),
        "private address": ({"remote_url": "https://10.0.0.1/api/latest/sync_config/x/sync"}, "remote_url"),
        "credentials in the URL": ({"remote_url": "https://me:pw-Xq9@peer.example.com/sync"}, "remote_url"),
        "unparseable CA certificate": ({"ca_certificate": NOT_A_CERTIFICATE}, "ca_certificate"),
        "rotation end without a time zone": ({"rotation_ends_at": "2027-01-31T12:00:00"}, "rotation_ends_at"),
        "rotation end not a time": ({"rotation_ends_at": "next tuesday"}, "rotation_ends_at"),
        "sync_interval 0": ({"sync_interval": 0}, "sync_interval"),
        "sync_interval 100000": ({"sync_interval": 100_000}, "sync_interval"),
        "unknown field": ({"colour": "blue"}, "colour"),
        "unknown role": ({"role": "both"}, "role"),
    }


def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(sapi: Api, tenant: Tenant):
    # Given a config, its stored keys, and a name no config has
    a = tenant
    view = _make(sapi, a, "existing")
    before = (sapi.call("GET", _path(a, "existing"), token=a.admin_token).body, _secret(view["id"]))

    for what, (change, field) in _bad_inputs().items():
        # When the config is replaced, or a new one made, with the bad field
        for name in ("existing", "refused"):
            answer = sapi.call("PUT", _path(a, name), {**_keys(), **change}, token=a.admin_token)

            # Then it is a 400 naming the field, without the key in it
            assert answer.status == 400, (what, name, answer.body)
            assert field in answer.body["error"]["message"], (what, name, answer.body)
            assert "pw-Xq9" not in json.dumps(answer.body)
            _no_key_in(answer)

    # When a new config is made without one of its keys
    for body, missing in (
        ({}, ["own_private_key", "remote_public_key"]),
        ({"own_private_key": _private_pem(_rsa(OWN))}, ["remote_public_key"]),
        ({"remote_public_key": _public_pem(_rsa(REMOTE)), "remote_url": PEER_URL}, ["own_private_key"]),
    ):
        answer = sapi.call("PUT", _path(a, "refused"), body, token=a.admin_token)

        # Then it is a 400 naming what is missing
        assert (answer.status, answer.error_code) == (400, "missing_key"), (body.keys(), answer.body)
        assert all(field in answer.body["error"]["message"] for field in missing), answer.body
        _no_key_in(answer)

    # And nothing changed: the config and its keys are as they were, and no config or secret was made
    assert (sapi.call("GET", _path(a, "existing"), token=a.admin_token).body, _secret(view["id"])) == before
    assert sapi.call("GET", _path(a, "refused"), token=a.admin_token).status == 404
    secrets = boto3.client("secretsmanager").list_secrets()["SecretList"]
    assert [s["Name"] for s in secrets if "/sync/" in s["Name"]] == [_secret_id(view["id"])]


def test_the_own_key_as_the_next_remote_key_is_refused_naming_that_field(sapi: Api, tenant: Tenant):
    # Given a config
    a = tenant
    _make(sapi, a, "selfish")

    # When this side's own public key is given as the peer's next key
    answer = sapi.call(
        "PUT", _path(a, "selfish"), {"remote_public_key_next": _public_pem(_rsa(OWN))}, token=a.admin_token
    )

    # Then it is refused naming remote_public_key_next
    assert (answer.status, answer.error_code) == (400, "invalid_key"), answer.body
    assert "remote_public_key_next" in answer.body["error"]["message"]


def test_a_private_key_pasted_with_the_ca_certificate_is_never_shown(sapi: Api, tenant: Tenant):
    # Given a name no config has
    a = tenant

    # When the peer's certificate is given together with a private key (a server's cert + key bundle)
    bundle = _certificate() + _private_pem(_rsa(OWN))
    answer = sapi.call("PUT", _path(a, "bundled"), {**_keys(), "ca_certificate": bundle}, token=a.admin_token)

    # Then it is refused naming ca_certificate (as a private key pasted as a public key is), and no answer
    # shows the private key
    shown = sapi.call("GET", _path(a), token=a.admin_token)
    _no_key_in(answer, shown)
    assert answer.status == 400, answer.body
    assert "ca_certificate" in answer.body["error"]["message"]


def test_a_put_that_loses_a_race_leaves_the_winners_keys(
    sapi: Api, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
):
    # Given a config, and another admin's PUT of a new key that completes while this PUT is under way
    # (after it read the config, before it stored its key)
    a = tenant
    view = _make(sapi, a, "raced")
    vault = container().sync_configs.vault
    store_keys = vault.put
    other_function = Api(load_function("sync"), "sync")
    concurrent: list[Answer] = []
    raced = threading.Event()

    def put_after_a_concurrent_put(config_id: str, keys_ref: str, keys: Any) -> None:
        if not raced.is_set():
            raced.set()
            body = {"own_private_key": _private_pem(_rsa("winner"))}
            concurrent.append(other_function.call("PUT", _path(a, "raced"), body, token=a.admin_token))
        store_keys(config_id, keys_ref, keys)

    monkeypatch.setattr(vault, "put", put_after_a_concurrent_put)

    # When this PUT changes the key too
    loser = sapi.call(
        "PUT", _path(a, "raced"), {"own_private_key": _private_pem(_rsa("loser"))}, token=a.admin_token
    )

    # Then the other PUT won and this one is a 409
    assert [c.status for c in concurrent] == [200]
    assert loser.status == 409, loser.body

    # And the stored key is the one the config shows: the winner's
    shown = sapi.call("GET", _path(a, "raced"), token=a.admin_token).body
    assert shown["own_key_fingerprint"] == _fp(_rsa("winner"))
    assert _secret(view["id"])["own_private_key"] == _private_pem(_rsa("winner"))
