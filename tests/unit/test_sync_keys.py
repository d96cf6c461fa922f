"""The keys of a link (seed 000): what is refused when set, fingerprints, and `make keys`."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from functools import cache
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from devstack.keys import main as make_keys
from flowgate.errors import BadRequest
from flowgate.sync import keys


@cache
def _rsa(bits: int = 2048, e: int = 65537) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=e, key_size=bits)


def _private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, password: bytes | None = None) -> str:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


def _public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _refused(call: object, *needles: str) -> None:
    with pytest.raises(BadRequest) as caught:
        call()  # type: ignore[operator]
    assert caught.value.code == keys.INVALID_KEY
    for needle in needles:
        assert needle in caught.value.message, caught.value.message


def test_a_2048_bit_rsa_pair_is_accepted_and_both_halves_have_one_fingerprint():
    key = _rsa()
    public = keys.public_key(_public_pem(key), "remote_public_key")
    private = keys.private_key(_private_pem(key), "own_private_key")
    assert keys.fingerprint(public) == keys.fingerprint(private.public_key())
    assert re.fullmatch(r"[0-9a-f]{64}", keys.fingerprint(public))


def test_the_fingerprint_is_the_sha256_of_the_subject_public_key_info():
    pem = _public_pem(_rsa())
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    assert keys.fingerprint(keys.public_key(pem, "k")) == hashlib.sha256(base64.b64decode(body)).hexdigest()


def test_a_pkcs1_public_key_is_accepted_too():
    pem = (
        _rsa()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
        .decode()
    )
    assert keys.public_key(pem, "remote_public_key").key_size == 2048


@pytest.mark.parametrize(
    ("pem", "needles"),
    [
        pytest.param(
            lambda: _public_pem(_rsa(1024)), ("remote_public_key", "RSA-1024", "2048"), id="1024-bit"
        ),
        pytest.param(lambda: _public_pem(_rsa(2048, 3)), ("65537",), id="exponent-3"),
        pytest.param(lambda: _public_pem(ec.generate_private_key(ec.SECP256R1())), ("RSA",), id="ec"),
        pytest.param(lambda: _private_pem(_rsa()), ("private key",), id="the-private-key-pasted"),
        pytest.param(lambda: "garbage", ("not a PEM public key",), id="garbage"),
        pytest.param(lambda: "", ("not a PEM public key",), id="empty"),
        pytest.param(
            lambda: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", ("PEM",), id="bad-body"
        ),
        pytest.param(lambda: "é" * 10, ("ASCII",), id="not-ascii"),
        pytest.param(lambda: "A" * 20_000, ("longer than",), id="too-long"),
    ],
)
def test_a_public_key_that_fails_the_checks_is_a_400_naming_the_field(pem, needles):
    _refused(lambda: keys.public_key(pem(), "remote_public_key"), "remote_public_key", *needles)


@pytest.mark.parametrize(
    ("pem", "needles"),
    [
        pytest.param(lambda: _private_pem(_rsa(1024)), ("RSA-1024",), id="1024-bit"),
        pytest.param(lambda: _private_pem(ec.generate_private_key(ec.SECP256R1())), ("RSA",), id="ec"),
        pytest.param(lambda: _public_pem(_rsa()), ("public key",), id="a-public-key"),
        pytest.param(lambda: _private_pem(_rsa(), b"passphrase"), ("passphrase",), id="encrypted"),
        pytest.param(lambda: "garbage", ("not a PEM private key",), id="garbage"),
    ],
)
def test_a_private_key_that_fails_the_checks_is_a_400_naming_the_field(pem, needles):
    _refused(lambda: keys.private_key(pem(), "own_private_key"), "own_private_key", *needles)


def test_refusals_never_echo_the_key():
    pem = _private_pem(_rsa())
    with pytest.raises(BadRequest) as caught:
        keys.public_key(pem, "remote_public_key")
    body = pem.splitlines()[1]
    assert body not in caught.value.message


def test_make_keys_prints_two_pairs_each_side_trusting_the_other(capsys: pytest.CaptureFixture[str]):
    assert make_keys([]) == 0
    printed = capsys.readouterr().out
    blocks = [json.loads(b) for b in re.findall(r"^\{.*?^\}", printed, flags=re.S | re.M)]
    controlling, controlled = blocks
    a_private = keys.private_key(controlling["own_private_key"], "own_private_key")
    b_private = keys.private_key(controlled["own_private_key"], "own_private_key")
    # each side's remote key is the other side's public key
    assert keys.fingerprint(keys.public_key(controlling["remote_public_key"], "k")) == keys.fingerprint(
        b_private.public_key()
    )
    assert keys.fingerprint(keys.public_key(controlled["remote_public_key"], "k")) == keys.fingerprint(
        a_private.public_key()
    )
    assert keys.fingerprint(a_private.public_key()) != keys.fingerprint(b_private.public_key())
    assert keys.fingerprint(a_private.public_key()) in printed


def test_make_keys_writes_pem_files_for_scripts(tmp_path: Path):
    assert make_keys(["--dir", str(tmp_path / "link")]) == 0
    written = {p.name: p for p in (tmp_path / "link").iterdir()}
    assert sorted(written) == ["a.key", "a.pub", "b.key", "b.pub"]
    for side in ("a", "b"):
        private = keys.private_key(written[f"{side}.key"].read_text(), "own_private_key")
        public = keys.public_key(written[f"{side}.pub"].read_text(), "remote_public_key")
        assert keys.fingerprint(private.public_key()) == keys.fingerprint(public)
        assert written[f"{side}.key"].stat().st_mode & 0o077 == 0  # the owner's alone


def test_a_rotation_window_accepts_both_remote_keys_until_it_ends():
    from datetime import UTC, datetime, timedelta

    from flowgate.sync.links import Link, LoadedKeys

    own, current, nxt = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3))
    loaded = LoadedKeys(own, keys.fingerprint(own.public_key()), current.public_key(), nxt.public_key())
    ends = datetime(2027, 1, 31, 12, tzinfo=UTC)
    link = Link({"id": "c", "name": "n", "rotation_ends_at": ends.isoformat()}, loaded)
    fps = {keys.fingerprint(k.public_key()) for k in (current, nxt)}
    assert set(link.remote_keys(ends - timedelta(seconds=1))) == fps
    assert set(link.remote_keys(ends)) == {keys.fingerprint(nxt.public_key())}
    without_end = Link({"id": "c", "name": "n"}, loaded)
    assert set(without_end.remote_keys(ends + timedelta(days=999))) == fps  # retired by hand only
