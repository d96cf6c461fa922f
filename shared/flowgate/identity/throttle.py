"""Throttling of failed password attempts, per account and per source, held in the table so that it
holds across Lambda containers. A login (`POST /auth/login`) and an HTTP Basic authentication that has
to verify a password are the same kind of attempt and count alike.

* **Per account** (the username as sent, lowercased, whether or not anyone has it, so a lock tells
  nothing about who exists): every `account_failures`-th failure of a streak locks the username,
  for `account_lock_seconds` the first time, doubling each time after, capped at
  `account_max_lock_seconds`. The streak is forgotten `account_reset_seconds` after its last failure,
  and by a successful login. The lock is bounded: no attacker can lock anyone for longer than the cap
  without failing again after it, and each new lock costs them another `account_failures` failures.
  One who keeps doing so keeps the username locked, but only its password: the member's session and
  API tokens (and a Basic header this container has cached) go on working, as they test no password.
* **Per source** (the caller's address; IPv6 by its /64, which one host usually holds whole): at
  `source_failures` failures in a window of `source_window_seconds` from its first failure, every
  attempt from that source is refused for `source_lock_seconds`. Successes never reset it (one valid
  account must not buy another guessing round).
* A locked account or source is refused with 429 `too_many_attempts` and `Retry-After` **before** any
  password is verified: while locked, a guess tests nothing.

Costs per attempt: one BatchGetItem (the username marker and both counters: the check rides on the read
the login needs anyway); a failure adds one conditional UpdateItem per counter (ADD, exact under
concurrency), and the failure that locks one more UpdateItem and the audit PutItem; a success adds an
UpdateItem only when the account had failures to forget. Attempts refused while locked write nothing.
A counter whose failures have reached its next lock counts as locked on the read, even before that lock
is written, so only attempts that had already read it when the limiting failure was counted get past the
limit (at most the attempts then in flight); they are counted too, towards the next lock.

Every lockout is recorded (`AUDIT#LOGIN#<day>`: who, from where, when, until). Nothing here ever holds
or logs a password.
"""

from __future__ import annotations

import hashlib
import ipaddress
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

from flowgate.clock import Clock, iso, iso_ms, now
from flowgate.db import Page
from flowgate.errors import TooManyRequests
from flowgate.identity.store import (
    Counter,
    IdentityStore,
    account_throttle_key,
    login_subject,
    source_throttle_key,
)
from flowgate.observability import count, logger

TOO_MANY_ATTEMPTS = "too_many_attempts"
AUDIT_RETENTION_DAYS = 90

Kind = Literal["account", "source"]


@dataclass(frozen=True)
class Policy:
    """How one kind of counter locks: every `limit`-th failure counted locks it, the n-th lock for
    `lock_seconds * 2**(n-1)`, at most `max_lock_seconds`. The count is forgotten `window_seconds`
    after its first failure, or (`sliding`) after its latest one, and never while locked."""

    limit: int
    window_seconds: int
    lock_seconds: int
    max_lock_seconds: int
    sliding: bool

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window_seconds < 1 or not 1 <= self.lock_seconds <= self.max_lock_seconds:
            raise ValueError(f"invalid throttle policy {self}")

    def due(self, failures: int) -> int:
        """How many locks `failures` failures have earned (0: none yet)."""
        return max(failures, 0) // self.limit

    def lock_for(self, level: int) -> int:
        """Seconds of the `level`-th lock (1-based)."""
        doublings = min(max(level - 1, 0), 30)
        return min(self.max_lock_seconds, self.lock_seconds * (1 << doublings))


