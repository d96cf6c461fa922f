"""Throttling of failed password attempts through the identity function against moto: per account and per
source, logins and HTTP Basic alike, 429 with Retry-After before any verify, bounded lockouts, the same
answer and the same work for unknown users as for wrong passwords, exact counts under concurrency, an audit
record per lockout, and no password anywhere."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient

from flowgate import passwords
from flowgate.errors import Forbidden
from flowgate.identity.auth import Authenticator
from flowgate.identity.store import account_throttle_key, source_throttle_key
from flowgate.identity.throttle import Policy, source_of
from flowgate.observability import logger
from flowgate.wiring import container
from tests.handler.conftest import ADMIN, Answer, Api, Tenant, lambda_context
from tests.support.apigw import SOURCE_IP, http_request, through_gateway
from tests.support.guessing import ATTEMPTS, THREADS, guess_concurrently

A = "/api/latest"
LOGIN = f"{A}/auth/login"
OTHER_SOURCE = "203.0.113.9"  # another documentation address (RFC 5737)


class Wall:
    """The throttle's clock, moved by hand."""

    def __init__(self) -> None:
        self.at = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += dt.timedelta(seconds=seconds)


@pytest.fixture
def wall(api: Api) -> Wall:
    clock = Wall()
    container().authenticator.throttle.clock = clock
    return clock


class Verifications:
    """Counts Argon2id verifications (a decoy's included) and the cost parameters of each."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()
        self._real = passwords.verify_password

    def __call__(self, password: str, encoded: str) -> bool:
        with self._lock:
            self.calls.append(encoded.split("$")[3])  # m=...,t=...,p=...
        return self._real(password, encoded)

    @property
    def count(self) -> int:
        return len(self.calls)


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> Verifications:
    spy = Verifications()
    monkeypatch.setattr(passwords, "verify_password", spy)
    return spy


def _kind(key: Any) -> str:
    """`USERNAME/UNIQUE`, `THROTTLE#user/COUNTER`, `AUDIT#LOGIN/<at>`: what a key names, not the name."""
    pk, sk = (str(key.get(k, {}).get("S", "?")) for k in ("PK", "SK"))
    prefix = "#".join(pk.split("#")[:2]) if pk.startswith(("THROTTLE#", "AUDIT#")) else pk.split("#")[0]
    return f"{prefix}/{'<at>' if sk[:1].isdigit() else sk.split('#')[0]}"


@pytest.fixture
def aws_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each AWS operation made from now on, with the kinds of items it touched."""
    calls: list[str] = []
    real: Callable[..., Any] = BaseClient._make_api_call  # type: ignore[attr-defined]  # private: every client calls it

    def counting(self: BaseClient, operation: str, params: Any) -> Any:
        if operation == "BatchGetItem":
            keys = [k for request in params["RequestItems"].values() for k in request["Keys"]]
            calls.append(f"{operation}({', '.join(_kind(k) for k in keys)})")
        elif "Key" in params or "Item" in params:
            calls.append(f"{operation}({_kind(params.get('Key') or params.get('Item'))})")
        else:
            calls.append(operation)
        return real(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counting)
    return calls


def login(api: Api, username: str, password: str, source: str = SOURCE_IP) -> Answer:
    return call(api, "POST", LOGIN, {"username": username, "password": password}, source=source)


def call(
    api: Api,
    method: str,
    path: str,
    body: Any = None,
    *,
    source: str = SOURCE_IP,
    basic: tuple[str, str] | None = None,
    token: str | None = None,
) -> Answer:
    """`Api.call` from the client address `source`."""
    if source == SOURCE_IP:
        return api.call(method, path, body, basic=basic, token=token)
    import base64
    import json

    headers = {"Content-Type": "application/json"} if body is not None else {}
    if basic:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = dataclasses.replace(
        http_request(method, path, headers=headers, body=json.dumps(body) if body is not None else None),
        source_ip=source,
    )
    response = through_gateway(api.module.handler, Path(str(api.module.__file__)), request, lambda_context())
    text = response.body.decode()
    return Answer(response.status, json.loads(text) if text else None, dict(response.headers))


