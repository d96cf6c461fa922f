"""Pending-task listing time with 100 versus 100,000 held tasks of OTHER enterprises in the table.

The listing (`PendingTasks.pending_tasks`, flowgate/workflow/pending_tasks.py) is a GetItem of the
enterprise and a Query of its own sparse GSI1 partition (`CONTRACT#<id>#PENDING`), so the other
enterprises' tasks should not matter: goal median(100,000) / median(100) <= 1.2.

A fresh interpreter opens `moto.mock_aws` and provisions template.yaml (as benchmarks/workflow_decisions.py
does), turns workflow on and holds OWN_TASKS deploys of one enterprise through the real service. A second
table is created from the template's definition (`devstack.provision.create_table_from_template`) and
given a copy of every item. Then the other enterprises' held tasks are written straight into moto's
in-process backend (through its API, 100,000 items take minutes): each is a copy of one of the real held
tasks, with a new id, enterprise (FOREIGN_PER_ENTERPRISE tasks each), user, workspace, VM, request and
creation time, and the keys `TaskStore` gives a held task (`task_key`, `pending_index`: GSI1PK/GSI2PK
of its own enterprise). Before timing, a foreign task is read back through the app and one foreign
enterprise's listing is checked to return its tasks, and ours its OWN_TASKS.

Each round lists the enterprise's pending tasks once per table (the order alternating), each listing
timed with `time.perf_counter`, after `warmup` rounds. The Query's Count/ScannedCount (the items its key
condition selected, what DynamoDB would read) and the calls a listing makes are recorded once per table.

moto's caveat, measured rather than hidden: moto 5's `Table.query` (moto/dynamodb/models/table.py) walks
and sorts every item of the table (`all_items()`) on each Query, index or not, so under moto a Query's
time grows with the table whatever its key. The time spent inside it is measured apart
(`moto_query_ms`), and `rest_ms` is the remainder: the application, botocore and moto's request and
response handling. The verdict is on the whole listing time.

Budgets (two cores): the large table's build stops at BUILD_BUDGET_SECONDS and the rows then say how many
foreign tasks it holds; the measured rounds are cut so that timing stays within MEASURE_BUDGET_SECONDS
(the rounds used are reported).
"""

from __future__ import annotations

import copy
import gc
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in {None, ""}:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.moto_support import (
    ROOT_DIR,
    CallLog,
    counting_calls,
    enable_platform_workflow,
    isolated_aws_environment,
    make_tenant,
    moto_query_timer,
    moto_table,
    provision_template,
    run_rounds_child,
    script_main,
)
from benchmarks.run import Options, Row

GOAL_RATIO = 1.2
OWN_TASKS = 20
SIZES = (100, 100_000)  # foreign held tasks in the small and the large table
FOREIGN_PER_ENTERPRISE = 100
USERS_PER_ENTERPRISE = 4
BUILD_BUDGET_SECONDS = 35.0
MEASURE_BUDGET_SECONDS = 45.0
MIN_ROUNDS = 3


# ---- the child: build both tables under moto, then time the listings ---------------------------------


