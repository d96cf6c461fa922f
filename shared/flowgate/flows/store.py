"""Storage of flows and executions in the platform table (docs/access-patterns.md lists the keys).

Execution status changes are conditional writes, so a cancel racing a finish, or a duplicate queue
delivery racing the first one, resolves to exactly one outcome.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flowgate.db import Item, Page, Table, Write, versioned_update
from flowgate.flows.models import Execution, ExecutionStatus, ExecutionSummary, Flow, FlowSummary

META = "META"


def flow_key(wsid: str, name: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"FLOW#{name}"}


def execution_key(eid: str) -> dict[str, str]:
    return {"PK": f"EXEC#{eid}", "SK": META}


def flow_from(item: Item) -> Flow:
    return Flow.model_validate({k: v for k, v in item.items() if k in Flow.model_fields})


def flow_summary(item: Item) -> FlowSummary:
    return FlowSummary.model_validate({k: v for k, v in item.items() if k in FlowSummary.model_fields})


def execution_from(item: Item) -> Execution:
    return Execution.model_validate({k: v for k, v in item.items() if k in Execution.model_fields})


def execution_summary(item: Item) -> ExecutionSummary:
    return ExecutionSummary.model_validate(
        {k: v for k, v in item.items() if k in ExecutionSummary.model_fields}
    )


def _status_values(statuses: Iterable[ExecutionStatus]) -> dict[str, str]:
    return {f":s{i}": s.value for i, s in enumerate(statuses)}


class FlowStore:
    def __init__(self, table: Table) -> None:
        self.table = table

    # ---- flows ----
    def get_flow(self, wsid: str, name: str) -> Item | None:
        key = flow_key(wsid, name)
        return self.table.get(key["PK"], key["SK"])

    def create_flow(self, item: Item) -> None:
        self.table.put(
            {**flow_key(item["workspace_id"], item["name"]), **item},
            condition="attribute_not_exists(PK)",
            conflict=f"the flow '{item['name']}' was just created",
        )

    def replace_flow(self, current: Item, changes: Mapping[str, Any]) -> Item:
        """Write a new version of the flow if nobody else did since `current` was read."""
        self.table.transact(
            [
                versioned_update(
                    flow_key(current["workspace_id"], current["name"]), changes, current["version"]
                )
            ]
        )
        return {**current, **changes, "version": current["version"] + 1}

    def delete_flow(self, wsid: str, name: str) -> None:
        self.table.transact(
            [
                Write(
                    "Delete",
                    key=flow_key(wsid, name),
                    condition="attribute_exists(PK)",
                    conflict="the flow no longer exists",
                )
            ]
        )

    def list_flows(self, wsid: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(f"WS#{wsid}", sk_prefix="FLOW#", limit=limit, cursor=cursor)

    # ---- executions ----
    def create_execution(self, item: Item) -> None:
        self.table.put(
            {
                **execution_key(item["id"]),
                **item,
                "GSI1PK": f"WS#{item['workspace_id']}#EXECS",
                "GSI1SK": f"{item['created_at']}#{item['id']}",
            },
            condition="attribute_not_exists(PK)",
        )

    def put_mirror(self, item: Item) -> None:
        """Store a mirrored execution unless one of the same or a newer origin version is stored."""
        self.table.put(
            {
                **execution_key(item["id"]),
                **item,
                "GSI1PK": f"WS#{item['workspace_id']}#EXECS",
                "GSI1SK": f"{item['created_at']}#{item['id']}",
            },
            condition="attribute_not_exists(PK) OR origin_version < :v",
            values={":v": item["origin_version"]},
        )

    def get_execution(self, eid: str) -> Item | None:
        key = execution_key(eid)
        return self.table.get(key["PK"], key["SK"])

    def list_executions(self, wsid: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(
            f"WS#{wsid}#EXECS", index="GSI1", limit=limit, cursor=cursor, newest_first=True
        )

    def count_execution(self, wsid: str, day: str, allowed_today: int, expires: int) -> bool:
        """Count one more execution started on `day` unless that day already has `allowed_today`."""
        if allowed_today <= 0:
            return False
        counted = self.table.update(
            {"PK": f"WS#{wsid}", "SK": f"EXECCOUNT#{day}"},
            "ADD #n :one SET #ttl = :ttl",
            condition="attribute_not_exists(#n) OR #n < :allowed",
            names={"#n": "started", "#ttl": "ttl"},
            values={":one": 1, ":allowed": allowed_today, ":ttl": expires},
        )
        return counted is not None

    def executions_started(self, wsid: str, days: list[str]) -> int:
        """Executions started on the given days (GetItem of each day's counter, in one batch)."""
        if not days:
            return 0
        counters = self.table.batch_get([(f"WS#{wsid}", f"EXECCOUNT#{day}") for day in days])
        return sum(int(c.get("started", 0)) for c in counters)

    def transition(
        self, eid: str, to: ExecutionStatus, *, allowed_from: Iterable[ExecutionStatus], **fields: Any
    ) -> Item | None:
        """Move an execution to `to` only from one of `allowed_from`; None when it was elsewhere."""
        sources = list(allowed_from)
        values: dict[str, Any] = {":to": to.value, **_status_values(sources)}
        names = {"#st": "status", "#v": "version"}
        sets = ["#st = :to", "#v = #v + :one"]
        values[":one"] = 1
        for i, (attr, value) in enumerate(fields.items()):
            names[f"#f{i}"] = attr
            values[f":f{i}"] = value
            sets.append(f"#f{i} = :f{i}")
        condition = "#st IN (" + ", ".join(_status_values(sources)) + ")"
        return self.table.update(
            execution_key(eid), "SET " + ", ".join(sets), condition=condition, names=names, values=values
        )

    def record(self, eid: str, **fields: Any) -> None:
        """Update fields of an execution (inputs as stored, log so far) without touching its status."""
        names = {f"#f{i}": attr for i, attr in enumerate(fields)}
        values = {f":f{i}": value for i, value in enumerate(fields.values())}
        self.table.update(
            execution_key(eid),
            "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(fields))),
            names=names,
            values=values,
        )