def assert_throttled(answer: Answer, retry_after: int) -> None:
    assert answer.status == 429, answer.body
    assert answer.error_code == "too_many_attempts"
    assert answer.headers["Retry-After"] == str(retry_after)
    assert str(retry_after) in answer.body["error"]["message"]


def counter(key: dict[str, str]) -> dict[str, Any]:
    from flowgate.db import _from_wire

    raw = boto3.client("dynamodb").get_item(
        TableName=container().settings.table_name,
        Key={"PK": {"S": key["PK"]}, "SK": {"S": key["SK"]}},
        ConsistentRead=True,
    )
    return _from_wire(raw.get("Item", {}))


def whole_table() -> list[dict[str, Any]]:
    from flowgate.db import _from_wire

    pages = boto3.client("dynamodb").get_paginator("scan").paginate(TableName=container().settings.table_name)
    return [_from_wire(item) for page in pages for item in page["Items"]]


# ---- per account ------------------------------------------------------------------------------------


def test_200_wrong_passwords_lock_the_account_and_the_right_one_waits_for_the_lock(
    api: Api, tenants: tuple[Tenant, Tenant], wall: Wall, verifications: Verifications
):
    # When a member's password is guessed 200 times in a row
    answers = [login(api, "member-a", f"guess-number-{i}") for i in range(200)]
    # Then the first five are verified and refused (401), and every later one is refused (429) with the
    # time left before any verify
    assert [a.status for a in answers[:5]] == [401] * 5
    for answer in answers[5:]:
        assert_throttled(answer, 60)
    assert verifications.count == 5
    # the right password too, while the lock lasts, and from another address too
    wall.advance(59)
    assert_throttled(login(api, "member-a", "member-a-password"), 1)
    assert_throttled(login(api, "member-a", "member-a-password", source=OTHER_SOURCE), 1)
    assert verifications.count == 5
    # and once it is over the right password is accepted
    wall.advance(1)
    assert login(api, "member-a", "member-a-password").status == 200


def test_lockouts_double_up_to_fifteen_minutes_and_never_last_longer(
    api: Api, tenants: tuple[Tenant, Tenant], wall: Wall
):
    # Given an attacker who fails five times again each time a lock is over, for eight rounds
    waits = []
    for _ in range(8):
        for _ in range(5):
            assert login(api, "member-a", "a-wrong-guess-1").status == 401
        refused = login(api, "member-a", "a-wrong-guess-1")
        assert refused.status == 429
        waits.append(int(refused.headers["Retry-After"]))
        wall.advance(waits[-1])
    # Then each lock lasted twice the one before, never more than 15 minutes
    assert waits == [60, 120, 240, 480, 900, 900, 900, 900]
    # and the member gets in as soon as the last one is over
    assert login(api, "member-a", "member-a-password").status == 200


def test_the_streak_is_forgotten_an_hour_after_its_last_failure(
    api: Api, tenants: tuple[Tenant, Tenant], wall: Wall
):
    for _ in range(4):
        assert login(api, "member-a", "a-wrong-guess-1").status == 401
    wall.advance(3599)
    assert login(api, "member-a", "a-wrong-guess-1").status == 401  # the fifth inside the hour locks
    assert login(api, "member-a", "a-wrong-guess-1").status == 429
    wall.advance(60 + 3600)  # the lock, then an hour without a failure
    for _ in range(4):
        assert login(api, "member-a", "a-wrong-guess-1").status == 401
    assert login(api, "member-a", "member-a-password").status == 200


def test_a_success_starts_the_count_again(api: Api, tenants: tuple[Tenant, Tenant], wall: Wall):
    for _ in range(4):
        assert login(api, "member-a", "a-wrong-guess-1").status == 401
    assert login(api, "member-a", "member-a-password").status == 200
    assert counter(account_throttle_key("member-a"))["failures"] == 0
    for _ in range(4):
        assert login(api, "member-a", "a-wrong-guess-1").status == 401
    assert login(api, "member-a", "member-a-password").status == 200


