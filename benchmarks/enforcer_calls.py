"""AWS calls of one enforcer run with 10 flows due, among 10 versus 10,000 active flows.

The enforcer (`flowgate.activation.enforcer.Enforcer.run`) queries the due index (`DUE#STOP`, `DUE#WARN`,
sort key `<time>#<wsid>#<flow>`) up to now, so its cost should follow the flows that are due, not the
flows that are active: goal calls(10,000 active) / calls(10 active) <= 1.2.

A fresh interpreter opens `moto.mock_aws` and provisions template.yaml with the functions' environment
(as the handler tests do, `benchmarks.moto_support.provision_template`). Through the real services
it creates a contract, an org admin and DUE_WORKSPACES limited workspaces with DUE_PER_WORKSPACE flows
each (5: the template's default quota of active flows per limited workspace): the 10 flows that will be
due. Time is a frame of its own, from S0 (now): round k activates the 10 (an `ActivationService` built as
`container().activation` builds it, real SQS queue and runner, on a clock set to S0 + k s), then runs the
composition root's enforcer (`container().enforcer`, the real `EventBridgePublisher`) once at their
stop time, S0 + k s + the runtime limit: all 10 are stopped, and their warnings go with the stops.

* Case A: the 10 flows are the only active flows.
* Case B: the same, plus 9,990 active flows of other limited workspaces (5 each) that are due neither to
  stop nor to be warned at any run (activated between S0 + warning + 2 x (warmup + rounds) + 1 s and
  S0 + runtime). Each is written as `ActivationStore.activate` writes an activation, its transaction
  captured rather than sent (the activation item, its stop and warning entries in the same
  `DUE#STOP`/`DUE#WARN` partitions as the 10, the audit line; the workspace's active-flow counter as 5
  `ADD`s leave it), and put straight into moto's in-process table (through moto's API 40,000 items take
  minutes). One is read back through the service before the runs.

Every AWS API call of a run is counted by a botocore `before-call` hook on the clients the enforcer uses
(DynamoDB and EventBridge), and the Count/ScannedCount of each Query by an `after-call` hook: what the key
conditions selected, what DynamoDB reads. A patch of `BaseClient._make_api_call` cross-checks that no
other client was called (else the row is an ERROR), and names what each call touched (JSON notes). Case A
runs `warmup` unrecorded rounds first; each case then up to `rounds` measured ones, stopped when the next
would end after MEASURE_BUDGET_SECONDS (at least one). The calls must be the same in every round.

Times are informative, moto's rather than DynamoDB's, and two things about moto are handled:

* moto 5's `Table.query` walks and sorts every item of the table on each Query whatever its key, so under
  moto a run grows with the table (about 1 s per Query at 42,000 items) where DynamoDB's would not. The
  time inside it is shown apart (`moto_query_ms`), `rest_ms` is the remainder.
* moto's TransactWriteItems deep-copies each table it names before every transaction (its rollback): with
  42,000 items, seconds per call. The child replaces that backup by one of the items the transaction names
  (`tests.support.moto.item_level_transaction_rollback`); no call changes, only moto's time.
"""

from __future__ import annotations

import gc
import json
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in {None, ""}:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.moto_support import (
    FLOW_SCRIPT,
    CallLog,
    counting_calls,
    isolated_aws_environment,
    make_member,
    moto_query_timer,
    moto_table,
    partition_size,
    provision_template,
    put_plain_item,
    root_principal,
    run_rounds_child,
    script_main,
)
from benchmarks.run import Options, Row
from tests.support.moto import item_level_transaction_rollback

GOAL_RATIO = 1.2
DUE_WORKSPACES = 2
DUE_PER_WORKSPACE = 5  # the template's default quota of active flows per limited workspace
DUE_FLOWS = DUE_WORKSPACES * DUE_PER_WORKSPACE
ACTIVE_TOTAL = 10_000  # case B: active flows in all, the DUE_FLOWS included
BULK_PER_WORKSPACE = 5
# Measured runs per case stop when the next would end after this (at least one run): under moto one run
# of case B takes about 11 s on two cores (see the module's docstring), one of case A 0.1 s.
MEASURE_BUDGET_SECONDS = 20.0
PASSWORD = "bench-admin-password-1"  # noqa: S105 - a user of a throwaway moto account
CASES = ("A", "B")


