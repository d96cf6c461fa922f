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

import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in {None, ""}:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import Options, Row
from benchmarks.stack_client import (
    A,
    BatchPolls,
    StackClient,
    count_by_status,
    latency_row,
    make_tenant,
    post_phase_row,
    put_flow,
    running_stack,
    statuses,
    throughput_row,
)

MESSAGES = 30
POLL_SECONDS = 0.1
COMPLETION_TIMEOUT_SECONDS = 40.0
FINAL = frozenset({"done", "failed", "discarded"})
FLOW = "consume"
SCHEDULE_SECONDS = "60"


def _setup(client: StackClient) -> tuple[str, str]:
    """A contract, an org_admin member, a full workspace with the flow, active: (flow path, member token)."""
    tenant = make_tenant(client)
    token = tenant.token
    ws = client.call("POST", f"{A}/contracts/{tenant.cid}/workspaces", {"name": "bench"}, token)["id"]
    kind = client.call("PATCH", f"{A}/workspaces/{ws}", {"kind": "full"}, tenant.admin)["kind"]
    if kind != "full":
        raise RuntimeError(f"the workspace is {kind} after the PATCH")
    path = put_flow(client, ws, FLOW, token)
    state = client.call("POST", f"{path}/activate", token=token)
    if state["status"] != "active" or state.get("stops_at"):
        raise RuntimeError(f"the flow is not active without a stop: {state}")
    return path, token


def _statuses(client: StackClient, path: str, token: str) -> dict[str, str]:
    """Every message of the flow: id -> status (the list, all pages)."""
    return statuses(client, f"{path}/messages", token)


def _warm_up(client: StackClient, path: str, token: str, count: int) -> None:
    """Messages processed one by one before the measured batch: loads the consumer's code paths."""
    for n in range(count):
        mid = client.call("POST", f"{path}/messages", {"warmup": n}, token)["id"]
        deadline = time.monotonic() + COMPLETION_TIMEOUT_SECONDS
        while _statuses(client, path, token).get(mid) not in FINAL:
            if time.monotonic() > deadline:
                raise RuntimeError(f"warm-up message {mid} did not end in {COMPLETION_TIMEOUT_SECONDS:g}s")
            time.sleep(POLL_SECONDS)


def _measure(client: StackClient, path: str, token: str, known: set[str]) -> dict[str, Any]:
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
    polls = BatchPolls(known, FINAL)
    deadline = time.perf_counter() + COMPLETION_TIMEOUT_SECONDS
    poster.start()
    try:
        while time.perf_counter() < deadline:
            polls.record(_statuses(client, path, token))
            if failure or (not poster.is_alive() and len(polls.seen_final) >= MESSAGES):
                break
            time.sleep(POLL_SECONDS)
    finally:
        poster.join()
    if failure:
        raise RuntimeError(f"a POST failed: {failure[0]}") from failure[0]
    return polls.timings(posted)


def _rows(m: dict[str, Any], stack_start_s: float) -> list[Row]:
    sent: dict[str, float] = m["sent"]
    seen: dict[str, float] = m["seen_final"]
    done = [mid for mid in sent if m["status"].get(mid) == "done"]
    rows = []
    if seen:
        rows.append(
            throughput_row(
                "throughput: first POST -> last message final", m, stack_start_s, POLL_SECONDS, "final_at_s"
            )
        )
    rows.append(post_phase_row("POST phase (1 client, in order)", m))
    if done:
        latencies = [(seen[mid] - sent[mid]) * 1000 for mid in done if mid in seen]
        rows.append(latency_row("latency: POST sent -> seen done", latencies))
    rows.append(
        Row(
            f"ended done (of {len(sent)})",
            {"n": len(done)},
            "OK" if len(done) == MESSAGES == len(sent) else "ERROR",
            notes={"by_status": count_by_status(m)},
        )
    )
    return rows


def run(options: Options) -> list[Row]:
    with running_stack({"FLOWGATE_LOCAL_SCHEDULE_SECONDS": SCHEDULE_SECONDS}) as (client, stack_start_s):
        path, token = _setup(client)
        _warm_up(client, path, token, options.warmup)
        measured = _measure(client, path, token, known=set(_statuses(client, path, token)))
    return _rows(measured, stack_start_s)


if __name__ == "__main__":
    from benchmarks.run import main

    sys.exit(main(["--only", "message_rate", *sys.argv[1:]]))
