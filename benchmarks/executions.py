"""Executions completed per second through the local stack (`python -m devstack`, what `make run` runs).

A stack is started on a free port; the benchmark logs in as its platform admin, creates a contract, an
org_admin member, a limited workspace and a trivial flow, runs `warmup` executions one by one (not
recorded), then POSTs N executions as fast as POST_CLIENTS threads can while it polls the execution list
(every POLL_SECONDS, from the first POST on) until every one of them is final. It reports:

* throughput: N / (last completion seen - first POST sent);
* the POST phase alone (how fast the API accepts executions);
* latency from sending an execution's POST to the first poll that saw it final (the resolution is the
  poll period plus one list request: executions store times in whole seconds, too coarse to use);
* the sandbox time of each execution as the runner recorded it (`duration_ms`);
* how many ended `success`: anything but N is an ERROR row.

Everything runs through the stack's HTTP API, its SQS poller and its runner function, on this machine:
the client, the stack and its moto server share the CPUs. One batch only (`--rounds` does not repeat it),
so that the benchmark stays well under a minute on two cores.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

if __package__ in {None, ""}:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import Options, Row

EXECUTIONS = 40
POST_CLIENTS = 4  # the stack keeps up to 4 warm instances of a function
POLL_SECONDS = 0.1
COMPLETION_TIMEOUT_SECONDS = 45.0
HTTP_TIMEOUT_SECONDS = 30.0
FINAL = frozenset({"success", "error", "cancelled"})
ADMIN = ("bench-admin", "bench-admin-password-1")
MEMBER_PASSWORD = "bench-member-password-1"  # noqa: S105 - a throwaway local stack
FLOW = "noop"
FLOW_SCRIPT = "import flow_api\ndef handler(system, this, inputs):\n    return this.success('ok')\n"
A = "/api/latest"


class _Client:
    """A small JSON client for one stack."""

    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: Any = None, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = requests.request(
            method, self.base + path, json=body, headers=headers, timeout=HTTP_TIMEOUT_SECONDS, **kw
        )
        if not answer.ok:
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text[:500]}")
        return answer.json() if answer.content else None

    def login(self, username: str, password: str) -> str:
        answer = self.call("POST", f"{A}/auth/login", {"username": username, "password": password})
        return str(answer["token"])


def _setup(client: _Client) -> tuple[str, str]:
    """A contract, an org_admin member, a limited workspace with the flow: (workspace id, member token)."""
    admin = client.login(*ADMIN)
    tag = uuid.uuid4().hex[:8]
    cid = client.call("POST", f"{A}/contracts", {"name": f"bench-{tag}"}, admin)["id"]
    member = f"bench-{tag}"
    client.call(
        "POST",
        f"{A}/contracts/{cid}/members",
        {"username": member, "password": MEMBER_PASSWORD, "role": "org_admin", "privileges": []},
        admin,
    )
    token = client.login(member, MEMBER_PASSWORD)
    ws = client.call("POST", f"{A}/contracts/{cid}/workspaces", {"name": "bench", "kind": "limited"}, token)
    client.call("PUT", f"{A}/workspaces/{ws['id']}/flows/{FLOW}", {"script": FLOW_SCRIPT}, token)
    return str(ws["id"]), token


def _statuses(client: _Client, ws: str, token: str) -> dict[str, str]:
    """Every execution of the workspace: id -> status (the list, all pages)."""
    found: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = client.call("GET", f"{A}/workspaces/{ws}/executions", token=token, params=params)
        found.update({item["id"]: item["status"] for item in page["items"]})
        cursor = page.get("next")
        if not cursor:
            return found


def _warm_up(client: _Client, ws: str, token: str, count: int) -> None:
    """Executions run one by one before the measured batch: loads the runner's code paths."""
    for _ in range(count):
        eid = client.call("POST", f"{A}/workspaces/{ws}/executions", {"flow": FLOW}, token)["id"]
        deadline = time.monotonic() + COMPLETION_TIMEOUT_SECONDS
        while client.call("GET", f"{A}/workspaces/{ws}/executions/{eid}", token=token)["status"] not in FINAL:
            if time.monotonic() > deadline:
                raise RuntimeError(f"warm-up execution {eid} did not end in {COMPLETION_TIMEOUT_SECONDS:g}s")
            time.sleep(POLL_SECONDS)


