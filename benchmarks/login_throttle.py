"""How many failed logins one source can make before it is throttled, and at what rate over time.

A fresh interpreter under `moto.mock_aws` provisions template.yaml (as the handler tests do), creates a
contract with one member through the identity service, and calls `functions/identity/app.py`'s `handler`
with API Gateway events of `POST /api/latest/auth/login` from one address (`tests.support.apigw`: the
template's route table, `devstack.apigw.proxy_event`). The throttle is the composition root's, with its
default limits; its clock is the benchmark's, which only moves when an answer says to wait (the attacker
comes back exactly at `Retry-After`), so the simulated horizon costs only the attempts it allows.

Rows:

* one source, a new username each attempt (the per-source limit): failures accepted (401) before the
  first 429; the rate at which they came in (wall clock, one client: Argon2id and moto bound it); then,
  over SOURCE_HORIZON simulated seconds, the failures accepted per hour;
* one source, one username (the per-account limit, doubling locks): the same over ACCOUNT_HORIZON;
* the cost of each kind of answer: median ms and AWS calls of a 401, a 429, a 200;
* unknown username against wrong password (limits raised so nothing locks): interleaved pairs, median
  ms of each and the median of the paired differences;
* 16 threads at once (`Authenticator.login`, moto serialized as DynamoDB isolates items, clock frozen):
  failures accepted against the limit, for one account and for one source.

Measured, not asserted: verdicts compare the accepted failures with the limits (PASS/OVER).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in {None, ""}:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.moto_support import (
    ROOT_DIR,
    isolated_aws_environment,
    make_member,
    provision_template,
    root_principal,
    run_child,
    script_main,
)
from benchmarks.run import Options, Row
from tests.support import guessing

SOURCE_IP = "198.51.100.7"
SOURCE_LIMIT, ACCOUNT_LIMIT = 50, 5  # the throttle's defaults, which the verdicts check
SOURCE_HORIZON = 900  # simulated seconds
ACCOUNT_HORIZON = 3600
PAIRS = 20
CHILD_TIMEOUT_SECONDS = 300.0


class SimClock:
    """The throttle's clock: `days` ahead of now (so nothing an earlier phase counted is live), moved by
    hand."""

    def __init__(self, days: int) -> None:
        self.at = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=days)

    def __call__(self) -> dt.datetime:
        return self.at


# ---- the child --------------------------------------------------------------------------------------


def _handler() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_identity_app", ROOT_DIR / "functions/identity/app.py"
    )
    if spec is None or spec.loader is None:
        raise RuntimeError("cannot load functions/identity/app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_identity_app"] = module
    spec.loader.exec_module(module)
    return module.handler


def _login_event(username: str, password: str) -> dict[str, Any]:
    from tests.support.apigw import http_request, template_event

    request = http_request(
        "POST",
        "/api/latest/auth/login",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"username": username, "password": password}),
    )
    routed = template_event(dataclasses.replace(request, source_ip=SOURCE_IP))
    if routed is None:
        raise RuntimeError("the template does not route POST /api/latest/auth/login")
    return routed[1]


class Client:
    """One attacker's HTTP client, as the handler sees it: status, Retry-After, wall time, AWS calls."""

    def __init__(self) -> None:
        from devstack.lambdas import LambdaContext

        self.handler = _handler()
        self.context = LambdaContext.for_function("identity")
        self.calls = 0

    def login(self, username: str, password: str) -> tuple[int, int, float, int]:
        event = _login_event(username, password)
        before = self.calls
        start = time.perf_counter()
        answer = self.handler(event, self.context)
        took = time.perf_counter() - start
        headers = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
        for name, values in (answer.get("multiValueHeaders") or {}).items():
            headers[name.lower()] = values[0]
        return int(answer["statusCode"]), int(headers.get("retry-after", 0)), took, self.calls - before


