"""Storage of flows and executions in the platform table (docs/access-patterns.md lists the keys).

Execution status changes are conditional writes, so a cancel racing a finish, or a duplicate queue
delivery racing the first one, resolves to exactly one outcome.

Each flow has an id marker, `WS#<wsid>`/`FLOWID#<id>` holding its name, written and deleted in the same
transaction as the flow: finding a flow by id is consistent, and two creates of one id, or of one name,
cannot both succeed. Flows saved before the markers get theirs on their next save; until then they are
found by id through the listing of the workspace's flows (long settled for those).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flowgate.db import Item, Page, StaleVersion, Table, Write, versioned_update
from flowgate.errors import Conflict
from flowgate.flows.models import Execution, ExecutionStatus, ExecutionSummary, Flow, FlowSummary

META = "META"
MARKER_PREFIX = "FLOWID#"  # not under FLOW#: listing flows never reads a marker
NAME_TAKEN = "name_taken"
FLOW_CHANGED = "flow_changed"


def flow_key(wsid: str, name: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"FLOW#{name}"}


_NAME_TAKEN_PREFIX = "a flow named "


def _name_taken(name: str) -> str:
    return f"{_NAME_TAKEN_PREFIX}'{name}' already exists in this workspace"


def marker_key(wsid: str, flow_id: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"{MARKER_PREFIX}{flow_id}"}


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
    def _transact(self, writes: list[Write]) -> None:
        """A transaction whose failed name condition is 409 `name_taken`, any other 409 `flow_changed`
        (a StaleVersion stays one, for the caller to read again)."""
        try:
            self.table.transact(writes)
        except StaleVersion:
            raise
        except Conflict as exc:
            code = NAME_TAKEN if exc.message.startswith(_NAME_TAKEN_PREFIX) else FLOW_CHANGED
            raise Conflict(exc.message, code=code) from exc

    def get_flow(self, wsid: str, name: str) -> Item | None:
        key = flow_key(wsid, name)
        return self.table.get(key["PK"], key["SK"])

    def flow_by_id(self, wsid: str, flow_id: str) -> Item | None:
        """The workspace's flow of id `flow_id`: its marker, then the flow it names (read again when a
        rename moved the flow in between); a flow saved before the markers through the listing."""
        for _ in range(3):
            key = marker_key(wsid, flow_id)
            marker = self.table.get(key["PK"], key["SK"])
            if marker is None:
                return self._unmarked_by_id(wsid, flow_id)
            item = self.get_flow(wsid, marker["name"])
            if item is not None and item["id"] == flow_id:
                return item
        return None

    def _unmarked_by_id(self, wsid: str, flow_id: str) -> Item | None:
        cursor: str | None = None
        while True:
            page = self.list_flows(wsid, 100, cursor)
            for item in page.items:
                if item["id"] == flow_id:
                    # read it consistently; a marker written meanwhile is the way to it from now on
                    current = self.get_flow(wsid, item["name"])
                    return current if current is not None and current["id"] == flow_id else None
            if page.next is None:
                return None
            cursor = page.next

    @staticmethod
    def _marker(item: Item) -> Item:
        return {**marker_key(item["workspace_id"], item["id"]), "id": item["id"], "name": item["name"]}

    def create_flow(self, item: Item) -> None:
        """Store a new flow and its id marker: 409 `name_taken` when a flow has the name, 409
        `flow_changed` when another request just created a flow of the same id."""
        name = item["name"]
        self._transact(
            [
                Write(
                    "Put",
                    item={**item, **flow_key(item["workspace_id"], name)},
                    condition="attribute_not_exists(PK)",
                    conflict=_name_taken(name),
                ),
                Write(
                    "Put",
                    item=self._marker(item),
                    condition="attribute_not_exists(PK)",
                    conflict=f"a flow with id '{item['id']}' was just created by another request; retry",
                ),
            ]
        )

    def replace_flow(self, current: Item, changes: Mapping[str, Any]) -> Item:
        """Write a new version of the flow if nobody else did since `current` was read (its marker too,
        for a flow saved before the markers)."""
        self.table.transact(
            [
                versioned_update(
                    flow_key(current["workspace_id"], current["name"]), changes, current["version"]
                ),
                Write("Put", item=self._marker(current)),
            ]
        )
        return {**current, **changes, "version": current["version"] + 1}

    def rename_flow(self, current: Item, item: Item) -> Item:
        """Move the flow to its new name as its next version, in one transaction: the old item deleted if
        still at `current`'s version, the new one put if the name is free, the marker moved."""
        new_name = item["name"]
        fields = {k: v for k, v in item.items() if k not in ("PK", "SK")}
        renamed = {**fields, "id": current["id"], "version": current["version"] + 1}
        self._transact(
            [
                Write(
                    "Delete",
                    key=flow_key(current["workspace_id"], current["name"]),
                    condition="#v = :v",
                    names={"#v": "version"},
                    values={":v": current["version"]},
                    conflict="the flow was changed by another request; reload and retry",
                    stale_version=True,
                ),
                Write(
                    "Put",
                    item={**renamed, **flow_key(current["workspace_id"], new_name)},
                    condition="attribute_not_exists(PK)",
                    conflict=_name_taken(new_name),
                ),
                Write("Put", item=self._marker(renamed)),
            ]
        )
        return renamed

    def delete_flow(self, current: Item) -> None:
        """Delete the flow (while it is still the flow of `current`'s id) and its id marker."""
        self.table.transact(
            [
                Write(
                    "Delete",
                    key=flow_key(current["workspace_id"], current["name"]),
                    condition="#id = :id",
                    names={"#id": "id"},
                    values={":id": current["id"]},
                    conflict="the flow no longer exists",
                ),
                Write("Delete", key=marker_key(current["workspace_id"], current["id"])),
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
