"""The HTTP Basic cache of the Authenticator: a repeated header inside the TTL costs no read and no Argon2id
verify; failures are never cached; the identity store's own writes of a member take effect at once. And
how it meets the login throttle: a header that has to verify a password is an attempt like a login (counted,
refused while locked, before any verify), a cache hit verifies nothing and is neither.

The table and the store's throttle writes are in memory here; tests/handler/test_login_throttle.py runs the
real ones against moto."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from flowgate import passwords
from flowgate.db import Item, StaleVersion, Table, Write
from flowgate.errors import TooManyRequests, Unauthorized
from flowgate.identity.auth import Authenticator
from flowgate.identity.models import Role
from flowgate.identity.store import (
    Counter,
    IdentityStore,
    account_throttle_key,
    user_key,
    username_key,
)
from flowgate.identity.throttle import LoginThrottle

TTL = 30.0


class FakeTable(Table):
    """The platform table in memory: counts reads, applies versioned updates (as `versioned_update` builds
    them) and deletes, so the real `IdentityStore` runs on top of it."""

    def __init__(self) -> None:
        super().__init__("fake-table")
        self.items: dict[tuple[str, str], Item] = {}
        self.reads = 0
        self.writes = 0

    def get(self, pk: str, sk: str) -> Item | None:
        self.reads += 1
        item = self.items.get((pk, sk))
        return dict(item) if item is not None else None

    def batch_get(self, keys: Sequence[tuple[str, str]]) -> list[Item]:
        self.reads += 1
        return [{"PK": pk, "SK": sk, **self.items[(pk, sk)]} for pk, sk in keys if (pk, sk) in self.items]

    def put(
        self, item: Mapping[str, Any], *, condition: str | None = None, conflict: str = "", **_: Any
    ) -> None:
        self.writes += 1
        self.items[(item["PK"], item["SK"])] = dict(item)

    def transact(self, writes: Sequence[Write]) -> None:
        for w in writes:
            at = (w.key["PK"], w.key["SK"])
            if w.kind == "Delete":
                self.items.pop(at, None)
                continue
            assert w.kind == "Update"
            assert w.update is not None
            current = self.items[at]
            if current["version"] != w.values[":expected"]:
                raise StaleVersion(w.conflict)
            for placeholder, attr in w.names.items():
                value = w.values.get(":" + placeholder[1:])
                if attr == "version":
                    current["version"] = w.values[":next"]
                elif value is None:
                    current.pop(attr, None)
                else:
                    current[attr] = value


class FakeStore(IdentityStore):
    """The identity store with its throttle writes (L2-L5 of docs/access-patterns.md) applied in memory,
    as their conditions make DynamoDB apply them; each one counts as a write of the table."""

    table: FakeTable

    def _counter(self, key: Mapping[str, str]) -> Item:
        return self.table.items.setdefault((key["PK"], key["SK"]), {})

    def count_failure(
        self, key: Mapping[str, str], *, now: int, resets_at: int, slide: bool, fresh: bool
    ) -> Counter | None:
        self.table.writes += 1
        item = self._counter(key)
        if Counter.of(item).live(now):
            item["failures"] += 1
            if slide:
                item["resets_at"] = resets_at
        else:
            item.update(failures=1, resets_at=resets_at, locked_until=0, locks=0)
        return Counter.of(item)

    def lock(self, key: Mapping[str, str], *, level: int, until: int, resets_at: int) -> bool:
        self.table.writes += 1
        item = self._counter(key)
        if item.get("locks", 0) >= level:
            return False
        item.update(locked_until=until, locks=level, resets_at=resets_at)
        return True

    def put_lockout(self, audit: Item) -> None:
        self.table.writes += 1
        self.table.items[("AUDIT#LOGIN", str(audit["id"]))] = dict(audit)

    def reset_account(self, subject: str, *, now: int) -> None:
        self.table.writes += 1
        item = self._counter(account_throttle_key(subject))
        if item.get("locked_until", 0) <= now:
            item.update(failures=0, locks=0, locked_until=0, resets_at=now)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class WallClock:
    """The throttle's clock: a settable UTC time."""

    def __init__(self) -> None:
        self.at = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.at


class Verifications:
    """A spy on Argon2id verification: counts the calls and can run something in the middle of one."""

    def __init__(self) -> None:
        self.count = 0
        self.during: Any = None
        self._real = passwords.verify_password

    def __call__(self, password: str, encoded: str) -> bool:
        self.count += 1
        if self.during is not None:
            self.during()
        return self._real(password, encoded)


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> Verifications:
    spy = Verifications()
    monkeypatch.setattr(passwords, "verify_password", spy)
    return spy


