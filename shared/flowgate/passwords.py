"""Password hashing with Argon2id (memory-hard, from `cryptography`), stored as a PHC string so the
parameters can be raised later without breaking existing hashes."""

from __future__ import annotations

import base64
import hmac
import os
from typing import NamedTuple

# OWASP's minimum for Argon2id: 19 MiB, 2 passes, 1 lane (~30 ms here).
MEMORY_KIB = 19 * 1024
ITERATIONS = 2
LANES = 1
HASH_LENGTH = 32
SALT_LENGTH = 16


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


class Params(NamedTuple):
    memory_kib: int
    iterations: int
    lanes: int
    length: int


def _derive(password: str, salt: bytes, p: Params) -> bytes:
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    kdf = Argon2id(
        salt=salt, length=p.length, iterations=p.iterations, lanes=p.lanes, memory_cost=p.memory_kib
    )
    return kdf.derive(password.encode())


def hash_password(password: str) -> str:
    salt = os.urandom(SALT_LENGTH)
    digest = _derive(password, salt, Params(MEMORY_KIB, ITERATIONS, LANES, HASH_LENGTH))
    return f"$argon2id$v=19$m={MEMORY_KIB},t={ITERATIONS},p={LANES}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches; a malformed stored hash never matches."""
    try:
        _, algorithm, _version, params, salt, digest = encoded.split("$")
        if algorithm != "argon2id":
            return False
        p = dict(kv.split("=", 1) for kv in params.split(","))
        expected = _unb64(digest)
        actual = _derive(password, _unb64(salt), Params(int(p["m"]), int(p["t"]), int(p["p"]), len(expected)))
    except (ValueError, KeyError):
        return False
    return hmac.compare_digest(actual, expected)


# Verified against unknown usernames so that a miss costs as much time as a wrong password.
_DECOY = (
    f"$argon2id$v=19$m={MEMORY_KIB},t={ITERATIONS},p={LANES}${_b64(b'0' * SALT_LENGTH)}${_b64(b'0' * 32)}"
)


def burn_time(password: str) -> None:
    verify_password(password, _DECOY)
