"""The sync exchange's signatures (RFC 9421, rsa-pss-sha512): what verifies, and every attack refused."""

from __future__ import annotations

import base64
import datetime as dt
import json
from functools import cache

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

from flowgate.errors import Unauthorized
from flowgate.sync import signing
from flowgate.sync.keys import fingerprint

URL = "https://b.example/api/latest/sync_config/link/sync"
BODY = json.dumps({"version": 1, "messages": [{"id": "m1", "kind": "ping"}]}).encode()


@cache
def _key(n: int = 0) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Nonces:
    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def remember(self, key_id: str, nonce: str, ttl_seconds: int) -> bool:
        assert ttl_seconds >= 600  # kept at least as long as a signature is accepted, both ways
        if (key_id, nonce) in self.seen:
            return False
        self.seen.add((key_id, nonce))
        return True


def _trusted(*keys: rsa.RSAPrivateKey) -> dict[str, rsa.RSAPublicKey]:
    return {fingerprint(k.public_key()): k.public_key() for k in keys}


def _verify(
    headers: dict[str, str], body: bytes = BODY, nonces: Nonces | None = None, **kw
) -> signing.Verified:
    return signing.verify_request(
        kw.get("keys", _trusted(_key())),
        nonces or Nonces(),
        method=kw.get("method", "POST"),
        url=kw.get("url", URL),
        headers=headers,
        body=body,
    )


def _refused(
    code: str, headers: dict[str, str], body: bytes = BODY, nonces: Nonces | None = None, **kw
) -> None:
    with pytest.raises(Unauthorized) as caught:
        _verify(headers, body, nonces, **kw)
    assert caught.value.code == code, caught.value.message


def test_a_signed_request_verifies_and_names_its_key():
    headers = signing.sign_request(_key(), "POST", URL, BODY, nonce="n-1")
    verified = _verify(headers)
    assert verified == signing.Verified(fingerprint(_key().public_key()), "n-1")
    assert headers["Content-Digest"].startswith("sha-256=:")
    covered = headers["Signature-Input"]
    for component in (
        '"@method"',
        '"@target-uri"',
        '"content-type"',
        '"content-digest"',
        "nonce=",
        "created=",
    ):
        assert component in covered


def test_a_replay_inside_the_window_is_refused():
    nonces = Nonces()
    headers = signing.sign_request(_key(), "POST", URL, BODY)
    _verify(headers, nonces=nonces)
    _refused(signing.REPLAYED_NONCE, headers, nonces=nonces)


@pytest.mark.parametrize(("offset", "accepted"), [(-299, True), (299, True), (-301, False), (301, False)])
def test_created_more_than_300_seconds_away_is_refused(offset: int, accepted: bool):
    created = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)
    headers = signing.sign_request(_key(), "POST", URL, BODY, created=created)
    if accepted:
        _verify(headers)
    else:
        _refused(signing.STALE_SIGNATURE, headers)


def test_one_body_byte_changed_or_the_json_reserialized_is_refused():
    headers = signing.sign_request(_key(), "POST", URL, BODY)
    _refused(signing.INVALID_SIGNATURE, headers, BODY.replace(b"m1", b"m2"))
    _refused(signing.INVALID_SIGNATURE, headers, json.dumps(json.loads(BODY), indent=1).encode())


def test_another_method_or_target_is_refused():
    headers = signing.sign_request(_key(), "POST", URL, BODY)
    _refused(signing.INVALID_SIGNATURE, headers, method="PUT")
    _refused(signing.INVALID_SIGNATURE, headers, url=URL.replace("link", "other"))


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda h: h.pop("Signature"), id="missing"),
        pytest.param(lambda h: h.update(Signature=""), id="empty"),
        pytest.param(lambda h: h.update(Signature=h["Signature"] + ", " + h["Signature"]), id="duplicated"),
        pytest.param(lambda h: h.update(Signature="pyhms=:not base64!:"), id="not-base64"),
        pytest.param(lambda h: h.update(Signature="pyhms=:" + "A" * 10_240 + ":"), id="10-kb"),
        pytest.param(lambda h: h.pop("Signature-Input"), id="no-signature-input"),
        pytest.param(lambda h: h.update({"Content-Type": "text/plain"}), id="content-type-changed"),
    ],
)
def test_a_mangled_signature_header_is_refused(mangle):
    headers = signing.sign_request(_key(), "POST", URL, BODY)
    mangle(headers)
    _refused(signing.INVALID_SIGNATURE, headers)