@pytest.fixture
def table() -> FakeTable:
    return FakeTable()


@pytest.fixture
def store(table: FakeTable) -> IdentityStore:
    return FakeStore(table)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


@pytest.fixture
def authenticator(store: IdentityStore, clock: Clock, wall: WallClock) -> Authenticator:
    return Authenticator(
        store, 3600, basic_cache_ttl_seconds=TTL, clock=clock, throttle=LoginThrottle(store, clock=wall)
    )


def add_member(table: FakeTable, username: str, password: str, **extra: Any) -> Item:
    uid = f"id-{username}"
    item: Item = {
        "id": uid,
        "username": username,
        "contract_id": "c-1",
        "role": Role.MEMBER.value,
        "privileges": [],
        "password_hash": passwords.hash_password(password),
        "created_at": "2024-01-01T00:00:00Z",
        "version": 1,
        **extra,
    }
    table.items[(user_key(uid)["PK"], user_key(uid)["SK"])] = item
    table.items[(username_key(username)["PK"], username_key(username)["SK"])] = {"user_id": uid}
    return item


def basic(username: str, password: str, scheme: str = "Basic") -> str:
    return f"{scheme} " + base64.b64encode(f"{username}:{password}".encode()).decode()


def member(table: FakeTable, uid: str) -> Item:
    return dict(table.items[(user_key(uid)["PK"], user_key(uid)["SK"])])


# ---- reuse -----------------------------------------------------------------------------------


def test_a_repeated_header_inside_the_ttl_costs_no_read_and_no_verify(
    authenticator: Authenticator, table: FakeTable, verifications: Verifications, clock: Clock
):
    # Given a member who authenticated once with HTTP Basic
    add_member(table, "approver", "approver-password")
    header = basic("approver", "approver-password")
    first = authenticator.authenticate(header)
    assert (table.reads, verifications.count) == (2, 1)
    # When the same header comes again just inside the TTL
    clock.now += TTL - 0.001
    again = [authenticator.authenticate(header) for _ in range(5)]
    # Then it is the same principal, with no further read and no further Argon2id verify
    assert all(p == first for p in again)
    assert first.username == "approver"
    assert (table.reads, verifications.count) == (2, 1)


def test_after_the_ttl_the_password_is_verified_again(
    authenticator: Authenticator, table: FakeTable, verifications: Verifications, clock: Clock
):
    # Given a cached header
    add_member(table, "approver", "approver-password")
    header = basic("approver", "approver-password")
    authenticator.authenticate(header)
    # When the TTL has passed
    clock.now += TTL
    authenticator.authenticate(header)
    # Then the member is read and the password verified once more, and that result is cached anew
    assert (table.reads, verifications.count) == (4, 2)
    authenticator.authenticate(header)
    assert (table.reads, verifications.count) == (4, 2)


def test_a_wrong_password_is_never_cached_and_costs_a_full_verify_each_time(
    authenticator: Authenticator, table: FakeTable, verifications: Verifications
):
    # Given a member
    add_member(table, "approver", "approver-password")
    wrong = basic("approver", "not-the-password")
    # When a wrong password is tried again and again, before and after a correct login
    for _ in range(2):
        with pytest.raises(Unauthorized):
            authenticator.authenticate(wrong)
    authenticator.authenticate(basic("approver", "approver-password"))
    with pytest.raises(Unauthorized):
        authenticator.authenticate(wrong)
    # Then every wrong attempt paid a verify (guessing is no cheaper than without a cache) and nothing
    # but the success was remembered
    assert verifications.count == 4
    assert len(authenticator.basic_cache) == 1


def test_unknown_users_and_malformed_headers_are_not_cached(
    authenticator: Authenticator, table: FakeTable, verifications: Verifications
):
    for header in (basic("nobody", "whatever-password"), "Basic !!!", "Basic " + "Zm9v"):
        for _ in range(2):
            with pytest.raises(Unauthorized):
                authenticator.authenticate(header)
    assert len(authenticator.basic_cache) == 0
    assert verifications.count == 2  # the decoy verify of the unknown user, both times


def test_a_different_header_has_its_own_entry(
    authenticator: Authenticator, table: FakeTable, verifications: Verifications
):
    # Given two members, one of them cached
    add_member(table, "approver", "approver-password")
    add_member(table, "other", "other-password-1")
    authenticator.authenticate(basic("approver", "approver-password"))
    # When another member, and the first member with a differently spelt header, authenticate
    other = authenticator.authenticate(basic("other", "other-password-1"))
    same = authenticator.authenticate(basic("approver", "approver-password", scheme="basic"))
    # Then each is verified on its own and gets its own principal
    assert (other.username, same.username) == ("other", "approver")
    assert verifications.count == 3
    assert len(authenticator.basic_cache) == 3