def test_the_lock_is_on_the_username_whatever_its_case(api: Api, tenants: tuple[Tenant, Tenant], wall: Wall):
    for name in ("member-a", "MEMBER-A", "Member-A", "member-A", "mEmber-a"):
        assert login(api, name, "a-wrong-guess-1").status == 401
    assert login(api, "member-a", "member-a-password").status == 429


def test_a_locked_account_keeps_its_sessions_and_api_tokens(
    api: Api, tenants: tuple[Tenant, Tenant], wall: Wall
):
    # Given a member's session token, and then their account locked by someone guessing
    a, _ = tenants
    for _ in range(5):
        login(api, "member-a", "a-wrong-guess-1")
    assert login(api, "member-a", "member-a-password").status == 429
    # Then what the member already holds still works: a lock stops password guesses, not the member
    assert api.call("GET", f"{A}/auth/me", token=a.member_token).status == 200


# ---- HTTP Basic counts the same ---------------------------------------------------------------------


def test_basic_failures_and_login_failures_count_together(
    api: Api, tenants: tuple[Tenant, Tenant], wall: Wall, verifications: Verifications
):
    a, _ = tenants
    for _ in range(3):
        assert login(api, "member-a", "a-wrong-guess-1").status == 401
    for _ in range(2):
        assert api.call("GET", f"{A}/auth/me", basic=("member-a", "a-wrong-guess-2")).status == 401
    # the account is locked for both ways in, right password or not, and on every route that takes Basic
    assert_throttled(api.call("GET", f"{A}/auth/me", basic=("member-a", "member-a-password")), 60)
    assert_throttled(api.call("GET", f"{A}/workspaces/{a.workspace_id}", basic=("member-a", "x-y-z")), 60)
    assert_throttled(login(api, "member-a", "member-a-password"), 60)
    assert verifications.count == 5
    wall.advance(60)
    assert api.call("GET", f"{A}/auth/me", basic=("member-a", "member-a-password")).status == 200


def test_basic_attempts_are_counted_by_the_callers_address(
    api: Api, tenants: tuple[Tenant, Tenant], wall: Wall
):
    for i in range(5):
        assert call(api, "GET", f"{A}/auth/me", basic=(f"nobody-{i}", "a-wrong-guess"), source=OTHER_SOURCE)
    assert counter(source_throttle_key(OTHER_SOURCE))["failures"] == 5
    assert counter(source_throttle_key(SOURCE_IP)) == {}


def test_malformed_basic_headers_and_bad_tokens_are_not_password_attempts(
    api: Api, tenants: tuple[Tenant, Tenant], aws_calls: list[str]
):
    for header in ("Basic !!!", "Basic Zm9v", "Bearer fgt_nothing", "Bearer nonsense"):
        assert api.call("GET", f"{A}/auth/me", headers={"Authorization": header}).status == 401
    assert not [c for c in aws_calls if "THROTTLE" in c]


# ---- per source -------------------------------------------------------------------------------------


def test_one_source_is_throttled_after_fifty_failures_across_many_usernames(
    api: Api, tenants: tuple[Tenant, Tenant], wall: Wall, verifications: Verifications
):
    # When one address fails once for each of 50 usernames (none of them locked on its own)
    for i in range(50):
        name = "member-a" if i == 0 else f"someone-{i}"
        assert login(api, name, "a-wrong-guess-1").status == 401
    # Then everything from that address is refused for five minutes, a right password included
    assert_throttled(login(api, "member-b", "member-b-password"), 300)
    assert_throttled(api.call("GET", f"{A}/auth/me", basic=("admin-b", "admin-b-password")), 300)
    assert verifications.count == 50
    # while another address logs in as usual
    assert login(api, "member-b", "member-b-password", source=OTHER_SOURCE).status == 200
    # and the first one may again once the five minutes are over, with a fresh window
    wall.advance(299)
    assert_throttled(login(api, "member-b", "member-b-password"), 1)
    wall.advance(1)
    assert login(api, "member-b", "member-b-password").status == 200
    assert login(api, "someone-new", "a-wrong-guess-1").status == 401
    assert counter(source_throttle_key(SOURCE_IP))["failures"] == 1