def _attack(client: Client, clock: SimClock, horizon: int, username_of: Any) -> dict[str, Any]:
    """Fail as fast as possible, coming back when told, until `horizon` simulated seconds have passed."""
    start = clock.at
    accepted, refused, first_429, burst_seconds, n = 0, 0, None, 0.0, 0
    while (clock.at - start).total_seconds() < horizon:
        status, retry_after, took, _ = client.login(username_of(n), "a-wrong-guess-1")
        n += 1
        if status == 401:
            accepted += 1
            if first_429 is None:
                burst_seconds += took
        elif status == 429:
            refused += 1
            if first_429 is None:
                first_429 = accepted
            clock.at += dt.timedelta(seconds=retry_after)
        else:
            raise RuntimeError(f"unexpected answer {status}")
    return {
        "before_first_429": first_429,
        "burst_seconds": burst_seconds,
        "accepted": accepted,
        "refused": refused,
        "horizon_seconds": horizon,
    }


def _costs(client: Client) -> dict[str, Any]:
    """Median wall time and the AWS calls of a 401 (not the one that locks), a 429 and a 200."""
    costs: dict[str, list[tuple[float, int]]] = {"401": [], "429": [], "200": []}
    for i in range(6):  # 24 failures: the source stays below its limit
        status, _, took, calls = client.login("member-a", "member-a-password-1")
        if status != 200:
            raise RuntimeError(f"the member's login answered {status}")
        costs["200"].append((took, calls))
        for j in range(ACCOUNT_LIMIT + 1):
            status, _, took, calls = client.login(f"cost-{i}", f"a-wrong-guess-{j}")
            if status == 401 and j < ACCOUNT_LIMIT - 1:
                costs["401"].append((took, calls))
            elif status == 429:
                costs["429"].append((took, calls))
    return {
        k: {"ms": statistics.median(t for t, _ in v) * 1000, "calls": sorted({c for _, c in v})}
        for k, v in costs.items()
    }


def _alike(client: Client) -> list[dict[str, float]]:
    """Wall times of a wrong password and of an unknown username, in interleaved pairs (the caller has
    raised the limits so that nothing locks)."""
    pairs: list[dict[str, float]] = []
    for i in range(PAIRS):
        pair: dict[str, float] = {}
        for who in ("wrong", "unknown") if i % 2 else ("unknown", "wrong"):
            username = "member-a" if who == "wrong" else "ghost-user"
            status, _, pair[who], _ = client.login(username, "a-wrong-guess-1")
            if status != 401:
                raise RuntimeError(f"a wrong password answered {status}")
        pairs.append(pair)
    return pairs


def child(result_path: Path) -> None:
    isolated_aws_environment()
    from unittest import mock

    from botocore.client import BaseClient
    from moto import mock_aws

    from flowgate.identity.models import CreateContractRequest, Role
    from flowgate.identity.throttle import LoginThrottle
    from flowgate.wiring import container
    from tests.support.moto import serialized_dynamodb

    result: dict[str, Any] = {}
    with mock_aws():
        provision_template()
        cid = container().identity.create_contract(root_principal(), CreateContractRequest(name="bench")).id
        make_member(root_principal(), cid, "member-a", "member-a-password-1", Role.MEMBER)
        client = Client()
        real = BaseClient._make_api_call  # type: ignore[attr-defined]  # private: every client calls it

        def counting(this: Any, operation: str, params: Any) -> Any:
            client.calls += 1
            return real(this, operation, params)

        throttle = container().authenticator.throttle  # the composition root's, default limits
        with mock.patch.object(BaseClient, "_make_api_call", counting):
            for _ in range(2):  # warm up: imports, clients, the decoy item
                client.login("warm-up-user", "a-wrong-guess-1")
                client.login("member-a", "member-a-password-1")
            for key, days, horizon, username_of in (
                ("source", 1, SOURCE_HORIZON, lambda n: f"nobody-{n}"),
                ("account", 2, ACCOUNT_HORIZON, lambda _n: "member-a"),
            ):
                clock = SimClock(days)
                throttle.clock = clock
                result[key] = _attack(client, clock, horizon, username_of)
            throttle.clock = SimClock(3)
            result["costs"] = _costs(client)
            container().authenticator.throttle = LoginThrottle(
                container().identity_store, account_failures=10**6, source_failures=10**6, clock=SimClock(4)
            )
            result["alike"] = _alike(client)
            container().authenticator.throttle = throttle

        with serialized_dynamodb():
            throttle.clock = SimClock(5)  # frozen: no lock ends during the phase
            result["threads_account"] = guessing.guess_concurrently(
                container().authenticator, lambda _t, _a: "member-a", SOURCE_IP
            )
            throttle.clock = SimClock(6)
            result["threads_source"] = guessing.guess_concurrently(
                container().authenticator, lambda t, a: f"thread-{t}-{a}", SOURCE_IP
            )
    result_path.write_text(json.dumps(result))