def _measure(client: _Client, ws: str, token: str, known: set[str]) -> dict[str, Any]:
    """POST the batch from a thread pool while this thread polls the list, until every execution of the
    batch is final (or the timeout); the raw timings. `known`: executions that existed before."""

    def post(_: int) -> tuple[str, float, float]:
        sent = time.perf_counter()
        eid = client.call("POST", f"{A}/workspaces/{ws}/executions", {"flow": FLOW}, token)["id"]
        return str(eid), sent, time.perf_counter()

    seen_final: dict[str, float] = {}  # every new execution, by the first poll that saw it final
    status: dict[str, str] = {}
    deadline = time.perf_counter() + COMPLETION_TIMEOUT_SECONDS
    with ThreadPoolExecutor(POST_CLIENTS) as pool:
        futures = [pool.submit(post, i) for i in range(EXECUTIONS)]
        while time.perf_counter() < deadline:
            listed = _statuses(client, ws, token)
            now = time.perf_counter()
            for eid, state in listed.items():
                if eid in known:
                    continue
                status[eid] = state
                if state in FINAL:
                    seen_final.setdefault(eid, now)
            if all(f.done() for f in futures) and len(seen_final) >= EXECUTIONS:
                break
            time.sleep(POLL_SECONDS)
        posted = [f.result() for f in futures]  # a failed POST raises here
    sent = {eid: t for eid, t, _ in posted}
    return {
        "sent": sent,
        "first_post": min(sent.values()),
        "posts_done": max(answered for _, _, answered in posted),
        "seen_final": {eid: t for eid, t in seen_final.items() if eid in sent},
        "status": status,
    }


def _durations(client: _Client, ws: str, token: str, ids: list[str]) -> list[float]:
    """The sandbox time the runner recorded for each execution (after the measurement, not timed)."""
    out = []
    for eid in ids:
        duration = client.call("GET", f"{A}/workspaces/{ws}/executions/{eid}", token=token).get("duration_ms")
        if isinstance(duration, int | float):
            out.append(float(duration))
    return out


def _rows(m: dict[str, Any], durations: list[float], stack_start_s: float) -> list[Row]:
    sent: dict[str, float] = m["sent"]
    seen: dict[str, float] = m["seen_final"]
    status: dict[str, str] = m["status"]
    successes = sum(1 for eid in sent if status.get(eid) == "success")
    by_status: dict[str, int] = {}
    for eid in sent:
        by_status[status.get(eid, "missing")] = by_status.get(status.get(eid, "missing"), 0) + 1
    rows = []
    post_span = m["posts_done"] - m["first_post"]
    if seen:
        span = max(seen.values()) - m["first_post"]
        rows.append(
            Row(
                "throughput: first POST -> last completion",
                {"n": len(seen), "seconds": span, "per_s": len(seen) / span},
                notes={
                    "stack_start_s": round(stack_start_s, 2),
                    "poll_seconds": POLL_SECONDS,
                    "posts_done_at_s": round(post_span, 3),
                    # seconds after the first POST at which each execution was first seen final
                    "completed_at_s": sorted(round(t - m["first_post"], 3) for t in seen.values()),
                },
            )
        )
    rows.append(
        Row(
            f"POST phase ({POST_CLIENTS} client threads)",
            {"n": len(sent), "seconds": post_span, "per_s": len(sent) / post_span},
        )
    )
    if seen:
        latencies = [(seen[eid] - sent[eid]) * 1000 for eid in seen]
        rows.append(
            Row(
                "latency: POST sent -> seen final",
                {
                    "n": len(latencies),
                    "median_ms": statistics.median(latencies),
                    "min_ms": min(latencies),
                    "max_ms": max(latencies),
                },
                notes={"latencies_ms": [round(x, 1) for x in sorted(latencies)]},
            )
        )
    if durations:
        rows.append(
            Row(
                "runner: sandbox duration_ms",
                {
                    "n": len(durations),
                    "median_ms": statistics.median(durations),
                    "min_ms": min(durations),
                    "max_ms": max(durations),
                },
            )
        )
    rows.append(
        Row(
            f"ended success (of {len(sent)})",
            {"n": successes},
            "OK" if successes == len(sent) else "ERROR",
            notes={"by_status": by_status},
        )
    )
    return rows


def run(options: Options) -> list[Row]:
    from devstack.launcher import start_stack

    with tempfile.TemporaryFile("w+") as stack_log:
        t0 = time.perf_counter()
        stack = start_stack(
            env={"FLOWGATE_ADMIN_USERNAME": ADMIN[0], "FLOWGATE_ADMIN_PASSWORD": ADMIN[1]},
            stderr=stack_log,
        )
        stack_start_s = time.perf_counter() - t0
        try:
            client = _Client(stack.url)
            ws, token = _setup(client)
            _warm_up(client, ws, token, options.warmup)
            measured = _measure(client, ws, token, known=set(_statuses(client, ws, token)))
            durations = _durations(client, ws, token, list(measured["sent"]))
        except Exception as exc:
            stack_log.seek(0)
            tail = stack_log.read()[-2000:]
            raise RuntimeError(f"{exc}\n-- the stack's log (tail) --\n{tail}") from exc
        finally:
            stack.stop()
    return _rows(measured, durations, stack_start_s)


if __name__ == "__main__":
    from benchmarks.run import main

    sys.exit(main(["--only", "executions", *sys.argv[1:]]))