def test_the_cache_holds_neither_the_password_nor_the_header(
    authenticator: Authenticator, table: FakeTable, verifications: Verifications
):
    add_member(table, "approver", "approver-password")
    header = basic("approver", "approver-password")
    authenticator.authenticate(header)
    cache = authenticator.basic_cache
    held = repr(list(cache._entries.items()))
    assert "approver-password" not in held
    assert header.split()[1] not in held
    assert "password_hash" not in held
    # and the key is a keyed hash: another process (another key) derives another one
    other = Authenticator(IdentityStore(FakeTable()), 3600)
    assert cache.key(header) != other.basic_cache.key(header)
    assert len(cache.key(header)) == 32


def test_the_cache_is_bounded_least_recently_used_first(
    store: IdentityStore, table: FakeTable, verifications: Verifications, clock: Clock
):
    # Given a cache of two entries holding a and b, a used last
    authenticator = Authenticator(store, 3600, basic_cache_size=2, clock=clock)
    for name in ("aaa", "bbb", "ccc"):
        add_member(table, name, f"{name}-password-1")
    authenticator.authenticate(basic("aaa", "aaa-password-1"))
    authenticator.authenticate(basic("bbb", "bbb-password-1"))
    authenticator.authenticate(basic("aaa", "aaa-password-1"))
    # When a third member comes
    authenticator.authenticate(basic("ccc", "ccc-password-1"))
    # Then b, the least recently used, was dropped: a is still free, b is verified again
    assert verifications.count == 3
    authenticator.authenticate(basic("aaa", "aaa-password-1"))
    assert verifications.count == 3
    authenticator.authenticate(basic("bbb", "bbb-password-1"))
    assert verifications.count == 4
    assert len(authenticator.basic_cache) == 2


def test_a_ttl_of_zero_turns_the_cache_off(
    store: IdentityStore, table: FakeTable, verifications: Verifications
):
    authenticator = Authenticator(store, 3600, basic_cache_ttl_seconds=0)
    add_member(table, "approver", "approver-password")
    for _ in range(2):
        authenticator.authenticate(basic("approver", "approver-password"))
    assert verifications.count == 2
    assert len(authenticator.basic_cache) == 0


def test_the_old_constructor_call_still_works(store: IdentityStore, table: FakeTable):
    add_member(table, "approver", "approver-password")
    authenticator = Authenticator(store, 3600)
    assert authenticator.authenticate(basic("approver", "approver-password")).username == "approver"
    assert authenticator.basic_cache.ttl == 30.0


# ---- changes of the member take effect at once in this container ------------------------------


def test_a_password_change_refuses_the_old_header_at_once(
    authenticator: Authenticator, store: IdentityStore, table: FakeTable, verifications: Verifications
):
    # Given a cached header
    item = add_member(table, "approver", "approver-password")
    old = basic("approver", "approver-password")
    authenticator.authenticate(old)
    # When the password is changed through the identity store (as IdentityService.update_member does)
    store.update_user(member(table, item["id"]), {"password_hash": passwords.hash_password("a-new-password")})
    # Then the old header is refused right away, inside the TTL, and the new one works
    with pytest.raises(Unauthorized):
        authenticator.authenticate(old)
    assert authenticator.authenticate(basic("approver", "a-new-password")).username == "approver"


def test_disabling_a_member_refuses_them_at_once(
    authenticator: Authenticator, store: IdentityStore, table: FakeTable, verifications: Verifications
):
    item = add_member(table, "approver", "approver-password")
    header = basic("approver", "approver-password")
    authenticator.authenticate(header)
    store.update_user(member(table, item["id"]), {"disabled": True})
    with pytest.raises(Unauthorized):
        authenticator.authenticate(header)
    # and it stays refused: the failure was not cached as anything
    with pytest.raises(Unauthorized):
        authenticator.authenticate(header)


def test_a_role_change_shows_in_the_next_principal(
    authenticator: Authenticator, store: IdentityStore, table: FakeTable, verifications: Verifications
):
    item = add_member(table, "approver", "approver-password")
    header = basic("approver", "approver-password")
    assert authenticator.authenticate(header).role == Role.MEMBER
    store.update_user(
        member(table, item["id"]), {"role": Role.ORG_ADMIN.value, "privileges": ["WORKFLOW_OVERRIDE"]}
    )
    changed = authenticator.authenticate(header)
    assert changed.role == Role.ORG_ADMIN
    assert {p.value for p in changed.privileges} == {"WORKFLOW_OVERRIDE"}