# ---- the benchmark ----------------------------------------------------------------------------------


def _attack_row(subject: str, outcome: dict[str, Any], limit: int, per_hour_goal: float) -> Row:
    hours = outcome["horizon_seconds"] / 3600
    per_hour = outcome["accepted"] / hours
    before = outcome["before_first_429"]
    burst = before / outcome["burst_seconds"] if before and outcome["burst_seconds"] else 0.0
    ok = before is not None and before <= limit and per_hour <= per_hour_goal
    return Row(
        subject,
        {
            "failures_before_429": before if before is not None else "never",
            "burst_failures_per_s": round(burst, 1),
            "accepted_per_hour": round(per_hour, 1),
            "sustained_failures_per_s": round(per_hour / 3600, 4),
            "simulated_s": outcome["horizon_seconds"],
            "refused_429s": outcome["refused"],
        },
        "PASS" if ok else "OVER",
        goal=f"at most {limit} failures before the first 429, at most {per_hour_goal:g} per hour after",
        notes=outcome,
    )


def _rows(result: dict[str, Any]) -> list[Row]:
    rows = [
        # 50 per window; each window ends with a 5-minute lock from the 50th failure
        _attack_row("one source, a new username each time", result["source"], SOURCE_LIMIT, 600),
        # 5 per lock; locks of 1, 2, 4, 8, then 15 minutes
        _attack_row("one source, one username", result["account"], ACCOUNT_LIMIT, 40),
    ]
    for status, cost in result["costs"].items():
        rows.append(
            Row(
                f"one login answered {status}",
                {"median_ms": round(cost["ms"], 1), "aws_calls": "/".join(str(c) for c in cost["calls"])},
            )
        )
    pairs = result["alike"]
    wrong = statistics.median(p["wrong"] for p in pairs) * 1000
    unknown = statistics.median(p["unknown"] for p in pairs) * 1000
    difference = statistics.median(p["wrong"] - p["unknown"] for p in pairs) * 1000
    rows.append(
        Row(
            "unknown username vs wrong password",
            {
                "wrong_password_ms": round(wrong, 1),
                "unknown_user_ms": round(unknown, 1),
                "paired_difference_ms": round(difference, 1),
                "pairs": len(pairs),
            },
            notes={"pairs": pairs},
        )
    )
    for key, subject, limit in (
        ("threads_account", "16 threads, one account", ACCOUNT_LIMIT),
        ("threads_source", "16 threads, one source, 128 usernames", SOURCE_LIMIT),
    ):
        outcome = result[key]
        accepted = outcome["401"]
        rows.append(
            Row(
                subject,
                {
                    "attempts": accepted + outcome["429"],
                    "accepted_401": accepted,
                    "over_limit": accepted - limit,
                },
                "PASS" if limit <= accepted <= limit + guessing.THREADS - 1 else "OVER",
                goal=f"accepted failures within the limit plus the {guessing.THREADS - 1} others in flight",
            )
        )
    return rows


def run(options: Options) -> list[Row]:
    return _rows(run_child(options, "login_throttle", timeout=CHILD_TIMEOUT_SECONDS))


if __name__ == "__main__":
    sys.exit(script_main("login_throttle", lambda result_path, _rounds, _warmup: child(result_path)))
