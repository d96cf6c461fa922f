"""Requests per second through the local stack's gateway (`python -m devstack`, what `make run` runs).

A stack is started on a free port (its time to listen is reported as a row) and left alone for
SETTLE_SECONDS, while it starts one worker process of each function in the background (measured along,
that start-up took a quarter of the rate). Then CLIENTS threads, each with
a `requests.Session` of its own (keep-alive, as a load generator would), first send WARMUP_SECONDS of
requests (not recorded: the identity function's workers start then), then as many as they can for
MEASURE_SECONDS. Two subjects, one after the other:

* `GET /api/latest/health`: the gateway, a proxy event, a round trip to one of the identity function's
  worker processes (at most `max_instances`, 4, run at once, as Lambda's concurrency would cap them) and
  the handler itself, which answers without an AWS call;
* `GET /no-such-route`: answered 403 by the gateway itself, so the gateway and HTTP alone.

Each reports requests/s (answers of the expected status / seconds), latency median, p95 and max, and how
many answers were not the expected status or failed (any is an ERROR row). The client threads, the
gateway, the workers and moto share this machine's CPUs, so the figure is this machine's, not AWS's.
One batch per subject (`--rounds` does not repeat it); about 25 s with the stack's start.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path

if __package__ in {None, ""}:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests

from benchmarks.run import Options, Row
from benchmarks.stack_client import running_stack

CLIENTS = 64
SETTLE_SECONDS = 6.0
WARMUP_SECONDS = 2.0
MEASURE_SECONDS = 5.0
TIMEOUT_SECONDS = 30.0
SUBJECTS = (("/api/latest/health", 200), ("/no-such-route", 403))


def _load(url: str, expected: int, seconds: float) -> tuple[list[float], int, float]:
    """CLIENTS threads GET `url` until `seconds` have passed: latencies (ms) of expected answers, how many
    were not, and the span from the first request to the last answer."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS + 1)
    stop_at: list[float] = []

    def client() -> None:
        nonlocal failures
        mine: list[float] = []
        bad = 0
        with requests.Session() as session:
            start.wait()
            while time.perf_counter() < stop_at[0]:
                sent = time.perf_counter()
                try:
                    ok = session.get(url, timeout=TIMEOUT_SECONDS).status_code == expected
                except requests.RequestException:
                    ok = False
                if ok:
                    mine.append((time.perf_counter() - sent) * 1000)
                else:
                    bad += 1
        with lock:
            latencies.extend(mine)
            failures += bad

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    stop_at.append(began + seconds)
    start.wait()
    for thread in threads:
        thread.join()
    return latencies, failures, time.perf_counter() - began


def _row(path: str, latencies: list[float], failures: int, span: float) -> Row:
    ordered = sorted(latencies)
    figures: dict[str, float | int | str] = {
        "n": len(ordered),
        "per_s": len(ordered) / span,
        "median_ms": statistics.median(ordered) if ordered else 0.0,
        "p95_ms": ordered[int(0.95 * (len(ordered) - 1))] if ordered else 0.0,
        "max_ms": ordered[-1] if ordered else 0.0,
        "failed": failures,
    }
    return Row(
        f"GET {path} ({CLIENTS} clients)",
        figures,
        "ERROR" if failures or not ordered else None,
        notes={"seconds": round(span, 2)},
    )


def run(options: Options) -> list[Row]:
    rows = []
    with running_stack() as (client, stack_start_s):
        time.sleep(SETTLE_SECONDS)
        for path, expected in SUBJECTS:
            _load(client.base + path, expected, WARMUP_SECONDS)
            rows.append(_row(path, *_load(client.base + path, expected, MEASURE_SECONDS)))
    rows.append(Row("stack start: launch -> listening", {"seconds": stack_start_s}))
    return rows


if __name__ == "__main__":
    from benchmarks.run import main

    sys.exit(main(["--only", "gateway_rate", *sys.argv[1:]]))
