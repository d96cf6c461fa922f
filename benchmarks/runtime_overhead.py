"""The flow runtime's own cost per script run: `sandbox.run_script` of a trivial script against a bare
interpreter start, and the time of one RPC round trip between a script and its parent.

What is measured, in this process (as a warm runner container would run it):
* `run_script` of a script that logs one line and makes one `system.secret_names()` call, answered at
  once by a fake `on_call`: the request to the warm fork server, its keeper and script process (two
  forks), bootstrap (confine: rlimits with the RLIMIT_NPROC count, non-dumpable, NO_NEW_PRIVS, seccomp),
  the JSON-lines protocol, the run directory and the sweep of the shared temp dirs, and the kill and reap
  of the run's process group. Goal: median / median baseline <= GOAL (also shown for the 0-RPC script).
* the first `run_script` of this process, once, before the warm-up: it also makes the platform's
  directories and starts the fork server (what a container pays once, at `harden_current_process()`).
* the baseline: `<interpreter> -I -S -B -c pass` started the way the sandbox starts its child (same
  interpreter, flags, minimal environment, pipes, new session and, as root, uid/gid 65534), waited for.
  The interpreter is the sandbox's own choice (`sandbox.interpreter()`): ours, or, when this process is
  root, a system Python of the same minor version that uid 65534 can run. The baseline row names it.
* per RPC: a script making N `system.secret_names()` calls against one making none; (difference of the
  medians) / N.

Subjects are interleaved, the order rotating every round, after the warm-up rounds.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in {None, ""}:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import Options, Row

RPC_CALLS = 200
GOAL = 1.5
TRIVIAL = "trivial"
BASELINE = "baseline"
ZERO_CALLS = "zero_calls"
MANY_CALLS = "many_calls"

TRIVIAL_SCRIPT = """\
import flow_api
def handler(system, this, inputs):
    this.log('x')
    system.secret_names()
    return this.success('ok')
"""
ZERO_CALLS_SCRIPT = """\
import flow_api
def handler(system, this, inputs):
    return this.success('ok')
"""
MANY_CALLS_SCRIPT = f"""\
import flow_api
def handler(system, this, inputs):
    for _ in range({RPC_CALLS}):
        system.secret_names()
    return this.success('ok')
"""


def _fake_on_call(op: str, args: dict[str, Any]) -> Any:
    """Answers at once, as a platform with nothing to look up would."""
    if op == "system_get" and args.get("kind") == "secret_names":
        return ["api-key", "db-password"]
    return None


def _sandbox() -> Any:
    """flowgate.sandbox, with shared/ (the SharedLayer) on the path."""
    shared = str(Path(__file__).resolve().parent.parent / "shared")
    if shared not in sys.path:
        sys.path.insert(0, shared)
    from flowgate import sandbox

    return sandbox


def _script_sample(sandbox: Any, script: str) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        result = sandbox.run_script(script, {}, _fake_on_call, execution_id="bench")
        elapsed = time.perf_counter() - t0
        if result.status != "success":
            raise RuntimeError(f"the benchmark script ended {result.status}: {result.message} {result.log}")
        return elapsed

    return run


def _baseline_sample(sandbox: Any, interpreter: str, drop: bool) -> Callable[[], float]:
    """A bare interpreter start, spawned with what the sandbox passes (minus the script's work)."""

    def run() -> float:
        with tempfile.TemporaryDirectory(prefix="flowgate-bench-") as home:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [interpreter, "-I", "-S", "-B", "-c", "pass"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=sandbox.child_env(Path(home)),
                cwd="/",
                start_new_session=True,
                close_fds=True,
                user=sandbox.SANDBOX_UID if drop else None,
                group=sandbox.SANDBOX_GID if drop else None,
                extra_groups=[] if drop else None,
            )
            _, err = proc.communicate(timeout=60)
            elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{interpreter} -c pass failed: {err.decode(errors='replace')[-500:]}")
        return elapsed

    return run


def _stats(ms: list[float], base: float) -> dict[str, float | int | str]:
    median = statistics.median(ms)
    return {
        "median_ms": median,
        "min_ms": min(ms),
        "max_ms": max(ms),
        "n": len(ms),
        "ratio": median / base,
        "over_base_ms": median - base,
    }


def run(options: Options) -> list[Row]:
    sandbox = _sandbox()
    interpreter: str = sandbox.interpreter()
    drop: bool = sandbox.dropping_privileges()
    who = f"uid {sandbox.SANDBOX_UID}" if drop else "own uid"

    subjects: dict[str, Callable[[], float]] = {
        BASELINE: _baseline_sample(sandbox, interpreter, drop),
        TRIVIAL: _script_sample(sandbox, TRIVIAL_SCRIPT),
        ZERO_CALLS: _script_sample(sandbox, ZERO_CALLS_SCRIPT),
        MANY_CALLS: _script_sample(sandbox, MANY_CALLS_SCRIPT),
    }
    names = list(subjects)
    samples: dict[str, list[float]] = {name: [] for name in names}
    first_ms = subjects[TRIVIAL]() * 1000  # makes the platform's directories, starts the fork server
    for round_no in range(options.warmup + options.rounds):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:  # rotate the order every round
            seconds = subjects[name]()
            if round_no >= options.warmup:
                samples[name].append(seconds * 1000)

    base = statistics.median(samples[BASELINE])
    per_rpc_ms = (statistics.median(samples[MANY_CALLS]) - statistics.median(samples[ZERO_CALLS])) / RPC_CALLS
    paired = [(m - z) / RPC_CALLS for m, z in zip(samples[MANY_CALLS], samples[ZERO_CALLS], strict=True)]

    def notes(name: str) -> dict[str, Any]:
        return {"samples_ms": [round(x, 2) for x in samples[name]], "interpreter": interpreter, "as": who}

    goal = f"median ratio to baseline <= {GOAL}"

    def row(subject: str, name: str, *, judged: bool = False) -> Row:
        figures = _stats(samples[name], base)
        verdict = ("PASS" if float(figures["ratio"]) <= GOAL else "OVER") if judged else None
        return Row(subject, figures, verdict, goal, notes(name))

    return [
        row(f"baseline: {interpreter} -I -S -B -c pass ({who})", BASELINE),
        row("run_script: log + 1 RPC", TRIVIAL, judged=True),
        row("run_script: 0 RPCs", ZERO_CALLS, judged=True),
        row(f"run_script: {RPC_CALLS} RPCs", MANY_CALLS),
        Row(
            "first run_script of a process (starts the fork server)",
            {"median_ms": first_ms, "n": 1, "ratio": first_ms / base},
            goal=goal,
            notes={"what": "platform directories, fork server start, one run"},
        ),
        Row(
            f"per RPC round trip ({RPC_CALLS} vs 0 calls)",
            {"per_rpc_us": per_rpc_ms * 1000, "n": len(paired)},
            notes={
                "method": f"(median {RPC_CALLS}-call run - median 0-call run) / {RPC_CALLS}",
                "paired_per_rpc_us": [round(x * 1000, 1) for x in paired],
                "paired_median_us": round(statistics.median(paired) * 1000, 1),
            },
        ),
    ]


if __name__ == "__main__":
    from benchmarks.run import main

    sys.exit(main(["--only", "runtime_overhead", *sys.argv[1:]]))
