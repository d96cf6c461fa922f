"""Flowgate's benchmarks (`make bench`): run each registered benchmark, print a table, write JSON.

Usage: python benchmarks/run.py [--only NAME ...] [--rounds N] [--warmup N] [--json PATH]

Figures are measured, not asserted: a benchmark may mark a row OVER its goal, but the process fails
only when a benchmark cannot run. See benchmarks/README.md to add one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/run.py` puts benchmarks/, not the repo, on the path
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Options:
    """What every benchmark receives: where the repo is, and how hard to measure."""

    root: Path
    python: str
    rounds: int = 15
    warmup: int = 2


@dataclass
class Row:
    """One line of a benchmark's table. `figures` keys become columns (floats print with 1 decimal);
    `verdict` is e.g. PASS/OVER against a goal stated in `goal`, or None when there is no goal."""

    subject: str
    figures: dict[str, float | int | str]
    verdict: str | None = None
    goal: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)


Benchmark = Callable[[Options], list[Row]]


def _registry() -> dict[str, Benchmark]:
    """Every benchmark, by name, in run order. Add new ones here."""
    from benchmarks import (
        enforcer_calls,
        executions,
        gateway_rate,
        import_time,
        login_throttle,
        message_rate,
        pending_tasks,
        propagation_rate,
        runtime_overhead,
        sync_rate,
        sync_verify,
        workflow_decisions,
    )

    return {
        "import_time": import_time.run,
        "runtime_overhead": runtime_overhead.run,
        "executions": executions.run,
        "workflow_decisions": workflow_decisions.run,
        "pending_tasks": pending_tasks.run,
        "enforcer_calls": enforcer_calls.run,
        "message_rate": message_rate.run,
        "login_throttle": login_throttle.run,
        "gateway_rate": gateway_rate.run,
        "sync_verify": sync_verify.run,
        "sync_rate": sync_rate.run,
        "propagation_rate": propagation_rate.run,
    }


def _format_table(name: str, rows: Sequence[Row]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row.figures if k not in columns]
    header = ["subject", *columns, "verdict"]

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
        return "" if value is None else str(value)

    body = [[row.subject, *(cell(row.figures.get(c)) for c in columns), cell(row.verdict)] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    title = f"== {name} ==" + (f"  (goal: {rows[0].goal})" if rows and rows[0].goal else "")
    lines = [title, line(header), line(["-" * w for w in widths]), *(line(r) for r in body)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    registry = _registry()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", action="append", choices=sorted(registry), help="run only this benchmark")
    parser.add_argument("--rounds", type=int, default=15, help="measured rounds per subject (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded warm-up rounds (default 2)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be >= 1 and --warmup >= 0")

    options = Options(root=ROOT, python=sys.executable, rounds=args.rounds, warmup=args.warmup)
    report: dict[str, Any] = {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "options": {"rounds": options.rounds, "warmup": options.warmup},
        "benchmarks": {},
    }
    failed = False
    for name, benchmark in registry.items():
        if args.only and name not in args.only:
            continue
        try:
            rows = benchmark(options)
        except Exception as exc:
            failed = True
            traceback.print_exc()
            report["benchmarks"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"== {name} ==  ERROR: {exc}", file=sys.stderr)
            continue
        report["benchmarks"][name] = {"rows": [asdict(r) for r in rows]}
        print(_format_table(name, rows), end="\n\n", flush=True)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
