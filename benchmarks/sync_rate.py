"""Executions synced per second between two linked local stacks (workspace linking, end to end).

Two stacks are started on free ports, side by side (`devstack.launcher.start_stack`, as
tests/e2e/conftest.launch does: `SyncLongPollSeconds=2 SyncPollSeconds=0`, FLOWGATE_LOCAL_SCHEDULE_SECONDS=1
so the sync sender's sweep fires every second). In each, the platform admin creates a contract, an
org_admin member and a full workspace. B gets a controlled sync config without `remote_url` (it only
listens), A a controlling one whose `remote_url` is B's inbound URL, with two pairs from
`flowgate.sync.keys.generate()` (RSA-3072); A gets a trivial flow (`return this.success('ok')`).
`warmup` remote executions run one by one (not recorded). Then POST_CLIENTS threads POST EXECUTIONS remote
executions to A as fast as they can (`POST /workspaces/{ws}/executions` with `flow`, `inputs` and
`remote_workspace_name`), while this thread polls A's execution list every POLL_SECONDS until all are
final there. It reports:

* throughput: EXECUTIONS / (the last seen `success` on A - the first POST sent), with the batch size
  (`flowgate.sync.exchange.Settings().batch_messages`, the most messages one envelope carries);
* the POST phase alone, and latency from a POST to the poll that saw it `success` on A;
* the exchanges B answered during the batch (its "sync exchange answered" log lines): how many, and the
  messages they carried each way (runs in, statuses out);
* how many ended `success` on A: anything but EXECUTIONS is an ERROR row.

A result comes back the way it would in AWS: the run goes out in A's next exchange (each POST queues a
trigger for A's sender; one sender runs per config at a time and takes what the outbox holds), B runs it
(one execution at a time: the stack's single SQS poller), and the `running` and `success` statuses wait
in B's outbox for A's next exchange, which comes from a later trigger or from the sweep (at most once per
long poll + 1 s per config). Both stacks, their moto servers and the client share this machine's CPUs.
One batch (`--rounds` does not repeat it); under a minute with the stacks' start.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if __package__ in {None, ""}:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import Options, Row
from benchmarks.stack_client import (
    ADMIN,
    A,
    BatchPolls,
    StackClient,
    count_by_status,
    latency_row,
    make_tenant,
    post_phase_row,
    put_flow,
    statuses,
    throughput_row,
)

if TYPE_CHECKING:
    from devstack.launcher import StackProcess

EXECUTIONS = 50
POST_CLIENTS = 4  # the stack keeps up to 4 warm instances of a function
POLL_SECONDS = 0.2
COMPLETION_TIMEOUT_SECONDS = 40.0
WARMUP_TIMEOUT_SECONDS = 30.0
FINAL = frozenset({"success", "error", "cancelled"})
FLOW = "remote-noop"
LINK_A, LINK_B = "bench-to-b", "bench-from-a"
LINKING = "SyncLongPollSeconds=2 SyncPollSeconds=0"  # as tests/e2e/test_workspace_linking_e2e.py
SCHEDULE_SECONDS = "1"
ANSWERED = "sync exchange answered"
LOG_TIME = "%Y-%m-%d %H:%M:%S,%f%z"  # powertools' `timestamp`


@dataclass
class Side:
    """One stack's end of the link: its client, workspace and org_admin member's token."""

    client: StackClient
    ws: str
    token: str

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return self.client.call(method, f"{A}/workspaces/{self.ws}{path}", body, self.token)


@contextmanager
def _two_stacks() -> Iterator[tuple[StackProcess, StackProcess, float]]:
    """Stacks A and B, started side by side: both, and the seconds until both listened. Both are stopped
    on exit; an exception inside carries the tail of each stack's log."""
    from devstack.launcher import start_stack

    env = {
        "FLOWGATE_ADMIN_USERNAME": ADMIN[0],
        "FLOWGATE_ADMIN_PASSWORD": ADMIN[1],
        "FLOWGATE_LOCAL_SCHEDULE_SECONDS": SCHEDULE_SECONDS,
    }
    with ExitStack() as cleanup:
        logs: list[IO[str]] = [cleanup.enter_context(tempfile.TemporaryFile("w+")) for _ in range(2)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            starts = [
                pool.submit(start_stack, env=env, parameter_overrides=LINKING, stderr=log) for log in logs
            ]
        stacks = []
        for start in starts:  # stop every stack that started, even when the other did not
            if start.exception() is None:
                stack = start.result()
                cleanup.callback(stack.stop)
                stacks.append(stack)
        for start in starts:
            start.result()  # raises the failed start's error
        started_s = time.perf_counter() - t0
        try:
            yield stacks[0], stacks[1], started_s
        except Exception as exc:
            tails = []
            for name, log in zip("AB", logs, strict=True):
                log.seek(0)
                tails.append(f"-- stack {name}'s log (tail) --\n{log.read()[-1500:]}")
            raise RuntimeError("\n".join([str(exc), *tails])) from exc


def _side(client: StackClient) -> Side:
    """A contract, its org_admin member and a full workspace (made by the platform admin)."""
    tenant = make_tenant(client)
    ws = client.call(
        "POST", f"{A}/contracts/{tenant.cid}/workspaces", {"name": "bench", "kind": "full"}, tenant.admin
    )
    return Side(client, str(ws["id"]), tenant.token)


def _link(a: Side, b: Side) -> None:
    """B's controlled config listens; A's controlling config dials B's inbound URL (seed 000's setup)."""
    from flowgate.sync.keys import generate

    key_a, key_b = generate(), generate()
    b.call(
        "PUT",
        f"/sync_config/{LINK_B}",
        {"enabled": True, "own_private_key": key_b.private_pem, "remote_public_key": key_a.public_pem},
    )
    made = a.call(
        "PUT",
        f"/sync_config/{LINK_A}",
        {
            "enabled": True,
            "remote_url": f"{b.client.base}{A}/sync_config/{LINK_B}/sync",
            "own_private_key": key_a.private_pem,
            "remote_public_key": key_b.public_pem,
        },
    )
    if made["role"] != "controlling" or not made["dials_out"]:
        raise RuntimeError(f"A's config is not a controlling one that dials out: {made}")
    put_flow(a.client, a.ws, FLOW, a.token)


def _start(a: Side, n: int) -> str:
    body = {"flow": FLOW, "inputs": {"n": n}, "remote_workspace_name": LINK_A}
    return str(a.call("POST", "/executions", body)["id"])


def _statuses(a: Side) -> dict[str, str]:
    return statuses(a.client, f"{A}/workspaces/{a.ws}/executions", a.token)


def _warm_up(a: Side, count: int) -> None:
    """Remote executions run one by one before the batch: both stacks' code paths, the sender's worker."""
    for n in range(count):
        eid = _start(a, -1 - n)
        deadline = time.monotonic() + WARMUP_TIMEOUT_SECONDS
        while (status := a.call("GET", f"/executions/{eid}")["status"]) not in FINAL:
            if time.monotonic() > deadline:
                raise RuntimeError(f"warm-up execution {eid} did not end in {WARMUP_TIMEOUT_SECONDS:g}s")
            time.sleep(POLL_SECONDS)
        if status != "success":
            raise RuntimeError(f"warm-up execution {eid} ended {status}")


def _measure(a: Side, known: set[str]) -> dict[str, Any]:
    """POST the batch from a thread pool while this thread polls A's list, until every execution of the
    batch is final (or the timeout); the raw timings."""

    def post(n: int) -> tuple[str, float, float]:
        sent = time.perf_counter()
        eid = _start(a, n)
        return eid, sent, time.perf_counter()

    polls = BatchPolls(known, FINAL)
    deadline = time.perf_counter() + COMPLETION_TIMEOUT_SECONDS
    with ThreadPoolExecutor(POST_CLIENTS) as pool:
        futures = [pool.submit(post, n) for n in range(EXECUTIONS)]
        while time.perf_counter() < deadline:
            polls.record(_statuses(a))
            if all(f.done() for f in futures) and len(polls.seen_final) >= EXECUTIONS:
                break
            time.sleep(POLL_SECONDS)
        posted = [f.result() for f in futures]  # a failed POST raises here
    return polls.timings(posted)


def _exchanges(lines: list[str], began: datetime, ended: datetime) -> list[dict[str, int]]:
    """The exchanges B answered between `began` and `ended`, from its functions' JSON log lines (the
    stack keeps its last 2000 stdout lines; a batch writes a few dozen): runs received, messages sent
    back, acks."""
    found = []
    for line in lines:
        if ANSWERED not in line:
            continue
        try:
            entry = json.loads(line)
            logged = datetime.strptime(str(entry["timestamp"]), LOG_TIME)
        except (ValueError, KeyError, TypeError):
            continue
        if entry.get("message") == ANSWERED and began <= logged <= ended:
            found.append({k: int(entry.get(k, 0)) for k in ("received", "sent", "acked")})
    return found


def _exchange_row(exchanges: list[dict[str, int]], batch: int) -> Row:
    received = [e["received"] for e in exchanges]
    sent = [e["sent"] for e in exchanges]
    carrying = [e for e in exchanges if e["received"] or e["sent"]]
    return Row(
        "B: exchanges answered during the batch",
        {
            "n": len(exchanges),
            "with_messages": len(carrying),
            "runs_in": sum(received),
            "max_runs_in": max(received, default=0),
            "statuses_out": sum(sent),
            "max_statuses_out": max(sent, default=0),
            "batch_messages": batch,
        },
        notes={
            "per_exchange": exchanges,
            "mean_messages_per_carrying_exchange": (
                round(statistics.mean(e["received"] + e["sent"] for e in carrying), 2) if carrying else 0
            ),
        },
    )


def _rows(m: dict[str, Any], exchanges: list[dict[str, int]], started_s: float) -> list[Row]:
    from flowgate.sync.exchange import Settings

    batch = Settings().batch_messages
    sent: dict[str, float] = m["sent"]
    seen: dict[str, float] = m["seen_final"]
    successes = [eid for eid in sent if m["status"].get(eid) == "success"]
    rows = []
    if seen:
        row = throughput_row(
            "synced: first POST on A -> last success on A", m, started_s, POLL_SECONDS, "final_at_s"
        )
        row.figures["batch_messages"] = batch
        rows.append(row)
    rows.append(post_phase_row(f"POST phase ({POST_CLIENTS} client threads)", m))
    if successes:
        latencies = [(seen[eid] - sent[eid]) * 1000 for eid in successes if eid in seen]
        rows.append(latency_row("latency: POST sent -> seen success on A", latencies))
    rows.append(_exchange_row(exchanges, batch))
    rows.append(
        Row(
            f"ended success on A (of {len(sent)})",
            {"n": len(successes)},
            "OK" if len(successes) == EXECUTIONS == len(sent) else "ERROR",
            notes={"by_status": count_by_status(m)},
        )
    )
    rows.append(Row("both stacks: launch -> listening", {"seconds": started_s}))
    return rows


def run(options: Options) -> list[Row]:
    shared = str(options.root / "shared")
    if shared not in sys.path:
        sys.path.insert(0, shared)  # flowgate.sync.keys makes the link's keys here
    with _two_stacks() as (stack_a, stack_b, started_s):
        a, b = _side(StackClient(stack_a.url)), _side(StackClient(stack_b.url))
        _link(a, b)
        _warm_up(a, options.warmup)
        known = set(_statuses(a))
        began = datetime.now(UTC)
        measured = _measure(a, known)
        exchanges = _exchanges(list(stack_b.output), began, datetime.now(UTC))
    return _rows(measured, exchanges, started_s)


if __name__ == "__main__":
    from benchmarks.run import main

    sys.exit(main(["--only", "sync_rate", *sys.argv[1:]]))
