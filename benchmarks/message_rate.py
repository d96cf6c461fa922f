"""Messages processed per second through an active flow of the local stack (`python -m devstack`).

A stack is started on a free port (FLOWGATE_LOCAL_SCHEDULE_SECONDS=60: the enforcer's schedule fires, as it
would, but has nothing to stop in a full workspace). The benchmark logs in as its platform admin, creates a
contract and an org_admin member; the member creates a workspace, which the platform admin makes FULL
(`PATCH /workspaces/{ws}` `kind: full`: the flow never stops), and a trivial flow (`return
this.success('ok')`), and activates it (`POST .../flows/{name}/activate`). `warmup` messages are posted
and awaited one by one (not recorded). Then one thread POSTs MESSAGES messages, one after the other (the
order of arrival is the order of processing), while this thread lists the flow's messages (`GET
.../messages`, every POLL_SECONDS from the first POST on) until every one of them is final. It reports:

* throughput: MESSAGES / (last message seen final - first POST sent);
* the POST phase alone (how fast the API accepts messages);
* latency from sending a message's POST to the first poll that saw it `done` (resolution: one poll);
* how many ended `done`: anything but MESSAGES is an ERROR row.

The flow's queue is an SQS FIFO queue with one message group per flow and a batch size of 1, so a flow's
messages run one at a time, in order: the rate is 1 / (the time to process one message + the poller's
turn-around), whatever the number of clients. The client, the stack and its moto server share this
machine's CPUs. One batch (`--rounds` does not repeat it); about 10 s with the stack's start.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests

if __package__ in {None, ""}:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import Options, Row

MESSAGES = 30
POLL_SECONDS = 0.1
COMPLETION_TIMEOUT_SECONDS = 40.0
HTTP_TIMEOUT_SECONDS = 30.0
FINAL = frozenset({"done", "failed", "discarded"})
ADMIN = ("bench-admin", "bench-admin-password-1")
MEMBER_PASSWORD = "bench-member-password-1"  # noqa: S105 - a throwaway local stack
FLOW = "consume"
FLOW_SCRIPT = "import flow_api\ndef handler(system, this, inputs):\n    return this.success('ok')\n"
SCHEDULE_SECONDS = "60"
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
    """A contract, an org_admin member, a full workspace with the flow, active: (flow path, member token)."""
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
    ws = client.call("POST", f"{A}/contracts/{cid}/workspaces", {"name": "bench"}, token)["id"]
    kind = client.call("PATCH", f"{A}/workspaces/{ws}", {"kind": "full"}, admin)["kind"]
    if kind != "full":
        raise RuntimeError(f"the workspace is {kind} after the PATCH")
    client.call("PUT", f"{A}/workspaces/{ws}/flows/{FLOW}", {"script": FLOW_SCRIPT}, token)
    path = f"{A}/workspaces/{ws}/flows/{FLOW}"
    state = client.call("POST", f"{path}/activate", token=token)
    if state["status"] != "active" or state.get("stops_at"):
        raise RuntimeError(f"the flow is not active without a stop: {state}")
    return path, token


def _statuses(client: _Client, path: str, token: str) -> dict[str, str]:
    """Every message of the flow: id -> status (the list, all pages)."""
    found: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = client.call("GET", f"{path}/messages", token=token, params=params)
        found.update({item["id"]: item["status"] for item in page["items"]})
        cursor = page.get("next")
        if not cursor:
            return found


def _warm_up(client: _Client, path: str, token: str, count: int) -> None:
    """Messages processed one by one before the measured batch: loads the consumer's code paths."""
    for n in range(count):
        mid = client.call("POST", f"{path}/messages", {"warmup": n}, token)["id"]
        deadline = time.monotonic() + COMPLETION_TIMEOUT_SECONDS
        while _statuses(client, path, token).get(mid) not in FINAL:
            if time.monotonic() > deadline:
                raise RuntimeError(f"warm-up message {mid} did not end in {COMPLETION_TIMEOUT_SECONDS:g}s")
            time.sleep(POLL_SECONDS)


