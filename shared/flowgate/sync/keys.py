"""The RSA keys of a link: checked when set, named by their fingerprint, and made by `make keys`.

A link's keys are PEM. Each must be RSA of at least MIN_BITS bits with the public exponent 65537 (what
`rsa-pss-sha512` signatures are checked with); the public field takes a public key and the private field
a private key, so a private key pasted as the peer's public key is refused instead of being stored where
it would be shown. A key's fingerprint is the SHA-256 of its SubjectPublicKeyInfo (DER), in hex: what
the configs show, and the `keyid` on the wire.

`make keys` (devstack.keys) prints two pairs made by `generate`, with each side's config key fields.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flowgate.errors import BadRequest

MIN_BITS = 2048
PUBLIC_EXPONENT = 65537
MAX_PEM_CHARS = 16_384  # an 8192-bit private key is ~6.4 KB of PEM
INVALID_KEY = "invalid_key"


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: str
    fingerprint: str


def fingerprint(key: rsa.RSAPublicKey) -> str:
    """SHA-256 of the key's SubjectPublicKeyInfo (DER), lowercase hex."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def public_key(pem: str, field: str) -> rsa.RSAPublicKey:
    """The RSA public key in `pem`, or a 400 naming `field` that says what is wrong with it."""
    if "PRIVATE KEY" in pem:
        raise _refused(
            field, "is a private key: paste the peer's public key here (never share a private key)"
        )
    try:
        key = serialization.load_pem_public_key(_pem_bytes(pem, field))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise _refused(field, "is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise _refused(field, "must be an RSA key")
    return _checked(key, field)


def private_key(pem: str, field: str) -> rsa.RSAPrivateKey:
    """The unencrypted RSA private key in `pem`, or a 400 naming `field`."""
    if "PRIVATE KEY" not in pem and "PUBLIC KEY" in pem:
        raise _refused(field, "is a public key: this field takes this side's private key")
    try:
        key = serialization.load_pem_private_key(_pem_bytes(pem, field), password=None)
    except TypeError as exc:  # encrypted with a passphrase
        raise _refused(field, "must not be encrypted with a passphrase") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise _refused(field, "is not a PEM private key (-----BEGIN PRIVATE KEY-----)") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _refused(field, "must be an RSA key")
    _checked(key.public_key(), field)
    return key


def generate() -> KeyPair:
    """A new pair: RSA-3072, PKCS#8 private key, SubjectPublicKeyInfo public key."""
    key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=3072)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return KeyPair(private_pem, public_pem, fingerprint(key.public_key()))


def _checked(key: rsa.RSAPublicKey, field: str) -> rsa.RSAPublicKey:
    if key.key_size < MIN_BITS:
        raise _refused(field, f"is RSA-{key.key_size}: at least {MIN_BITS} bits are needed")
    if key.public_numbers().e != PUBLIC_EXPONENT:
        raise _refused(field, f"must have the public exponent {PUBLIC_EXPONENT}")
    return key


def _pem_bytes(pem: str, field: str) -> bytes:
    if len(pem) > MAX_PEM_CHARS:
        raise _refused(field, f"is longer than {MAX_PEM_CHARS} characters")
    try:
        return pem.strip().encode("ascii")
    except UnicodeEncodeError as exc:
        raise _refused(field, "is not a PEM key (PEM is ASCII)") from exc


def _refused(field: str, problem: str) -> BadRequest:
    return BadRequest(f"{field} {problem}", code=INVALID_KEY)