def test_forget_refuses_a_removed_member_at_once(
    authenticator: Authenticator, table: FakeTable, verifications: Verifications
):
    # Given a cached member who is then removed from the table
    item = add_member(table, "approver", "approver-password")
    header = basic("approver", "approver-password")
    authenticator.authenticate(header)
    table.transact([Write("Delete", key=user_key(item["id"])), Write("Delete", key=username_key("approver"))])
    # When the removal tells the authenticator
    authenticator.forget(item["id"])
    # Then the header is refused at once
    with pytest.raises(Unauthorized):
        authenticator.authenticate(header)


def test_forget_leaves_other_members_cached(
    authenticator: Authenticator, table: FakeTable, verifications: Verifications
):
    add_member(table, "approver", "approver-password")
    other = add_member(table, "other", "other-password-1")
    authenticator.authenticate(basic("approver", "approver-password"))
    authenticator.authenticate(basic("other", "other-password-1"))
    authenticator.forget(other["id"])
    authenticator.authenticate(basic("approver", "approver-password"))
    assert verifications.count == 2


def test_a_failed_write_of_the_member_still_forgets(
    authenticator: Authenticator, store: IdentityStore, table: FakeTable, verifications: Verifications
):
    # Given a cached member and a write that fails (here on a stale version; a timeout may have landed)
    item = add_member(table, "approver", "approver-password")
    header = basic("approver", "approver-password")
    authenticator.authenticate(header)
    with pytest.raises(StaleVersion):
        store.update_user({**item, "version": 7}, {"role": Role.OWNER.value})
    # Then the next request verifies again instead of trusting the entry
    authenticator.authenticate(header)
    assert verifications.count == 2


def test_a_verification_overtaken_by_a_write_is_not_cached(
    authenticator: Authenticator, store: IdentityStore, table: FakeTable, verifications: Verifications
):
    # Given a verification during which the member's password is changed (another thread, same container)
    item = add_member(table, "approver", "approver-password")
    header = basic("approver", "approver-password")

    def concurrent_change() -> None:
        verifications.during = None
        store.update_user(
            member(table, item["id"]), {"password_hash": passwords.hash_password("a-new-password")}
        )

    verifications.during = concurrent_change
    authenticator.authenticate(header)  # read the member before the change: it still passes this once
    # Then its result was not kept: the old header is refused from the next request on
    with pytest.raises(Unauthorized):
        authenticator.authenticate(header)


# ---- other containers: the TTL, or revalidation against the member's version ---------------------


def test_a_change_made_in_another_container_shows_after_the_ttl(
    authenticator: Authenticator, table: FakeTable, verifications: Verifications, clock: Clock
):
    # Given a cached header, and a password change written by another container (not through this store)
    item = add_member(table, "approver", "approver-password")
    header = basic("approver", "approver-password")
    authenticator.authenticate(header)
    stored = table.items[(user_key(item["id"])["PK"], user_key(item["id"])["SK"])]
    stored.update(password_hash=passwords.hash_password("a-new-password"), version=2)
    # Then this container serves the entry until the TTL ends, and no longer
    authenticator.authenticate(header)
    clock.now += TTL
    with pytest.raises(Unauthorized):
        authenticator.authenticate(header)


def test_revalidation_costs_one_read_and_sees_other_containers_at_once(
    store: IdentityStore, table: FakeTable, verifications: Verifications, clock: Clock
):
    # Given an authenticator that checks each hit against the member's version
    authenticator = Authenticator(store, 3600, basic_revalidate=True, clock=clock)
    item = add_member(table, "approver", "approver-password")
    header = basic("approver", "approver-password")
    authenticator.authenticate(header)
    # When the header repeats: one read, no verify
    authenticator.authenticate(header)
    assert (table.reads, verifications.count) == (3, 1)
    # When another container disables the member (a version bump this container was not told about)
    stored = table.items[(user_key(item["id"])["PK"], user_key(item["id"])["SK"])]
    stored.update(disabled=True, version=2)
    # Then the header is refused at once
    with pytest.raises(Unauthorized):
        authenticator.authenticate(header)