def _measure(client: _Client, path: str, token: str, known: set[str]) -> dict[str, Any]:
    """POST the batch from one thread while this one polls the list, until every message of the batch is
    final (or the timeout); the raw timings. `known`: messages that existed before."""
    posted: list[tuple[str, float, float]] = []  # (id, sent, answered), in order
    failure: list[BaseException] = []

    def post_all() -> None:
        try:
            for n in range(MESSAGES):
                sent = time.perf_counter()
                mid = client.call("POST", f"{path}/messages", {"n": n}, token)["id"]
                posted.append((str(mid), sent, time.perf_counter()))
        except BaseException as exc:  # re-raised on this thread
            failure.append(exc)

    poster = threading.Thread(target=post_all, name="bench-message-poster")
    seen_final: dict[str, float] = {}
    status: dict[str, str] = {}
    deadline = time.perf_counter() + COMPLETION_TIMEOUT_SECONDS
    poster.start()
    try:
        while time.perf_counter() < deadline:
            listed = _statuses(client, path, token)
            now = time.perf_counter()
            for mid, state in listed.items():
                if mid in known:
                    continue
                status[mid] = state
                if state in FINAL:
                    seen_final.setdefault(mid, now)
            if failure or (not poster.is_alive() and len(seen_final) >= MESSAGES):
                break
            time.sleep(POLL_SECONDS)
    finally:
        poster.join()
    if failure:
        raise RuntimeError(f"a POST failed: {failure[0]}") from failure[0]
    sent = {mid: t for mid, t, _ in posted}
    return {
        "sent": sent,
        "first_post": min(sent.values()),
        "posts_done": max(answered for _, _, answered in posted),
        "seen_final": {mid: t for mid, t in seen_final.items() if mid in sent},
        "status": status,
    }


def _rows(m: dict[str, Any], stack_start_s: float) -> list[Row]:
    sent: dict[str, float] = m["sent"]
    seen: dict[str, float] = m["seen_final"]
    status: dict[str, str] = m["status"]
    done = [mid for mid in sent if status.get(mid) == "done"]
    by_status: dict[str, int] = {}
    for mid in sent:
        by_status[status.get(mid, "missing")] = by_status.get(status.get(mid, "missing"), 0) + 1
    rows = []
    post_span = m["posts_done"] - m["first_post"]
    if seen:
        span = max(seen.values()) - m["first_post"]
        rows.append(
            Row(
                "throughput: first POST -> last message final",
                {"n": len(seen), "seconds": span, "per_s": len(seen) / span},
                notes={
                    "stack_start_s": round(stack_start_s, 2),
                    "poll_seconds": POLL_SECONDS,
                    "posts_done_at_s": round(post_span, 3),
                    # seconds after the first POST at which each message was first seen final
                    "final_at_s": sorted(round(t - m["first_post"], 3) for t in seen.values()),
                },
            )
        )
    rows.append(
        Row(
            "POST phase (1 client, in order)",
            {"n": len(sent), "seconds": post_span, "per_s": len(sent) / post_span},
        )
    )
    if done:
        latencies = [(seen[mid] - sent[mid]) * 1000 for mid in done if mid in seen]
        rows.append(
            Row(
                "latency: POST sent -> seen done",
                {
                    "n": len(latencies),
                    "median_ms": statistics.median(latencies),
                    "min_ms": min(latencies),
                    "max_ms": max(latencies),
                },
                notes={"latencies_ms": [round(x, 1) for x in sorted(latencies)]},
            )
        )
    rows.append(
        Row(
            f"ended done (of {len(sent)})",
            {"n": len(done)},
            "OK" if len(done) == MESSAGES == len(sent) else "ERROR",
            notes={"by_status": by_status},
        )
    )
    return rows


def run(options: Options) -> list[Row]:
    from devstack.launcher import start_stack

    with tempfile.TemporaryFile("w+") as stack_log:
        t0 = time.perf_counter()
        stack = start_stack(
            env={
                "FLOWGATE_ADMIN_USERNAME": ADMIN[0],
                "FLOWGATE_ADMIN_PASSWORD": ADMIN[1],
                "FLOWGATE_LOCAL_SCHEDULE_SECONDS": SCHEDULE_SECONDS,
            },
            stderr=stack_log,
        )
        stack_start_s = time.perf_counter() - t0
        try:
            client = _Client(stack.url)
            path, token = _setup(client)
            _warm_up(client, path, token, options.warmup)
            measured = _measure(client, path, token, known=set(_statuses(client, path, token)))
        except Exception as exc:
            stack_log.seek(0)
            tail = stack_log.read()[-2000:]
            raise RuntimeError(f"{exc}\n-- the stack's log (tail) --\n{tail}") from exc
        finally:
            stack.stop()
    return _rows(measured, stack_start_s)


if __name__ == "__main__":
    from benchmarks.run import main

    sys.exit(main(["--only", "message_rate", *sys.argv[1:]]))
