"""Login throttling through the local stack over real HTTP: the account lock and its Retry-After, the same
answers for an unknown user as for a wrong password, and the per-source limit.

Every client of a local stack is 127.0.0.1, one source: these tests run on stacks of their own so that the
session stack's source counter never sees their failures (nor theirs its)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import Stack, launch

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-throttle")]
A = "/api/latest"
ADMIN = ("throttle-admin", "throttle-admin-password-1")


@pytest.fixture(scope="module")
def throttled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = launch(
        tmp_path_factory.mktemp("throttle-stack"),
        {"FLOWGATE_ADMIN_USERNAME": ADMIN[0], "FLOWGATE_ADMIN_PASSWORD": ADMIN[1]},
    )
    yield running
    running.stop()


def _member(stack: Stack, root_token: str, username: str, password: str) -> None:
    contract = stack.call("POST", f"{A}/contracts", {"name": f"c-{uuid.uuid4().hex[:8]}"}, root_token)
    assert contract.status_code == 201, contract.text
    made = stack.call(
        "POST",
        f"{A}/contracts/{contract.json()['id']}/members",
        {"username": username, "password": password, "role": "member"},
        root_token,
    )
    assert made.status_code == 201, made.text


def _login(stack: Stack, username: str, password: str) -> requests.Response:
    return stack.call("POST", f"{A}/auth/login", {"username": username, "password": password})


def _assert_throttled(answer: requests.Response, at_most: int) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.json()["error"]["code"] == "too_many_attempts"
    assert 0 < int(answer.headers["Retry-After"]) <= at_most


def test_five_wrong_passwords_lock_the_account_for_a_minute(throttled: Stack):
    root = throttled.login(*ADMIN)
    name = f"locked-{uuid.uuid4().hex[:6]}"
    _member(throttled, root, name, f"{name}-password")
    session = throttled.login(name, f"{name}-password")
    for i in range(5):
        assert _login(throttled, name, f"wrong-guess-{i}").status_code == 401
    # the right password is refused while the lock lasts, by login and by HTTP Basic alike
    _assert_throttled(_login(throttled, name, f"{name}-password"), 60)
    basic = requests.get(throttled.url(f"{A}/auth/me"), auth=(name, f"{name}-password"), timeout=30)
    _assert_throttled(basic, 60)
    # a session the member already holds goes on working
    assert throttled.call("GET", f"{A}/auth/me", token=session).status_code == 200


def test_an_unknown_user_gets_the_answers_a_wrong_password_gets(throttled: Stack):
    root = throttled.login(*ADMIN)
    name = f"known-{uuid.uuid4().hex[:6]}"
    _member(throttled, root, name, f"{name}-password")
    answers: dict[str, list[tuple[int, str, bool]]] = {"known": [], "unknown": []}
    for i in range(6):
        for who, username in (("known", name), ("unknown", f"ghost-{name}")):
            answer = _login(throttled, username, f"wrong-guess-{i}")
            body = answer.json()["error"]
            message = body["message"].split(" in ")[0]  # the seconds left may differ by one
            answers[who].append(
                (answer.status_code, f"{body['code']}: {message}", "Retry-After" in answer.headers)
            )
    assert answers["known"] == answers["unknown"]
    assert [a[0] for a in answers["known"]] == [401] * 5 + [429]


def test_one_source_is_throttled_after_fifty_failures(tmp_path: Path):
    # A stack of its own, so that this source has failed nowhere else yet
    stack = launch(tmp_path, {"FLOWGATE_ADMIN_USERNAME": ADMIN[0], "FLOWGATE_ADMIN_PASSWORD": ADMIN[1]})
    try:
        root = stack.login(*ADMIN)
        statuses = [_login(stack, f"nobody-{i}", "wrong-guess-1").status_code for i in range(50)]
        assert statuses == [401] * 50
        # then every password attempt from 127.0.0.1 waits, the admin's right one included
        _assert_throttled(_login(stack, *ADMIN), 300)
        _assert_throttled(requests.get(stack.url(f"{A}/auth/me"), auth=ADMIN, timeout=30), 300)
        # but tokens are no password attempts
        assert stack.call("GET", f"{A}/auth/me", token=root).status_code == 200
    finally:
        stack.stop()