def test_the_source_window_is_five_minutes_from_its_first_failure(
    api: Api, tenants: tuple[Tenant, Tenant], wall: Wall
):
    throttle = container().authenticator.throttle
    throttle.source = dataclasses.replace(throttle.source, limit=3)
    for i in range(2):
        assert login(api, f"someone-{i}", "a-wrong-guess-1").status == 401
    wall.advance(300)  # the window is over: its two failures no longer count
    for i in range(2):
        assert login(api, f"someone-else-{i}", "a-wrong-guess-1").status == 401
    assert login(api, "member-a", "member-a-password").status == 200
    assert login(api, "someone-third", "a-wrong-guess-1").status == 401
    assert_throttled(login(api, "member-a", "member-a-password"), 300)


def test_an_ipv6_source_is_throttled_by_its_slash_64():
    assert (
        source_of("2001:db8:1:2:aaaa::1")
        == source_of("2001:db8:1:2:ffff:ffff:ffff:ffff")
        == ("2001:db8:1:2::/64")
    )
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert source_of("::ffff:198.51.100.7") == "198.51.100.7"
    assert source_of("198.51.100.7") == "198.51.100.7"
    assert source_of("") is None
    assert source_of(None) is None
    assert source_of("not an address\x00")
    assert "\x00" not in str(source_of("not an address\x00"))


def test_the_policy_doubles_and_is_capped():
    policy = Policy(limit=5, window_seconds=3600, lock_seconds=60, max_lock_seconds=900, sliding=True)
    assert [policy.due(n) for n in (0, 1, 4, 5, 6, 10, 15)] == [0, 0, 0, 1, 1, 2, 3]
    assert [policy.lock_for(n) for n in range(1, 8)] == [60, 120, 240, 480, 900, 900, 900]
    assert policy.lock_for(10_000) == 900
    with pytest.raises(ValueError, match="invalid throttle policy"):
        Policy(limit=0, window_seconds=1, lock_seconds=1, max_lock_seconds=1, sliding=False)


# ---- the same answer, the same work -----------------------------------------------------------------


def test_unknown_user_disabled_member_and_wrong_password_answer_alike_and_cost_alike(
    api: Api,
    tenants: tuple[Tenant, Tenant],
    wall: Wall,
    verifications: Verifications,
    aws_calls: list[str],
):
    a, _ = tenants
    store = container().identity_store
    admin_a = store.get_user(a.admin_id)
    assert admin_a is not None
    store.update_user(admin_a, {"disabled": True})  # no route disables a member; the store's flag does
    cases = {
        "wrong password": ("member-a", "a-wrong-guess-1"),
        "unknown user": ("ghost-user", "a-wrong-guess-1"),
        "disabled member": ("admin-a", "admin-a-password"),
        "not a username at all": ("no such user!", "a-wrong-guess-1"),
    }
    assert login(api, "first-unknown", "a-wrong-guess-1").status == 401  # stores the table's decoy
    seen: dict[str, list[tuple[int, str, str, list[str], list[str]]]] = {name: [] for name in cases}
    # When each is tried six times, in lockstep (the fifth failure locks each)
    for _ in range(6):
        for name, (username, password) in cases.items():
            aws_calls.clear()
            verifications.calls.clear()
            answer = login(api, username, password)
            # (the member an unknown username reads is the decoy: the same call on another key)
            calls = [c.replace("GetItem(DECOY/META)", "GetItem(USER/META)") for c in aws_calls]
            seen[name].append(
                (
                    answer.status,
                    str(answer.body),
                    answer.headers.get("Retry-After", ""),
                    calls,
                    list(verifications.calls),
                )
            )
    # Then all four got the same answers after the same AWS calls and the same Argon2id work
    first = seen["wrong password"]
    for name in cases:
        assert seen[name] == first, name
    assert [s[0] for s in first] == [401] * 5 + [429]
    reads = "BatchGetItem(USERNAME/UNIQUE, THROTTLE#user/COUNTER, THROTTLE#ip/COUNTER)"
    counted = ["UpdateItem(THROTTLE#user/COUNTER)", "UpdateItem(THROTTLE#ip/COUNTER)"]
    assert first[0][3] == [reads, "GetItem(USER/META)", *counted]
    assert first[4][3] == [
        reads,
        "GetItem(USER/META)",
        counted[0],
        "UpdateItem(THROTTLE#user/COUNTER)",  # the lock
        "PutItem(AUDIT#LOGIN/<at>)",  # its audit record
        counted[1],
    ]
    assert first[5][3] == [reads]  # refused on the read alone
    assert first[0][4] == [f"m={passwords.MEMORY_KIB},t={passwords.ITERATIONS},p={passwords.LANES}"]


