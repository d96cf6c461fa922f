"""Authentication: login, bearer tokens (session and machine API tokens) and HTTP Basic.

Tokens are 256-bit random strings; only their SHA-256 is stored, so a table read leaks no usable token.

HTTP Basic, which workflow tools send on every call, would cost an Argon2id verify (~30 ms) and two reads
each time; `BasicCache` keeps the verified ones for a short while (see its docstring for the guarantees).

Every password attempt (a login, an HTTP Basic header not in the cache) goes through `LoginThrottle`
(flowgate.identity.throttle): refused with 429 before any verify while its account or source is locked,
and counted when it fails. An unknown username, a disabled member and a wrong password take the same
path: the same reads (the marker and counters, then a member: when there is none, a decoy item of a
member's shape whose Argon2id hash has the current parameters), one verify of the same cost, the same
writes, the same 401. The decoy is written once per table, by the first unknown username's attempt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from flowgate import passwords
from flowgate.clock import iso, now
from flowgate.db import Item, Page
from flowgate.errors import Forbidden, NotFound, Unauthorized
from flowgate.identity.models import IssuedToken, Principal, Privilege, Role
from flowgate.identity.store import IdentityStore, token_from
from flowgate.identity.throttle import LoginThrottle

TOKEN_PREFIX = "fgt_"  # noqa: S105 - a public prefix, not a secret; it makes leaked tokens easy to find with secret scanners
SESSION, API = "session", "api"

# Verified HTTP Basic credentials are reused this long without a read: the bound on how late a password
# change, a disable or a removal made in *another* container takes effect (in this one it is at once).
BASIC_CACHE_TTL_SECONDS = 30.0
BASIC_CACHE_SIZE = 1024


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


@dataclass(frozen=True)
class _Verified:
    user_id: str
    version: int | None  # the member's version when the password was verified
    principal: Principal
    expires: float  # on the cache's clock


class BasicCache:
    """HTTP Basic credentials verified in this container, reused for `ttl` seconds without a read.

    * Keyed by an HMAC-SHA256 of the whole Authorization header under a random per-process key: neither
      the password nor an unkeyed digest of it (which would be far cheaper to brute-force than Argon2id)
      is ever held. Only the verified principal, the member's id and version are kept.
    * Only successes are cached, so a wrong password still costs a full Argon2id verify (guessing is no
      cheaper than before) and failed attempts cannot evict valid entries.
    * Bounded (LRU, `size` entries) and guarded by a lock.
    * `forget(user_id)` drops a member's entries at once. `IdentityStore` calls it after every write of a
      user item (password, role, privileges, disable), and the composition root shares one store between
      the identity service and the authenticator, so such a change takes effect in the writing container
      immediately; other containers see it when their entry expires, at most `ttl` seconds later.
    * A verification that was in flight while anything was forgotten is not cached (`epoch`): it may have
      read the member before the write.
    """

    def __init__(self, ttl: float, size: int, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, _Verified] = OrderedDict()
        self._lock = threading.Lock()
        self._epoch = 0

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.size > 0

    @property
    def epoch(self) -> int:
        """Changes whenever something is forgotten; pass it back to `put`."""
        return self._epoch

    def key(self, authorization: str) -> bytes:
        return hmac.new(self._key, authorization.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def get(self, key: bytes) -> _Verified | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires <= self.clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry

    def put(self, key: bytes, user: Item, principal: Principal, epoch: int) -> None:
        """Remember a success, unless something was forgotten since `epoch` was read."""
        if not self.enabled:
            return
        version = user.get("version")
        entry = _Verified(
            user_id=str(user["id"]),
            version=int(version) if version is not None else None,
            principal=principal,
            expires=self.clock() + self.ttl,
        )
        with self._lock:
            if epoch != self._epoch:
                return
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def drop(self, key: bytes) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def forget(self, user_id: str) -> None:
        with self._lock:
            self._epoch += 1
            for key in [k for k, e in self._entries.items() if e.user_id == user_id]:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


class Authenticator:
    """Logins, tokens and the principal behind a request. Verified HTTP Basic credentials are reused from
    a `BasicCache` for `basic_cache_ttl_seconds` (30 s): a repeated header costs no AWS call and no
    Argon2id verify; the store's writes of a member forget them at once in this container. Every attempt
    that verifies a password is throttled by `throttle` (by default a `LoginThrottle` on `store` with its
    default limits); a cache hit verifies nothing, so it is neither throttled nor counted."""

    def __init__(
        self,
        store: IdentityStore,
        token_ttl_seconds: int,
        *,
        basic_cache_ttl_seconds: float = BASIC_CACHE_TTL_SECONDS,
        basic_cache_size: int = BASIC_CACHE_SIZE,
        basic_revalidate: bool = False,
        clock: Callable[[], float] = time.monotonic,
        throttle: LoginThrottle | None = None,
    ) -> None:
        """`basic_cache_ttl_seconds` <= 0 turns the Basic cache off. With `basic_revalidate`, a cache hit
        still reads the member (one GetItem, no Argon2id) and is used only while the member's version is
        unchanged and the member is not disabled: changes then take effect in every container at once."""
        self.store = store
        self.token_ttl = timedelta(seconds=token_ttl_seconds)
        self.basic_cache = BasicCache(basic_cache_ttl_seconds, basic_cache_size, clock)
        self.basic_revalidate = basic_revalidate
        self.throttle = throttle if throttle is not None else LoginThrottle(store)
        store.on_user_changed(self.forget)

    def forget(self, user_id: str) -> None:
        """Drop the member's cached Basic credentials: call after changing their password, role,
        privileges or disabled flag, or removing them (`IdentityStore` does so for its own writes)."""
        self.basic_cache.forget(user_id)

    # ---- credentials ----
    def check_password(self, username: str, password: str, source_ip: str | None = None) -> Item:
        """The user whose password this is. The same 401, after the same work, for an unknown username, a
        disabled member and a wrong password; 429 `too_many_attempts` before any verify while the username
        or the source (`source_ip`, the caller's address; None: not known, only the account is throttled)
        is locked."""
        attempt = self.throttle.begin(username, source_ip)
        user = self.store.get_user(attempt.user_id) if attempt.user_id else self._decoy()
        stored = user.get("password_hash") if user is not None else None
        if stored:
            verified = passwords.verify_password(password, str(stored))
        else:
            passwords.burn_time(password)
            verified = False
        if not verified or attempt.user_id is None or user is None or user.get("disabled"):
            self.throttle.failed(attempt)
            raise Unauthorized("invalid username or password", code="invalid_credentials")
        self.throttle.succeeded(attempt)
        return user

    def _decoy(self) -> Item:
        """The member an unknown username is checked against: read like a member (one GetItem), disabled,
        with no username marker and no index keys, so nothing can ever log in as it or list it."""
        stored = self.store.get_login_decoy()
        if stored is not None:
            return stored
        placeholder = str(uuid.uuid4())
        return self.store.put_login_decoy(
            {
                "id": placeholder,
                "username": "decoy-" + placeholder[:8],
                "contract_id": placeholder,
                "role": Role.MEMBER.value,
                "privileges": [],
                "password_hash": passwords.hash_password(secrets.token_urlsafe(32)),
                "created_at": iso(now()),
                "version": 1,
                "disabled": True,
                "padding": "CONTRACT#" + placeholder + "#MEMBERS",  # the size of a member's index keys
            }
        )

    def login(
        self, username: str, password: str, source_ip: str | None = None, *, name: str = "login"
    ) -> IssuedToken:
        """A session token for a password: what `POST /auth/login` and the EFT-style admin login
        (`name="eft-admin"`) hand out."""
        user = self.check_password(username, password, source_ip)
        return self._issue(user, SESSION, name=name, lifetime=self.token_ttl)

    def session_principal(self, token: str) -> tuple[Principal, str | None]:
        """The principal of a *session* token (one a password login issued) and when it expires: the
        EFT-style admin API takes only these, never machine API tokens or HTTP Basic."""
        item = self._token_item(token)
        if item.get("kind") != SESSION:
            raise Unauthorized("the admin API takes the token of a password login", code="invalid_token")
        return principal_of(self._user_of(item)), item.get("expires_at")

    def logout(self, token: str) -> None:
        """End a session: its token stops working at once (an unknown or expired one is already gone)."""
        item = self.store.get_token(_hash(token)) if token.startswith(TOKEN_PREFIX) else None
        if item is not None:
            self.store.delete_token(item)

    def lockouts(self, principal: Principal, day: str, limit: int, cursor: str | None) -> Page:
        """The lockouts of one day (`YYYY-MM-DD`, UTC), for the platform admin only."""
        if not principal.platform_admin:
            raise Forbidden("only the platform admin may read the lockout audit")
        return self.throttle.lockouts(day, limit, cursor)

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
    def authenticate(self, authorization: str | None, source_ip: str | None = None) -> Principal:
        """The principal behind an `Authorization` header (Bearer token or HTTP Basic); `source_ip` is the
        caller's address, which HTTP Basic's password attempts are throttled by."""
        if not authorization:
            raise Unauthorized(
                "authentication required: send 'Authorization: Bearer <token>'", code="missing_credentials"
            )
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            return principal_of(self._user_of_token(credentials))
        if scheme.lower() == "basic" and credentials:
            return self._basic(authorization, credentials, source_ip)
        raise Unauthorized(
            "unsupported Authorization scheme; use Bearer or Basic", code="invalid_credentials"
        )

    def _basic(self, authorization: str, credentials: str, source_ip: str | None) -> Principal:
        cache = self.basic_cache
        key = cache.key(authorization) if cache.enabled else b""
        hit = cache.get(key) if cache.enabled else None
        if hit is not None and self._still_current(hit):
            return hit.principal
        if hit is not None:
            cache.drop(key)
        epoch = cache.epoch  # read before the member is, so a write in between is noticed
        username, password = _decode_basic(credentials)
        user = self.check_password(username, password, source_ip)
        principal = principal_of(user)
        if cache.enabled:
            cache.put(key, user, principal, epoch)
        return principal

    def _still_current(self, hit: _Verified) -> bool:
        if not self.basic_revalidate:
            return True
        user = self.store.get_user(hit.user_id)
        return user is not None and not user.get("disabled") and user.get("version") == hit.version

    def _user_of_token(self, token: str) -> Item:
        return self._user_of(self._token_item(token))

    def _token_item(self, token: str) -> Item:
        item = self.store.get_token(_hash(token)) if token.startswith(TOKEN_PREFIX) else None
        if item is None:
            raise Unauthorized("invalid token", code="invalid_token")
        if "expires_epoch" in item and item["expires_epoch"] <= now().timestamp():
            raise Unauthorized("token expired; log in again", code="token_expired")
        return item

    def _user_of(self, item: Item) -> Item:
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


__all__ = ["API", "SESSION", "Authenticator", "BasicCache", "principal_of", "token_from"]