def _copy_table(source: str, target: str) -> int:
    """Every item of `source` into `target` (setup only; a few hundred items), through the API."""
    import boto3

    client = boto3.client("dynamodb")
    copied = 0
    for page in client.get_paginator("scan").paginate(TableName=source):
        items = page.get("Items", [])
        for start in range(0, len(items), 25):
            request: Any = {target: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
            while request:
                request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or None
        copied += len(items)
    return copied


def _add_foreign_tasks(table_name: str, template: dict[str, Any], count: int, deadline: float) -> int:
    """Held tasks of other enterprises, shaped as `TaskStore.create_request` writes a held task (a copy
    of `template`, one of ours, with its own ids, times and keys), put straight into moto's table. Stops
    at `deadline`; how many were written."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    from flowgate import clock as flowgate_clock
    from flowgate.db import _to_wire
    from flowgate.workflow.store.keys import pending_index, task_key

    table = moto_table(table_name)
    key = task_key(template["id"])
    original = table.get_item(DynamoType({"S": key["PK"]}), DynamoType({"S": key["SK"]}))
    if original is None:
        raise RuntimeError("the template task is not in the table")
    rng = random.Random(count)  # noqa: S311 - ids and times of test data, not secrets
    now = datetime.now(UTC)
    written = 0
    for n in range(count):
        if n % 1000 == 0 and time.monotonic() > deadline:
            break
        cid = f"bench-foreign-{n // FOREIGN_PER_ENTERPRISE:06d}"
        task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        created = now - timedelta(seconds=rng.uniform(0, 7 * 86_400))
        ms = flowgate_clock.epoch_ms(created)
        plain = {
            **template,
            "id": task_id,
            "contract_id": cid,
            "user_id": f"{cid}-user-{rng.randrange(USERS_PER_ENTERPRISE)}",
            "workspace_id": f"{cid}-ws",
            "vm_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "request_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "created_at": flowgate_clock.iso_ms(created),
            "created_ms": ms,
            "updated_ms": ms,
        }
        changes = {k: plain[k] for k in plain if plain[k] != template.get(k)}
        item = copy.deepcopy(original)  # moto's own copy of an item it validated on write
        for attr, wire in _to_wire({**changes, **task_key(task_id), **pending_index(plain)}).items():
            dict.__setitem__(item.attrs, attr, DynamoType(wire))
        item.hash_key, item.range_key = item.attrs["PK"], item.attrs["SK"]
        table.items[item.hash_key][item.range_key] = item
        written += 1
    return written


def _container_on(table_name: str) -> Any:
    """The composition root as it is built for a process, on `table_name` (stores and directory)."""
    from flowgate.wiring import Container, container

    live = container()
    settings = live.settings.model_copy(update={"table_name": table_name})
    return Container(settings, live.environ, holds=live.holds, jobs=live.jobs)


def _check(c: Any, principal: Any, cid: str, own: set[str], foreign_cid: str | None) -> dict[str, Any]:
    """The listing returns our held tasks and nothing else; a foreign task reads back as a task and its
    enterprise's listing finds its tasks. Also what one listing calls, and what its Query selected."""
    log = CallLog()
    with counting_calls(log):
        tasks, _ = c.pending_tasks.pending_tasks(principal, cid, limit=OWN_TASKS + 10)
    listed = {t.taskId for t in tasks}
    if listed != own:
        raise RuntimeError(f"the listing returned {len(listed)} tasks, {len(listed & own)} of them ours")
    foreign_listed = 0
    if foreign_cid:
        records, _ = c.workflow_task_store.pending(
            foreign_cid, None, since=None, until=None, task_type=None, vm_id=None, limit=100, cursor=None
        )
        foreign_listed = len(records)
        for record in records[:1]:
            read = c.workflow_task_store.get(record.id)
            if read is None:
                raise RuntimeError(f"the foreign task {record.id} does not read back")
            read.task()
        if not foreign_listed:
            raise RuntimeError(f"no pending task found for the foreign enterprise {foreign_cid}")
    return {
        "calls": [detail for _, _, detail in log.calls],
        "query_counts": log.query_counts,
        "foreign_enterprise_listed": foreign_listed,
    }


def _time_rounds(
    subjects: dict[str, tuple[Any, Any, str]], rounds: int, warmup: int
) -> tuple[dict[str, dict[str, list[float]]], int]:
    """Interleaved listings, the order alternating each round; per subject the total and the part spent
    in moto's Table.query, in ms. The rounds actually measured (cut to MEASURE_BUDGET_SECONDS)."""
    inside = [0.0]
    samples: dict[str, dict[str, list[float]]] = {name: {"total": [], "moto": []} for name in subjects}
    names = list(subjects)
    started = time.monotonic()
    with moto_query_timer(inside):
        done = 0
        for index in range(warmup + rounds):
            order = names if index % 2 == 0 else names[::-1]
            for name in order:
                svc, principal, cid = subjects[name]
                inside[0] = 0.0
                t0 = time.perf_counter()
                svc.pending_tasks(principal, cid)
                total = time.perf_counter() - t0
                if index >= warmup:
                    samples[name]["total"].append(total * 1000)
                    samples[name]["moto"].append(inside[0] * 1000)
            if index >= warmup:
                done += 1
            elapsed = time.monotonic() - started
            per_round = elapsed / (index + 1)
            if done >= MIN_ROUNDS and elapsed + per_round > MEASURE_BUDGET_SECONDS:
                break
    return samples, done


def child(result_path: Path, rounds: int, warmup: int) -> None:
    import json

    isolated_aws_environment()
    from moto import mock_aws

    from devstack.provision import create_table_from_template

    started = time.monotonic()
    with mock_aws():
        small = provision_template()["Table"]
        from flowgate.wiring import container

        enable_platform_workflow()
        tenant = make_tenant("a")
        own: set[str] = set()
        for i in range(OWN_TASKS):
            vm = container().workflow_resources.create_virtual_machine(
                tenant.admin, tenant.ws, {"name": f"vm-{i}", "cpu": 1, "ram": 512}
            )
            [task] = container().operation_requests.request_operation(
                tenant.admin, tenant.ws, "vm", vm.id, "deploy"
            )
            if task.state != "QUEUEING":
                raise RuntimeError(f"the deploy was not held: {task.state}")
            own.add(task.taskId)
        held = container().workflow_task_store.get(sorted(own)[0])
        assert held is not None
        template = held.to_item()
        large = create_table_from_template(ROOT_DIR / "template.yaml", table_name=f"{small}-large")
        base_items = _copy_table(small, large)
        setup_s = time.monotonic() - started

        t0 = time.monotonic()
        written = {
            small: _add_foreign_tasks(small, template, SIZES[0], float("inf")),
            large: _add_foreign_tasks(large, template, SIZES[1], t0 + BUILD_BUDGET_SECONDS),
        }
        build_s = time.monotonic() - t0
        gc.collect()
        gc.freeze()  # the setup's objects: keep the collector's passes over them out of the timings

        services = {name: _container_on(name) for name in (small, large)}
        checks = {
            name: _check(services[name], tenant.approver, tenant.cid, own, "bench-foreign-000000")
            for name in (small, large)
        }
        subjects = {
            name: (services[name].pending_tasks, tenant.approver, tenant.cid) for name in (small, large)
        }
        samples, measured = _time_rounds(subjects, rounds, warmup)
        items = {name: len(moto_table(name).all_items()) for name in (small, large)}
    result = {
        "setup_s": round(setup_s, 2),
        "build_s": round(build_s, 2),
        "base_items": base_items,
        "rounds_asked": rounds,
        "rounds": measured,
        "tables": [
            {
                "foreign": written[name],
                "items": items[name],
                "samples": samples[name],
                **checks[name],
            }
            for name in (small, large)
        ],
        "total_s": round(time.monotonic() - started, 2),
    }
    result_path.write_text(json.dumps(result))


# ---- the benchmark ----------------------------------------------------------------------------------


def _rows(result: dict[str, Any]) -> list[Row]:
    goal = f"listing median with {SIZES[1]:,} / with {SIZES[0]:,} foreign tasks <= {GOAL_RATIO}"
    small, large = result["tables"]
    rows = []
    medians = []
    for table in (small, large):
        total, moto = table["samples"]["total"], table["samples"]["moto"]
        rest = [t - m for t, m in zip(total, moto, strict=True)]
        med = (statistics.median(total), statistics.median(moto), statistics.median(rest))
        medians.append(med)
        counts = table["query_counts"]
        short = " (build budget hit)" if table["foreign"] < max(SIZES) and table is large else ""
        rows.append(
            Row(
                f"{table['foreign']:,} foreign tasks{short}",
                {
                    "table_items": table["items"],
                    "rounds": result["rounds"],
                    "median_ms": med[0],
                    "moto_query_ms": med[1],
                    "rest_ms": med[2],
                    "query_count_scanned": ", ".join(f"{c}/{s}" for c, s in counts) or "-",
                    "calls": ", ".join(table["calls"]),
                },
                goal=goal,
                notes={
                    "calls_per_listing": table["calls"],
                    "min_ms": round(min(total), 3),
                    "max_ms": round(max(total), 3),
                    "samples_ms": [round(x, 3) for x in total],
                    "moto_query_samples_ms": [round(x, 3) for x in moto],
                    "foreign_enterprise_listing_found": table["foreign_enterprise_listed"],
                },
            )
        )
    ratio = medians[1][0] / medians[0][0]
    rows.append(
        Row(
            f"ratio {large['foreign']:,} / {small['foreign']:,} (x, not ms)",
            {
                "median_ms": ratio,
                "moto_query_ms": medians[1][1] / medians[0][1],
                "rest_ms": medians[1][2] / medians[0][2],
            },
            "PASS" if ratio <= GOAL_RATIO else "OVER",
            goal=goal,
            notes={
                "note": "this row's figures are ratios (large / small), not milliseconds",
                "setup_s": result["setup_s"],
                "build_s": result["build_s"],
                "base_items": result["base_items"],
                "rounds_asked": result["rounds_asked"],
                "child_total_s": result["total_s"],
            },
        )
    )
    return rows


def run(options: Options) -> list[Row]:
    return _rows(run_rounds_child(options, "pending_tasks", timeout=240.0))


if __name__ == "__main__":
    sys.exit(script_main("pending_tasks", child))
