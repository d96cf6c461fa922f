"""RFC 9421 signatures of the sync exchange, with `http-message-signatures` (rsa-pss-sha512).

A request's signature covers `@method`, `@target-uri`, `content-type` and `content-digest` (RFC 9530,
sha-256, computed by the package from the body), with `created`, `keyid` (the key's fingerprint,
`flowgate.sync.keys`), `alg`, a `nonce` and a tag. The package verifies the signature, the algorithm,
the covered components and the digest against the body it is given; what it leaves to us is checked
here on every request: a nonce must be present and never seen before (a conditional write with a TTL,
through `NonceStore`), and `created` must be within MAX_SKEW of now, past or future.

A response is signed the same way over `@status`, `content-type` and `content-digest`, with the
request's nonce as its own: the caller checks that binding, so a response cannot be replayed as the
answer to another request. Every refusal is a 401 with a code saying why; nothing else changes.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import rsa
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException

from flowgate.errors import Unauthorized
from flowgate.sync.keys import fingerprint

MAX_SKEW = dt.timedelta(seconds=300)
CONTENT_TYPE = "application/json"
REQUEST_TAG, RESPONSE_TAG = "flowgate-sync", "flowgate-sync-response"
REQUEST_COMPONENTS = ("@method", "@target-uri", "content-type", "content-digest")
RESPONSE_COMPONENTS = ("@status", "content-type", "content-digest")
MAX_NONCE_CHARS = 128
MAX_SIGNATURE_HEADER = 4096  # an RSA-8192 signature is ~1.4 KB in base64

# Why a signed message was refused (the 401's code).
INVALID_SIGNATURE = "invalid_signature"
STALE_SIGNATURE = "stale_signature"
REPLAYED_NONCE = "replayed_nonce"


class NonceStore(Protocol):
    def remember(self, key_id: str, nonce: str, ttl_seconds: int) -> bool:
        """Record the nonce; False if it was recorded before (a replay)."""
        ...


@dataclass
class _Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Response:
    status_code: int
    headers: dict[str, str]
    request: _Request | None = None


class _Verifier(HTTPMessageVerifier):
    # `created` may be up to MAX_SKEW ahead; with max_age 0 it may be up to MAX_SKEW old.
    max_clock_skew = MAX_SKEW


@dataclass(frozen=True)
class Verified:
    key_id: str
    nonce: str


def sign_request(
    key: rsa.RSAPrivateKey,
    method: str,
    url: str,
    body: bytes,
    *,
    nonce: str | None = None,
    created: dt.datetime | None = None,
) -> dict[str, str]:
    """The headers of a signed request (Content-Type, Content-Digest, Signature-Input, Signature)."""
    message = _Request(method, url, {"Content-Type": CONTENT_TYPE})
    _signer(key).sign(
        message,
        key_id=fingerprint(key.public_key()),
        nonce=nonce or secrets.token_urlsafe(24),
        created=created,
        tag=REQUEST_TAG,
        covered_component_ids=REQUEST_COMPONENTS[:3],  # the package adds content-digest, given the body
        body=body,
    )
    return message.headers


def verify_request(
    keys: Mapping[str, rsa.RSAPublicKey],
    nonces: NonceStore,
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
) -> Verified:
    """Who signed this request (a key in `keys`, by fingerprint), or a 401; records its nonce."""
    message = _Request(method, url, dict(headers))
    result = _verify(keys, message, REQUEST_TAG, REQUEST_COMPONENTS, body)
    nonce = result.nonce
    if not isinstance(nonce, str) or not nonce:
        raise Unauthorized("the signature has no nonce", code=INVALID_SIGNATURE)
    if len(nonce) > MAX_NONCE_CHARS:  # it becomes part of a table key
        raise Unauthorized(f"the nonce is longer than {MAX_NONCE_CHARS} characters", code=INVALID_SIGNATURE)
    key_id = str(result.parameters["keyid"])
    if not nonces.remember(key_id, nonce, ttl_seconds=int(2 * MAX_SKEW.total_seconds())):
        raise Unauthorized("this request was seen before (its nonce is not new)", code=REPLAYED_NONCE)
    return Verified(key_id, nonce)


def sign_response(key: rsa.RSAPrivateKey, status: int, body: bytes, request_nonce: str) -> dict[str, str]:
    """The headers of a signed response to the request of `request_nonce`."""
    message = _Response(status, {"Content-Type": CONTENT_TYPE})
    _signer(key).sign(
        message,
        key_id=fingerprint(key.public_key()),
        nonce=request_nonce,
        tag=RESPONSE_TAG,
        covered_component_ids=RESPONSE_COMPONENTS[:2],
        body=body,
    )
    return message.headers


def verify_response(
    keys: Mapping[str, rsa.RSAPublicKey],
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    request_nonce: str,
) -> str:
    """The fingerprint of the peer key (one of `keys`) that signed this response to the request of
    `request_nonce`; a 401 for any other response."""
    message = _Response(status, dict(headers))
    result = _verify(keys, message, RESPONSE_TAG, RESPONSE_COMPONENTS, body)
    if result.nonce != request_nonce:
        raise Unauthorized("the response answers another request", code=INVALID_SIGNATURE)
    return str(result.parameters["keyid"])


def _signer(key: rsa.RSAPrivateKey) -> HTTPMessageSigner:
    resolver = MappingKeyResolver(public_keys={}, private_keys={fingerprint(key.public_key()): key})
    return HTTPMessageSigner(signature_algorithm=algorithms.RSA_PSS_SHA512, key_resolver=resolver)


def _verify(
    keys: Mapping[str, rsa.RSAPublicKey], message: Any, tag: str, components: tuple[str, ...], body: bytes
) -> Any:
    for name in ("Signature", "Signature-Input"):
        value = next((v for k, v in message.headers.items() if k.lower() == name.lower()), None)
        if value is None or not value.strip():
            raise Unauthorized(f"the {name} header is missing", code=INVALID_SIGNATURE)
        if len(value) > MAX_SIGNATURE_HEADER:
            raise Unauthorized(f"the {name} header is too long", code=INVALID_SIGNATURE)
    verifier = _Verifier(
        signature_algorithm=algorithms.RSA_PSS_SHA512,
        key_resolver=MappingKeyResolver(public_keys=keys, private_keys={}),
    )
    try:
        results = verifier.verify(
            message, max_age=dt.timedelta(0), expect_tag=tag, require_components=components, body=body
        )
    except (InvalidSignature, HTTPMessageSignaturesException) as exc:
        text = str(exc)
        code = STALE_SIGNATURE if ("future" in text or "age exceeds" in text) else INVALID_SIGNATURE
        raise Unauthorized(f"the signature does not verify: {text}", code=code) from exc
    if len(results) != 1:
        raise Unauthorized("exactly one signature is expected", code=INVALID_SIGNATURE)
    result = results[0]
    created = result.parameters.get("created")
    # `created` is whole seconds: compared with whole seconds, 301 s ahead is refused even when the
    # signer's clock was near the end of a second (the package compares it with a fractional now).
    if isinstance(created, int) and created > int(time.time()) + int(MAX_SKEW.total_seconds()):
        raise Unauthorized("the signature was created in the future", code=STALE_SIGNATURE)
    if result.parameters.get("alg") != algorithms.RSA_PSS_SHA512.algorithm_id:
        raise Unauthorized("the signature must name alg rsa-pss-sha512", code=INVALID_SIGNATURE)
    return result
