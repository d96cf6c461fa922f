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
import time
from concurrent.futures import ThreadPoolExecutor
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

EXECUTIONS = 40
POST_CLIENTS = 4  # the stack keeps up to 4 warm instances of a function
POLL_SECONDS = 0.1
COMPLETION_TIMEOUT_SECONDS = 45.0
FINAL = frozenset({"success", "error", "cancelled"})
FLOW = "noop"


def _setup(client: StackClient) -> tuple[str, str]:
    """A contract, an org_admin member, a limited workspace with the flow: (workspace id, member token)."""
    tenant = make_tenant(client)
    ws = client.call(
        "POST", f"{A}/contracts/{tenant.cid}/workspaces", {"name": "bench", "kind": "limited"}, tenant.token
    )
    put_flow(client, ws["id"], FLOW, tenant.token)
    return str(ws["id"]), tenant.token


def _statuses(client: StackClient, ws: str, token: str) -> dict[str, str]:
    """Every execution of the workspace: id -> status (the list, all pages)."""
    return statuses(client, f"{A}/workspaces/{ws}/executions", token)


def _warm_up(client: StackClient, ws: str, token: str, count: int) -> None:
    """Executions run one by one before the measured batch: loads the runner's code paths."""
    for _ in range(count):
        eid = client.call("POST", f"{A}/workspaces/{ws}/executions", {"flow": FLOW}, token)["id"]
        deadline = time.monotonic() + COMPLETION_TIMEOUT_SECONDS
        while client.call("GET", f"{A}/workspaces/{ws}/executions/{eid}", token=token)["status"] not in FINAL:
            if time.monotonic() > deadline:
                raise RuntimeError(f"warm-up execution {eid} did not end in {COMPLETION_TIMEOUT_SECONDS:g}s")
            time.sleep(POLL_SECONDS)


def _measure(client: StackClient, ws: str, token: str, known: set[str]) -> dict[str, Any]:
    """POST the batch from a thread pool while this thread polls the list, until every execution of the
    batch is final (or the timeout); the raw timings. `known`: executions that existed before."""

    def post(_: int) -> tuple[str, float, float]:
        sent = time.perf_counter()
        eid = client.call("POST", f"{A}/workspaces/{ws}/executions", {"flow": FLOW}, token)["id"]
        return str(eid), sent, time.perf_counter()

    polls = BatchPolls(known, FINAL)  # every new execution, by the first poll that saw it final
    deadline = time.perf_counter() + COMPLETION_TIMEOUT_SECONDS
    with ThreadPoolExecutor(POST_CLIENTS) as pool:
        futures = [pool.submit(post, i) for i in range(EXECUTIONS)]
        while time.perf_counter() < deadline:
            polls.record(_statuses(client, ws, token))
            if all(f.done() for f in futures) and len(polls.seen_final) >= EXECUTIONS:
                break
            time.sleep(POLL_SECONDS)
        posted = [f.result() for f in futures]  # a failed POST raises here
    return polls.timings(posted)


def _durations(client: StackClient, ws: str, token: str, ids: list[str]) -> list[float]:
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
    successes = sum(1 for eid in sent if m["status"].get(eid) == "success")
    rows = []
    if seen:
        rows.append(
            throughput_row(
                "throughput: first POST -> last completion", m, stack_start_s, POLL_SECONDS, "completed_at_s"
            )
        )
    rows.append(post_phase_row(f"POST phase ({POST_CLIENTS} client threads)", m))
    if seen:
        latencies = [(seen[eid] - sent[eid]) * 1000 for eid in seen]
        rows.append(latency_row("latency: POST sent -> seen final", latencies))
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
            notes={"by_status": count_by_status(m)},
        )
    )
    return rows


def run(options: Options) -> list[Row]:
    with running_stack() as (client, stack_start_s):
        ws, token = _setup(client)
        _warm_up(client, ws, token, options.warmup)
        measured = _measure(client, ws, token, known=set(_statuses(client, ws, token)))
        durations = _durations(client, ws, token, list(measured["sent"]))
    return _rows(measured, durations, stack_start_s)


if __name__ == "__main__":
    from benchmarks.run import main

    sys.exit(main(["--only", "executions", *sys.argv[1:]]))