def test_the_decoy_is_stored_once_and_is_nobody(
    api: Api, tenants: tuple[Tenant, Tenant], aws_calls: list[str]
):
    # The first unknown username of a table stores the decoy; later ones only read it
    assert login(api, "ghost-user", "a-wrong-guess-1").status == 401
    assert sum(c.startswith("PutItem(DECOY") for c in aws_calls) == 1
    aws_calls.clear()
    assert login(api, "ghost-user-2", "a-wrong-guess-1").status == 401
    assert "GetItem(DECOY/META)" in aws_calls
    assert not [c for c in aws_calls if c.startswith("PutItem")]
    # It is disabled, has no username marker and no index keys: nobody logs in as it, no listing shows it
    [decoy] = [item for item in whole_table() if item["PK"].startswith("DECOY#")]
    assert decoy["disabled"] is True
    assert decoy["password_hash"].startswith(
        f"$argon2id$v=19$m={passwords.MEMORY_KIB},t={passwords.ITERATIONS},"
    )
    assert not {"GSI1PK", "GSI2PK"} & set(decoy)
    assert not [item for item in whole_table() if item.get("user_id") == decoy["id"]]
    assert login(api, decoy["username"], "a-wrong-guess-1").status == 401


# ---- concurrency ------------------------------------------------------------------------------------


@pytest.fixture
def frozen(api: Api, atomic_writes: None) -> Authenticator:
    authenticator = container().authenticator
    authenticator.throttle.clock = Wall()  # the locks never end during the test
    return authenticator


def test_sixteen_threads_guessing_one_password_get_at_most_a_race_margin_past_the_limit(
    tenants: tuple[Tenant, Tenant], frozen: Authenticator, verifications: Verifications
):
    # When 16 threads guess member-a's password at once, 8 times each
    outcomes = guess_concurrently(frozen, lambda _t, _a: "member-a", SOURCE_IP)
    # Then every guess was answered, at most the guesses in flight when the lock landed got past the
    # limit of 5, and the counter holds exactly the guesses that were verified
    assert outcomes["401"] + outcomes["429"] == THREADS * ATTEMPTS
    assert 5 <= outcomes["401"] <= 5 + THREADS - 1, outcomes
    assert verifications.count == outcomes["401"]
    assert counter(account_throttle_key("member-a"))["failures"] == outcomes["401"]


def test_sixteen_threads_guessing_many_usernames_from_one_source_are_held_at_its_limit(
    tenants: tuple[Tenant, Tenant], frozen: Authenticator, verifications: Verifications
):
    outcomes = guess_concurrently(frozen, lambda thread, attempt: f"user-{thread}-{attempt}", SOURCE_IP)
    assert outcomes["401"] + outcomes["429"] == THREADS * ATTEMPTS
    assert 50 <= outcomes["401"] <= 50 + THREADS - 1, outcomes
    assert verifications.count == outcomes["401"]
    assert counter(source_throttle_key(SOURCE_IP))["failures"] == outcomes["401"]


# ---- the audit, the items, the logs -----------------------------------------------------------------