def _signed_with(
    algorithm, components, *, nonce: str | None = "n", key: rsa.RSAPrivateKey | None = None, body=BODY
):
    key = key or _key()
    headers = {"Content-Type": "application/json"}
    message = type("M", (), {"method": "POST", "url": URL, "headers": headers})()
    resolver = MappingKeyResolver(public_keys={}, private_keys={fingerprint(key.public_key()): key})
    HTTPMessageSigner(signature_algorithm=algorithm, key_resolver=resolver).sign(
        message,
        key_id=fingerprint(key.public_key()),
        nonce=nonce,
        tag=signing.REQUEST_TAG,
        covered_component_ids=components,
        body=body,
    )
    return headers


def test_a_signature_input_not_covering_the_digest_is_refused():
    headers = _signed_with(algorithms.RSA_PSS_SHA512, ("@method", "@target-uri", "content-type"), body=None)
    headers["Content-Digest"] = signing.sign_request(_key(), "POST", URL, BODY)["Content-Digest"]
    _refused(signing.INVALID_SIGNATURE, headers)


def test_another_algorithm_is_refused():
    headers = _signed_with(algorithms.RSA_V1_5_SHA256, ("@method", "@target-uri", "content-type"))
    _refused(signing.INVALID_SIGNATURE, headers)


def test_a_signature_without_a_nonce_is_refused():
    headers = _signed_with(algorithms.RSA_PSS_SHA512, ("@method", "@target-uri", "content-type"), nonce=None)
    _refused(signing.INVALID_SIGNATURE, headers)


def test_a_nonce_too_long_for_a_table_key_is_refused():
    _refused(signing.INVALID_SIGNATURE, signing.sign_request(_key(), "POST", URL, BODY, nonce="n" * 129))
    _verify(signing.sign_request(_key(), "POST", URL, BODY, nonce="n" * 128))


def test_an_unknown_key_is_refused():
    headers = signing.sign_request(_key(1), "POST", URL, BODY)
    _refused(signing.INVALID_SIGNATURE, headers, keys=_trusted(_key()))


def test_either_key_of_a_rotation_verifies():
    keys = _trusted(_key(), _key(1))
    for key in (_key(), _key(1)):
        assert _verify(signing.sign_request(key, "POST", URL, BODY), keys=keys).key_id == fingerprint(
            key.public_key()
        )


def test_a_signed_response_verifies_only_for_its_request_and_body():
    headers = signing.sign_response(_key(), 200, b'{"ok": true}', "n-1")
    assert signing.verify_response(_trusted(_key()), 200, headers, b'{"ok": true}', "n-1") == fingerprint(
        _key().public_key()
    )
    for status, body, nonce, key in (
        (200, b'{"ok": true}', "n-2", _key()),  # the answer to another request
        (200, b'{"ok": false}', "n-1", _key()),  # another body
        (500, b'{"ok": true}', "n-1", _key()),  # another status
        (200, b'{"ok": true}', "n-1", _key(1)),  # signed by someone else
    ):
        with pytest.raises(Unauthorized):
            signing.verify_response(_trusted(key), status, headers, body, nonce)


def test_a_response_with_a_forged_signature_is_refused():
    headers = signing.sign_response(_key(), 200, b"{}", "n-1")
    forged = base64.b64encode(b"\0" * 256).decode()
    headers["Signature"] = f"pyhms=:{forged}:"
    with pytest.raises(Unauthorized):
        signing.verify_response(_trusted(_key()), 200, headers, b"{}", "n-1")