# ---- the child: the world under moto ------------------------------------------------------------------


class _Clock:
    """The activation service's clock: stands where the benchmark puts it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class _World:
    svc: Any  # ActivationService
    enforcer: Any  # Enforcer, from the composition root
    clock: _Clock
    admin: Any  # Principal
    due: list[tuple[str, str]]  # (workspace id, flow) of the flows that will be due
    table: str


def _world(table: str, start: datetime) -> _World:
    from flowgate.activation.adapters import SqsFifoMessageQueue
    from flowgate.activation.service import ActivationService
    from flowgate.flows.models import PutFlowRequest
    from flowgate.identity.models import CreateContractRequest, CreateWorkspaceRequest, Role
    from flowgate.wiring import container

    ids = container().identity
    cid = ids.create_contract(root_principal(), CreateContractRequest(name="bench-enforcer")).id
    admin = make_member(root_principal(), cid, "bench-enforcer-admin", PASSWORD, Role.ORG_ADMIN)
    due: list[tuple[str, str]] = []
    for w in range(DUE_WORKSPACES):
        ws = ids.create_workspace(admin, cid, CreateWorkspaceRequest(name=f"sandbox-{w}")).id
        for f in range(DUE_PER_WORKSPACE):
            container().flows.put_flow(admin, ws, f"due-{f}", PutFlowRequest(script=FLOW_SCRIPT))
            due.append((ws, f"due-{f}"))
    settings = container().activation_settings
    clock = _Clock(start)
    svc = ActivationService(  # as container().activation builds it, on a clock the benchmark moves
        container().activation_store,
        container().flows,
        container().identity,
        queue=SqsFifoMessageQueue(settings.message_queue_url),
        runner=container().activation.runner,
        settings=settings,
        clock=clock,
    )
    return _World(svc, container().enforcer, clock, admin, due, table)


def _captured_activation(template: Mapping[str, Any], wsid: str, flow: str, activated: datetime) -> list[Any]:
    """The writes of `ActivationStore.activate` for a first activation of `flow` in `wsid` at `activated`
    (item fields as `ActivationService.activate` sets them, after `template`, a real activation item),
    captured instead of sent."""
    from flowgate import clock as flowgate_clock
    from flowgate.activation import rules
    from flowgate.activation.service import audit_item
    from flowgate.activation.store import ActivationStore
    from flowgate.db import Table, Write
    from flowgate.wiring import container

    class Capturing(Table):
        def __init__(self, name: str) -> None:
            super().__init__(name)
            self.writes: list[Write] = []

        def transact(self, writes: Sequence[Write]) -> None:
            self.writes.extend(writes)

    settings = container().activation_settings
    stamp = flowgate_clock.iso_ms(activated)
    stop = rules.stops_at(activated, settings.max_runtime_seconds)
    user = f"{wsid}-user"
    item = {k: v for k, v in template.items() if k not in {"PK", "SK", "stop", "warned_at", "seconds_left"}}
    item.update(
        workspace_id=wsid,
        flow=flow,
        activated_at=stamp,
        activated_by=user,
        stop=None,
        version=1,
        stops_at=flowgate_clock.iso_ms(stop),
        warn_at=flowgate_clock.iso_ms(rules.warn_at(activated, stop, settings.warning_seconds)),
    )
    table = Capturing(container().activation_store.table.name)
    ActivationStore(table).activate(
        None,
        item,
        max_active=settings.max_active_flows_limited,
        audit=audit_item(wsid, flow, stamp, "activated", activated_at=stamp, actor=user),
    )
    return table.writes


def _add_bulk(
    world: _World, template: Mapping[str, Any], count: int, earliest: datetime, latest: datetime
) -> dict[str, int]:
    """`count` active flows of other limited workspaces (BULK_PER_WORKSPACE each), activated at random
    moments (whole milliseconds) between `earliest` and `latest`, written straight into moto's table as
    `ActivationStore.activate` writes them. How many items were written, by kind."""
    from flowgate.activation.store import counter_key

    span_ms = int((latest - earliest).total_seconds() * 1000)
    if span_ms <= 0:
        raise RuntimeError("the runtime limit is too short for this benchmark's time frame")
    moto = moto_table(world.table)
    rng = random.Random(count)  # noqa: S311 - times of test data, not secrets
    counters: Counter[str] = Counter()
    written: Counter[str] = Counter()
    for n in range(count):
        wsid = f"bench-bulk-ws-{n // BULK_PER_WORKSPACE:05d}"
        flow = f"bulk-{n % BULK_PER_WORKSPACE}"
        activated = earliest + timedelta(milliseconds=rng.randrange(span_ms + 1))
        for write in _captured_activation(template, wsid, flow, activated):
            if write.kind == "Put" and write.item is not None:
                put_plain_item(moto, write.item)
                pk, sk = str(write.item["PK"]), str(write.item["SK"])
                written[pk if pk.startswith("DUE#") else sk.split("#", 1)[0]] += 1
            elif write.kind == "Update" and dict(write.key) == counter_key(wsid):
                counters[wsid] += 1
            else:
                raise RuntimeError(f"ActivationStore.activate wrote something unexpected: {write}")
    for wsid, active in counters.items():  # what `ADD active :one` leaves after `active` activations
        put_plain_item(moto, {**counter_key(wsid), "active": active})
        written["ACTIVEFLOWS"] += 1
    return dict(written)


@dataclass
class _Hooks:
    """AWS calls counted by botocore hooks on the clients the enforcer uses."""

    on: bool = False
    calls: Counter[str] = field(default_factory=Counter)
    queries: list[tuple[int, int]] = field(default_factory=list)  # (Count, ScannedCount) of each Query

    def reset(self) -> None:
        self.calls, self.queries = Counter(), []

    def before_call(self, model: Any, **_: Any) -> None:
        if self.on:
            self.calls[f"{model.service_model.service_name}:{model.name}"] += 1

    def after_call(self, parsed: Mapping[str, Any], model: Any, **_: Any) -> None:
        if self.on and model.name == "Query":
            self.queries.append((int(parsed.get("Count", 0)), int(parsed.get("ScannedCount", 0))))


def _install_hooks(hooks: _Hooks) -> None:
    from flowgate import aws

    for client in (aws.dynamodb(), aws.events()):
        client.meta.events.register("before-call", hooks.before_call, unique_id="bench-enforcer-calls")
        client.meta.events.register("after-call", hooks.after_call, unique_id="bench-enforcer-queries")


def _one_round(world: _World, hooks: _Hooks, moment: datetime) -> dict[str, Any]:
    """Activate the due flows at `moment`, then run the enforcer once at their stop time, counted."""
    from flowgate import clock as flowgate_clock

    world.clock.now = moment
    for wsid, flow in world.due:
        state = world.svc.activate(world.admin, wsid, flow)
        if state.activated_at != flowgate_clock.iso_ms(moment):
            raise RuntimeError(f"{wsid}/{flow} was not activated anew: {state}")
    run_at = moment + timedelta(seconds=world.svc.settings.max_runtime_seconds)
    hooks.reset()
    log = CallLog()
    inside = [0.0]
    with moto_query_timer(inside), counting_calls(log):
        hooks.on = True
        t0 = time.perf_counter()
        report = world.enforcer.run(run_at)
        elapsed = time.perf_counter() - t0
        hooks.on = False
    stopped = sorted((s.workspace_id, s.flow) for s in report.stopped)
    if stopped != sorted(world.due) or report.warned:
        raise RuntimeError(f"the run stopped {stopped} and warned {report.warned}; expected the {DUE_FLOWS}")
    return {
        "ms": elapsed * 1000,
        "moto_query_ms": inside[0] * 1000,
        "calls": dict(hooks.calls),
        "queries": list(hooks.queries),
        "all_clients_calls": len(log.calls),
        "details": [detail for _, _, detail in log.calls],
    }


def _rounds(
    world: _World, hooks: _Hooks, frame: Iterator[datetime], rounds: int, warmup: int
) -> dict[str, Any]:
    """`warmup` unrecorded runs, then up to `rounds` measured ones within MEASURE_BUDGET_SECONDS."""
    for _ in range(warmup):
        _one_round(world, hooks, next(frame))
    measured: list[dict[str, Any]] = []
    started = time.monotonic()
    for _ in range(rounds):
        measured.append(_one_round(world, hooks, next(frame)))
        elapsed = time.monotonic() - started
        if elapsed + elapsed / len(measured) > MEASURE_BUDGET_SECONDS:
            break
    first = measured[0]
    same = all(m["calls"] == first["calls"] and m["queries"] == first["queries"] for m in measured)
    return {
        "rounds": len(measured),
        "calls": first["calls"],
        "queries": first["queries"],
        "details": first["details"],
        "all_clients_calls": first["all_clients_calls"],
        "same_in_every_round": same,
        "ms": [m["ms"] for m in measured],
        "moto_query_ms": [m["moto_query_ms"] for m in measured],
    }


def child(result_path: Path, rounds: int, warmup: int) -> None:
    isolated_aws_environment()  # puts shared/ on sys.path: flowgate imports only after it
    from moto import mock_aws

    from flowgate import clock as flowgate_clock

    started = time.monotonic()
    with mock_aws(), item_level_transaction_rollback():
        from flowgate.wiring import container

        table = provision_template()["Table"]
        settings = container().activation_settings
        s0 = flowgate_clock.truncate_ms(datetime.now(UTC))
        world = _world(table, s0)
        hooks = _Hooks()
        _install_hooks(hooks)
        per_case = warmup + rounds
        frame = (s0 + timedelta(seconds=k) for k in range(2 * per_case))
        # One real activation, read back: the shape of the bulk activations.
        world.clock.now = s0 - timedelta(seconds=1)
        world.svc.activate(world.admin, *world.due[0])
        template = world.svc.store.get_activation(*world.due[0])
        assert template is not None
        world.svc.deactivate(world.admin, *world.due[0])
        setup_s = time.monotonic() - started

        results: dict[str, Any] = {}
        results["A"] = _rounds(world, hooks, frame, rounds, warmup)
        results["A"]["table_items"] = len(moto_table(table).all_items())

        t0 = time.monotonic()
        # Not due at any run: activated after S0 + warning + every round's second, so that even their
        # warning comes after the last run; by S0 + runtime, the first run: active at every run.
        earliest = s0 + timedelta(seconds=settings.warning_seconds + 2 * per_case + 1)
        latest = s0 + timedelta(seconds=settings.max_runtime_seconds)
        written = _add_bulk(world, template, ACTIVE_TOTAL - DUE_FLOWS, earliest, latest)
        build_s = time.monotonic() - t0
        sample = world.svc.state_of("bench-bulk-ws-00000", "bulk-0")
        if sample.status != "active" or not sample.stops_at:
            raise RuntimeError(f"a bulk activation does not read back as active: {sample}")
        due_sizes = {kind: partition_size(table, f"DUE#{kind}") for kind in ("STOP", "WARN")}
        gc.collect()
        gc.freeze()
        results["B"] = _rounds(world, hooks, frame, rounds, 0)  # warm already
        results["B"]["table_items"] = len(moto_table(table).all_items())
    result = {
        "cases": results,
        "setup_s": round(setup_s, 2),
        "build_s": round(build_s, 2),
        "bulk_written": written,
        "bulk": ACTIVE_TOTAL - DUE_FLOWS,
        "due_partitions_in_b": due_sizes,
        "runtime_s": settings.max_runtime_seconds,
        "warning_s": settings.warning_seconds,
        "total_s": round(time.monotonic() - started, 2),
    }
    result_path.write_text(json.dumps(result))


# ---- the benchmark ----------------------------------------------------------------------------------


def _calls_text(calls: Mapping[str, int]) -> str:
    short = {"dynamodb": "ddb"}
    parts = []
    for name, n in sorted(calls.items()):
        service, op = name.split(":", 1)
        parts.append(f"{short.get(service, service)}:{op} x{n}")
    return ", ".join(parts)


def _rows(result: dict[str, Any]) -> list[Row]:
    goal = (
        f"calls of a run, {DUE_FLOWS} due among {ACTIVE_TOTAL:,} / among {DUE_FLOWS} active flows "
        f"<= {GOAL_RATIO}"
    )
    rows = []
    figures: list[dict[str, float]] = []
    for case in CASES:
        outcome = result["cases"][case]
        active = DUE_FLOWS if case == "A" else DUE_FLOWS + result["bulk"]
        calls = sum(outcome["calls"].values())
        counts = outcome["queries"]
        total_ms, moto_ms = outcome["ms"], outcome["moto_query_ms"]
        rest_ms = [t - m for t, m in zip(total_ms, moto_ms, strict=True)]
        medians = {
            "calls": float(calls),
            "items_read": float(sum(c for c, _ in counts)),
            "median_ms": statistics.median(total_ms),
            "moto_query_ms": statistics.median(moto_ms),
            "rest_ms": statistics.median(rest_ms),
        }
        figures.append(medians)
        consistent = outcome["same_in_every_round"] and outcome["all_clients_calls"] == calls
        rows.append(
            Row(
                f"{case}: {active:,} active, {DUE_FLOWS} due",
                {
                    "calls": calls,
                    "items_read": int(medians["items_read"]),
                    "scanned": sum(s for _, s in counts),
                    "queries": len(counts),
                    "table_items": outcome["table_items"],
                    "rounds": outcome["rounds"],
                    "median_ms": medians["median_ms"],
                    "moto_query_ms": medians["moto_query_ms"],
                    "rest_ms": medians["rest_ms"],
                    "operations": _calls_text(outcome["calls"]),
                },
                None if consistent else "ERROR",
                goal=goal,
                notes={
                    "query_count_scanned": counts,
                    "calls_in_order": outcome["details"],
                    "calls_seen_on_any_client": outcome["all_clients_calls"],
                    "same_calls_in_every_round": outcome["same_in_every_round"],
                    "samples_ms": [round(x, 2) for x in total_ms],
                    "moto_query_samples_ms": [round(x, 2) for x in moto_ms],
                },
            )
        )
    a, b = figures
    ratio = b["calls"] / a["calls"]
    rows.append(
        Row(
            "ratio B / A (x, not counts or ms)",
            {
                **{k: b[k] / a[k] if a[k] else float("nan") for k in a},
                "operations": "verdict on calls; times are moto's (its Query walks the table)",
            },
            "PASS" if ratio <= GOAL_RATIO else "OVER",
            goal=goal,
            notes={
                "note": "this row's figures are ratios (B / A); the verdict is on calls",
                "setup_s": result["setup_s"],
                "build_s": result["build_s"],
                "bulk_written": result["bulk_written"],
                "due_partitions_before_b": result["due_partitions_in_b"],
                "runtime_s": result["runtime_s"],
                "warning_s": result["warning_s"],
                "child_total_s": result["total_s"],
            },
        )
    )
    return rows


def run(options: Options) -> list[Row]:
    return _rows(run_rounds_child(options, "enforcer_calls", timeout=300.0))


if __name__ == "__main__":
    sys.exit(script_main("enforcer_calls", child))