def test_each_lockout_is_recorded_for_the_platform_admin(
    api: Api, tenants: tuple[Tenant, Tenant], wall: Wall
):
    a, _ = tenants
    for _ in range(5):
        login(api, "member-a", "a-wrong-guess-1")
    throttle = container().authenticator.throttle
    throttle.source = dataclasses.replace(throttle.source, limit=7)
    for _ in range(2):
        login(api, "ghost-user", "a-wrong-guess-1")
    day = wall.at.strftime("%Y-%m-%d")
    # (the platform admin comes from elsewhere: SOURCE_IP is locked now)
    admin = container().authenticator.login(*ADMIN, OTHER_SOURCE)
    principal = container().authenticator.authenticate(f"Bearer {admin.token}")
    page = container().authenticator.lockouts(principal, day, 50, None)
    records = {item["kind"]: item for item in page.items}
    assert set(records) == {"account", "source"}
    account, source = records["account"], records["source"]
    assert (account["username"], account["user_id"], account["source"]) == (
        "member-a",
        a.member_id,
        SOURCE_IP,
    )
    assert (account["failures"], account["level"], account["seconds"]) == (5, 1, 60)
    until = dt.datetime.fromisoformat(account["until"].replace("Z", "+00:00"))
    assert until == wall.at + dt.timedelta(seconds=60)
    assert account["ttl"] >= wall.at.timestamp() + 89 * 86400
    assert (source["username"], source["source"], source["seconds"]) == ("ghost-user", SOURCE_IP, 300)
    assert "user_id" not in source
    # nobody else reads it
    member = container().authenticator.authenticate(f"Bearer {a.member_token}")
    with pytest.raises(Forbidden):
        container().authenticator.lockouts(member, day, 50, None)


def test_counters_expire_by_ttl(api: Api, tenants: tuple[Tenant, Tenant], wall: Wall):
    for _ in range(5):
        login(api, "member-a", "a-wrong-guess-1")
    account, source = counter(account_throttle_key("member-a")), counter(source_throttle_key(SOURCE_IP))
    now = wall.at.timestamp()
    assert account["ttl"] == account["resets_at"] == now + 3600
    assert account["locked_until"] == now + 60
    assert source["ttl"] == source["resets_at"] == now + 300


def test_no_password_reaches_an_item_a_log_line_or_an_answer(
    api: Api, tenants: tuple[Tenant, Tenant], wall: Wall, caplog: pytest.LogCaptureFixture
):
    guesses = [f"secret-guess-{i}" for i in range(7)]
    answers = [login(api, "member-a", guess) for guess in guesses[:6]]
    answers += [api.call("GET", f"{A}/auth/me", basic=("ghost-user", guess)) for guess in guesses[6:]]
    answers.append(login(api, "member-a", "member-a-password"))
    logs = "\n".join(logger.registered_formatter.format(record) for record in caplog.records)
    assert "password attempts locked" in logs
    everything = logs + str([a.body for a in answers]) + str(whole_table())
    for secret in [*guesses, "member-a-password"]:
        assert secret not in everything
    import base64

    assert base64.b64encode(b"ghost-user:secret-guess-6").decode() not in everything


def test_a_lock_whose_writer_died_is_written_by_the_next_attempt(
    api: Api, tenants: tuple[Tenant, Tenant], wall: Wall, verifications: Verifications
):
    # Given an account whose fifth failure was counted by a container that died before it wrote the lock
    now = int(wall.at.timestamp())
    boto3.client("dynamodb").put_item(
        TableName=container().settings.table_name,
        Item={
            "PK": {"S": account_throttle_key("member-a")["PK"]},
            "SK": {"S": "COUNTER"},
            "failures": {"N": "5"},
            "locks": {"N": "0"},
            "locked_until": {"N": "0"},
            "resets_at": {"N": str(now + 3600)},
            "ttl": {"N": str(now + 3600)},
        },
    )
    # When the next attempt comes, with the right password
    answer = login(api, "member-a", "member-a-password")
    # Then it is refused unverified, and the lock it found due is written, with its audit record
    assert_throttled(answer, 60)
    assert verifications.count == 0
    stored = counter(account_throttle_key("member-a"))
    assert (stored["locks"], stored["locked_until"]) == (1, now + 60)
    [lockout] = container().identity_store.list_lockouts(wall.at.strftime("%Y-%m-%d"), 10, None).items
    assert (lockout["kind"], lockout["username"], lockout["level"]) == ("account", "member-a", 1)
    wall.advance(60)
    assert login(api, "member-a", "member-a-password").status == 200
