"""Authentication: login, bearer tokens (session and machine API tokens) and HTTP Basic.

Tokens are 256-bit random strings; only their SHA-256 is stored, so a table read leaks no usable token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from flowgate import passwords
from flowgate.db import Item, Page
from flowgate.errors import NotFound, Unauthorized
from flowgate.identity.models import IssuedToken, Principal, Privilege, Role
from flowgate.identity.store import IdentityStore, token_from

TOKEN_PREFIX = "fgt_"  # noqa: S105 - a public prefix, not a secret; it makes leaked tokens easy to find with secret scanners
SESSION, API = "session", "api"


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def principal_of(user: Item) -> Principal:
    role = user.get("role")
    return Principal(
        user_id=str(user["id"]),
        username=str(user["username"]),
        contract_id=str(user["contract_id"]) if user.get("contract_id") else None,
        role=Role(str(role)) if role else None,
        privileges=frozenset(Privilege(str(p)) for p in user.get("privileges", []) or []),
        platform_admin=bool(user.get("platform_admin", False)),
    )


class Authenticator:
    def __init__(self, store: IdentityStore, token_ttl_seconds: int) -> None:
        self.store = store
        self.token_ttl = timedelta(seconds=token_ttl_seconds)

    # ---- credentials ----
    def check_password(self, username: str, password: str) -> Item:
        """The user whose password this is; the same 401 for unknown users and wrong passwords."""
        uid = self.store.find_user_id(username)
        user = self.store.get_user(uid) if uid else None
        if user is None or user.get("disabled"):
            passwords.burn_time(password)
            raise Unauthorized("invalid username or password", code="invalid_credentials")
        if not passwords.verify_password(password, str(user["password_hash"])):
            raise Unauthorized("invalid username or password", code="invalid_credentials")
        return user

    def login(self, username: str, password: str) -> IssuedToken:
        user = self.check_password(username, password)
        return self._issue(user, SESSION, name="login", lifetime=self.token_ttl)

    def create_api_token(self, principal: Principal, name: str, days: int | None) -> IssuedToken:
        user = self.store.get_user(principal.user_id)
        if user is None:
            raise Unauthorized("the account no longer exists")
        return self._issue(user, API, name=name, lifetime=timedelta(days=days) if days else None)

    def _issue(self, user: Item, kind: str, *, name: str, lifetime: timedelta | None) -> IssuedToken:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = str(uuid.uuid4())
        expires = now() + lifetime if lifetime else None
        item: Item = {
            "id": token_id,
            "user_id": user["id"],
            "kind": kind,
            "name": name,
            "created_at": iso(now()),
        }
        if expires:
            # TTL removes the item a day after expiry; until then the check below refuses it.
            item.update(
                expires_at=iso(expires),
                expires_epoch=int(expires.timestamp()),
                ttl=int(expires.timestamp()) + 86400,
            )
        self.store.put_token(_hash(token), item)
        return IssuedToken(token=token, expires_at=item.get("expires_at"), id=token_id, name=name)

    # ---- requests ----
    def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an `Authorization` header (Bearer token or HTTP Basic)."""
        if not authorization:
            raise Unauthorized(
                "authentication required: send 'Authorization: Bearer <token>'", code="missing_credentials"
            )
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            return principal_of(self._user_of_token(credentials))
        if scheme.lower() == "basic" and credentials:
            username, password = _decode_basic(credentials)
            return principal_of(self.check_password(username, password))
        raise Unauthorized(
            "unsupported Authorization scheme; use Bearer or Basic", code="invalid_credentials"
        )

    def _user_of_token(self, token: str) -> Item:
        item = self.store.get_token(_hash(token)) if token.startswith(TOKEN_PREFIX) else None
        if item is None:
            raise Unauthorized("invalid token", code="invalid_token")
        if "expires_epoch" in item and item["expires_epoch"] <= now().timestamp():
            raise Unauthorized("token expired; log in again", code="token_expired")
        user = self.store.get_user(item["user_id"])
        if user is None or user.get("disabled"):
            raise Unauthorized("invalid token", code="invalid_token")
        return user

    # ---- token management ----
    def list_api_tokens(self, principal: Principal, limit: int, cursor: str | None) -> Page:
        return self.store.list_tokens(principal.user_id, API, limit, cursor)

    def revoke_api_token(self, principal: Principal, token_id: str) -> None:
        item = self.store.find_token(principal.user_id, API, token_id)
        if item is None:
            raise NotFound("token not found")
        self.store.delete_token(item)


def _decode_basic(credentials: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthorized("malformed Basic credentials", code="invalid_credentials") from exc
    username, sep, password = decoded.partition(":")
    if not sep or not username:
        raise Unauthorized("malformed Basic credentials", code="invalid_credentials")
    return username, password


__all__ = ["API", "SESSION", "Authenticator", "iso", "now", "principal_of", "token_from"]