def source_of(address: str | None) -> str | None:
    """The throttled source of a caller's address: IPv4 as is, IPv4-mapped IPv6 as IPv4, other IPv6 by
    its /64; anything that is not an address by a digest (never raw in a key); None when unknown."""
    if not address or not address.strip():
        return None
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return "~" + hashlib.sha256(address.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(frozen=True)
class Attempt:
    """A password attempt that may go on: what the one read found (see `LoginThrottle.begin`)."""

    subject: str  # the account part of the keys (`store.login_subject`)
    source: str | None  # the throttled source (`source_of`)
    user_id: str | None  # the user the username names, if any
    account: Counter
    source_counter: Counter | None


class LoginLockout(BaseModel):
    """One lockout, as the audit holds it."""

    id: str
    at: str
    kind: Kind
    username: str  # the username of the attempt that locked (a digest if it was not a username at all)
    user_id: str | None = None  # the member it names, if any (account lockouts)
    source: str | None = None
    failures: int
    level: int
    until: str
    seconds: int


class LoginThrottle:
    """The per-account and per-source throttle of password attempts (see the module docstring)."""

    def __init__(
        self,
        store: IdentityStore,
        *,
        account_failures: int = 5,
        account_lock_seconds: int = 60,
        account_max_lock_seconds: int = 900,
        account_reset_seconds: int = 3600,
        source_failures: int = 50,
        source_window_seconds: int = 300,
        source_lock_seconds: int = 300,
        audit_retention_days: int = AUDIT_RETENTION_DAYS,
        clock: Clock = now,
    ) -> None:
        self.store = store
        self.account = Policy(
            account_failures,
            max(account_reset_seconds, account_max_lock_seconds),
            account_lock_seconds,
            account_max_lock_seconds,
            sliding=True,
        )
        self.source = Policy(
            source_failures, source_window_seconds, source_lock_seconds, source_lock_seconds, sliding=False
        )
        self.audit_retention_seconds = audit_retention_days * 86400
        self.clock = clock

    def _now(self) -> int:
        return int(self.clock().timestamp())

    def begin(self, username: str, source_ip: str | None) -> Attempt:
        """Read what is known of this attempt (one BatchGetItem); 429 if its account or source is locked.

        A counter whose failures have reached a lock that is not written yet (its writer is a moment
        behind, or died) counts as locked too, and this call writes that lock: so no attempt gets past a
        limit once the failure that reached it is counted."""
        subject, source = login_subject(username), source_of(source_ip)
        found = self.store.login_lookup(subject, source)
        attempt = Attempt(subject, source, found.user_id, found.account, found.source)
        at = self._now()
        waits = [0]
        for kind, policy, counter in self._counters(attempt):
            if not counter.live(at):
                continue
            due = policy.due(counter.failures)
            if due > counter.locks:
                waits.append(self._lock(attempt, kind, counter, level=due, at=at) or policy.lock_for(due))
            else:
                waits.append(counter.locked_until - at)
        wait = max(waits)
        if wait > 0:
            logger.info("password attempt refused: throttled", extra={"retry_after": wait})
            count("LoginsThrottled")
            raise TooManyRequests(
                f"too many failed sign-in attempts; try again in {wait} seconds",
                retry_after=wait,
                code=TOO_MANY_ATTEMPTS,
            )
        return attempt

    def failed(self, attempt: Attempt) -> None:
        """Count a failed attempt against its account and its source; lock either when due."""
        count("LoginFailures")
        at = self._now()
        for kind, policy, read in self._counters(attempt):
            after = self.store.count_failure(
                self._key(attempt, kind),
                now=at,
                resets_at=at + policy.window_seconds,
                slide=policy.sliding,
                fresh=not read.live(at),
            )
            if after is None:
                logger.warning("a failed attempt could not be counted", extra={"kind": kind})
                continue
            due = policy.due(after.failures)
            if due > after.locks:
                self._lock(attempt, kind, after, level=due, at=at)

    def succeeded(self, attempt: Attempt) -> None:
        """A verified password: the account's streak is forgotten (a write only if there is one)."""
        at = self._now()
        if attempt.account.live(at) and (attempt.account.failures or attempt.account.locks):
            self.store.reset_account(attempt.subject, now=at)

    def lockouts(self, day: str, limit: int, cursor: str | None) -> Page:
        """The lockouts of one day (`YYYY-MM-DD`, UTC), oldest first."""
        return self.store.list_lockouts(day, limit, cursor)

    def _counters(self, attempt: Attempt) -> list[tuple[Kind, Policy, Counter]]:
        counters: list[tuple[Kind, Policy, Counter]] = [("account", self.account, attempt.account)]
        if attempt.source is not None and attempt.source_counter is not None:
            counters.append(("source", self.source, attempt.source_counter))
        return counters

    @staticmethod
    def _key(attempt: Attempt, kind: Kind) -> dict[str, str]:
        if kind == "account":
            return account_throttle_key(attempt.subject)
        return source_throttle_key(str(attempt.source))

    def _lock(self, attempt: Attempt, kind: Kind, counter: Counter, *, level: int, at: int) -> int | None:
        """Lock the counter at `level` and record the lockout; its seconds, None if another call did."""
        seconds = (self.account if kind == "account" else self.source).lock_for(level)
        until = at + seconds
        key = self._key(attempt, kind)
        if not self.store.lock(key, level=level, until=until, resets_at=max(counter.resets_at, until)):
            return None
        moment = self.clock()
        lockout = LoginLockout(
            id=str(uuid.uuid4()),
            at=iso_ms(moment),
            kind=kind,
            username=attempt.subject,
            user_id=attempt.user_id if kind == "account" else None,
            source=attempt.source,
            failures=counter.failures,
            level=level,
            until=iso(datetime.fromtimestamp(until, tz=UTC)),
            seconds=seconds,
        )
        self.store.put_lockout({**lockout.model_dump(), "ttl": at + self.audit_retention_seconds})
        count("LoginLockouts")
        logger.warning(
            "password attempts locked",
            extra={"kind": kind, "level": level, "seconds": seconds, "lockout_id": lockout.id},
        )
        return seconds


__all__ = ["TOO_MANY_ATTEMPTS", "Attempt", "LoginLockout", "LoginThrottle", "Policy", "source_of"]