def test_revalidation_verifies_again_after_a_version_bump(
    store: IdentityStore, table: FakeTable, verifications: Verifications, clock: Clock
):
    authenticator = Authenticator(store, 3600, basic_revalidate=True, clock=clock)
    item = add_member(table, "approver", "approver-password")
    header = basic("approver", "approver-password")
    authenticator.authenticate(header)
    stored = table.items[(user_key(item["id"])["PK"], user_key(item["id"])["SK"])]
    stored.update(role=Role.ORG_ADMIN.value, version=2)
    assert authenticator.authenticate(header).role == Role.ORG_ADMIN
    assert verifications.count == 2


# ---- the login throttle: Basic attempts count, cache hits do not --------------------------------


def test_wrong_basic_passwords_lock_the_account_before_any_further_verify(
    authenticator: Authenticator, table: FakeTable, verifications: Verifications, wall: WallClock
):
    # Given a member, and five wrong passwords sent with HTTP Basic from one address
    add_member(table, "approver", "approver-password")
    for _ in range(5):
        with pytest.raises(Unauthorized):
            authenticator.authenticate(basic("approver", "not-the-password"), "198.51.100.7")
    assert verifications.count == 5
    # When more come, the right password among them, from anywhere
    reads = table.reads
    for header, source in [
        (basic("approver", "another-guess-1"), "198.51.100.7"),
        (basic("approver", "approver-password"), "203.0.113.9"),
        (basic("APPROVER", "approver-password"), None),
    ]:
        with pytest.raises(TooManyRequests) as refused:
            authenticator.authenticate(header, source)
        # Then each is refused with the time to wait, after one read and without verifying a thing
        assert refused.value.code == "too_many_attempts"
        assert refused.value.retry_after == 60
    assert verifications.count == 5
    assert table.reads == reads + 3
    # and once the lock is over, the right password works again
    wall.at += dt.timedelta(seconds=60)
    assert authenticator.authenticate(basic("approver", "approver-password"), "203.0.113.9").username == (
        "approver"
    )


def test_a_cached_header_is_not_throttled_while_the_account_is_locked(
    authenticator: Authenticator, table: FakeTable, verifications: Verifications
):
    # Given a member whose header is cached, and then an attacker who locks their account
    add_member(table, "approver", "approver-password")
    header = basic("approver", "approver-password")
    authenticator.authenticate(header, "203.0.113.9")
    for _ in range(5):
        with pytest.raises(Unauthorized):
            authenticator.authenticate(basic("approver", "a-wrong-guess"), "198.51.100.7")
    with pytest.raises(TooManyRequests):
        authenticator.authenticate(basic("approver", "a-wrong-guess"), "198.51.100.7")
    # When the member's own tool sends its header again inside the cache's TTL
    reads = table.reads
    principal = authenticator.authenticate(header, "203.0.113.9")
    # Then it is served from the cache (it tests no password): no read, no verify, no refusal
    assert principal.username == "approver"
    assert table.reads == reads
    assert verifications.count == 6


def test_an_unknown_user_costs_what_a_wrong_password_costs(
    authenticator: Authenticator, table: FakeTable, verifications: Verifications
):
    # Given a member, and the cost of one wrong password for them and of one for a username nobody has
    # (after the very first unknown username of the table, which stores the decoy it is checked against)
    add_member(table, "approver", "approver-password")
    with pytest.raises(Unauthorized):
        authenticator.authenticate(basic("first-unknown", "not-the-password"), "198.51.100.7")
    costs = []
    for username in ("approver", "nobody-here"):
        before = (table.reads, table.writes, verifications.count)
        with pytest.raises(Unauthorized) as refused:
            authenticator.authenticate(basic(username, "not-the-password"), "198.51.100.7")
        after = (table.reads, table.writes, verifications.count)
        costs.append(([b - a for a, b in zip(before, after, strict=True)], refused.value.message))
    # Then both made the same reads, writes and Argon2id verifies, and said the same
    assert costs[0] == costs[1]
    assert costs[0][0] == [2, 2, 1]  # marker + counters, member (or decoy); account + source; one verify


def test_a_success_forgets_the_accounts_failures(
    authenticator: Authenticator, table: FakeTable, verifications: Verifications
):
    add_member(table, "approver", "approver-password")
    for _ in range(4):
        with pytest.raises(Unauthorized):
            authenticator.authenticate(basic("approver", "not-the-password"), "198.51.100.7")
    authenticator.authenticate(basic("approver", "approver-password"), "198.51.100.7")
    # four more failures do not lock: the streak started again at the success
    for _ in range(4):
        with pytest.raises(Unauthorized):
            authenticator.authenticate(basic("approver", "not-the-password-2"), "198.51.100.7")
    authenticator.forget("id-approver")
    assert authenticator.authenticate(basic("approver", "approver-password"), "198.51.100.7")
