"""Storage of active flows in the platform table (docs/access-patterns.md, "Active flows").

Every state change is a conditional write whose condition names the state it leaves (and, for the
stop and the warning, the activation it belongs to: `activated_at`), so a duplicate or concurrent
schedule event, a racing deactivate or a redelivered message resolves to exactly one outcome.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from flowgate.activation.models import ActivationStatus, MessageStatus
from flowgate.activation.rules import due_sort_key
from flowgate.db import Item, Page, StaleVersion, Table, Write
from flowgate.errors import Conflict

STOP, WARN = "STOP", "WARN"
ACTIVE = ActivationStatus.ACTIVE.value
QUOTA_CONFLICT = "quota"  # the conflict message of the counter write; the service words the 409


def activation_key(wsid: str, flow: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"FLOWSTATE#{flow}"}


def counter_key(wsid: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": "ACTIVEFLOWS"}


def due_key(kind: str, at: str, wsid: str, flow: str) -> dict[str, str]:
    return {"PK": f"DUE#{kind}", "SK": due_sort_key(at, wsid, flow)}


def message_key(wsid: str, flow: str, mid: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}#MSGS#{flow}", "SK": f"MSG#{mid}"}


def queued_index_pk(wsid: str, flow: str) -> str:
    return f"WS#{wsid}#QUEUED#{flow}"


def audit_key(wsid: str, flow: str, at: str, aid: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"FLOWAUDIT#{flow}#{at}#{aid}"}


def due_keys_of(activation: Mapping[str, Any]) -> list[dict[str, str]]:
    """The due entries an activation item points at (none for a full workspace's flow)."""
    wsid, flow = activation["workspace_id"], activation["flow"]
    keys = []
    if activation.get("stops_at"):
        keys.append(due_key(STOP, activation["stops_at"], wsid, flow))
    if activation.get("warn_at"):
        keys.append(due_key(WARN, activation["warn_at"], wsid, flow))
    return keys


def due_entries(activation: Mapping[str, Any]) -> list[Item]:
    """The due-index items of a limited workspace's active flow: the stop and the warning."""
    wsid, flow = activation["workspace_id"], activation["flow"]
    common = {
        "workspace_id": wsid,
        "flow": flow,
        "activated_at": activation["activated_at"],
        "stops_at": activation["stops_at"],
        "warn_at": activation.get("warn_at"),
    }
    items = [{**due_key(STOP, activation["stops_at"], wsid, flow), **common}]
    if activation.get("warn_at"):
        items.append({**due_key(WARN, activation["warn_at"], wsid, flow), **common})
    return items


def _active_condition(activated_at: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    return (
        "#st = :active AND #aa = :aa",
        {"#st": "status", "#aa": "activated_at"},
        {":active": ACTIVE, ":aa": activated_at},
    )


class ActivationStore:
    def __init__(self, table: Table) -> None:
        self.table = table

    # ---- activation state ----
    def get_activation(self, wsid: str, flow: str) -> Item | None:
        key = activation_key(wsid, flow)
        return self.table.get(key["PK"], key["SK"])

    def active_flows(self, wsid: str) -> Iterator[Item]:
        """The active flows of one workspace (a Query of its partition, for a change of kind)."""
        cursor: str | None = None
        while True:
            page = self.table.query_range(
                f"WS#{wsid}",
                sk_from="FLOWSTATE#",
                sk_to="FLOWSTATE#~",
                filter_expression="#st = :active",
                names={"#st": "status"},
                values={":active": ACTIVE},
                limit=100,
                cursor=cursor,
            )
            yield from page.items
            if not page.next:
                return
            cursor = page.next

    def activate(self, current: Item | None, item: Item, *, max_active: int | None, audit: Item) -> None:
        """One transaction: the activation (from the state as read, not active), the workspace's
        active-flow counter (bounded by `max_active` for a limited workspace), its due entries, the audit.

        Raises StaleVersion when the activation moved on since it was read, Conflict(QUOTA_CONFLICT)
        when the quota is full.
        """
        key = activation_key(item["workspace_id"], item["flow"])
        if current is None:
            guard = Write(
                "Put", item={**item, **key}, condition="attribute_not_exists(PK)", stale_version=True
            )
        else:
            guard = Write(
                "Put",
                item={**item, **key},
                condition="#v = :v AND #st <> :active",
                names={"#v": "version", "#st": "status"},
                values={":v": current["version"], ":active": ACTIVE},
                stale_version=True,
            )
        counter = Write(
            "Update",
            key=counter_key(item["workspace_id"]),
            update="ADD #n :one",
            names={"#n": "active"},
            values={":one": 1, **({":max": max_active} if max_active is not None else {})},
            condition="attribute_not_exists(#n) OR #n < :max" if max_active is not None else None,
            conflict=QUOTA_CONFLICT,
        )
        extra = [Write("Put", item=d) for d in due_entries(item)] if item.get("stops_at") else []
        self.table.transact([guard, counter, *extra, Write("Put", item=audit)])

    def begin_stop(self, wsid: str, flow: str, activated_at: str, stop: Mapping[str, Any]) -> bool:
        """The stop itself, ONE conditional write (with the counter in its transaction): only the
        activation `activated_at` while still active. False when another run (or a deactivate) won."""
        condition, names, values = _active_condition(activated_at)
        try:
            self.table.transact(
                [
                    Write(
                        "Update",
                        key=activation_key(wsid, flow),
                        update="SET #st = :to, #stop = :stop, #v = #v + :one REMOVE stops_at, warn_at",
                        condition=condition,
                        names={**names, "#stop": "stop", "#v": "version"},
                        values={
                            **values,
                            ":to": (
                                ActivationStatus.INACTIVE.value
                                if stop["reason"] == "deactivated"
                                else ActivationStatus.STOPPED.value
                            ),
                            ":stop": {**stop, "complete": False},
                            ":one": 1,
                        },
                    ),
                    Write(
                        "Update",
                        key=counter_key(wsid),
                        update="ADD #n :minus",
                        names={"#n": "active"},
                        values={":minus": -1},
                    ),
                ]
            )
        except Conflict:
            return False
        return True

    def finish_stop(
        self,
        wsid: str,
        flow: str,
        activated_at: str,
        *,
        discarded: int,
        due: Sequence[Mapping[str, str]],
        audit: Item,
    ) -> bool:
        """Record the count, remove the due entries and append the audit, once per stop."""
        try:
            self.table.transact(
                [
                    Write(
                        "Update",
                        key=activation_key(wsid, flow),
                        update="SET #stop.#c = :true, #stop.#d = #stop.#d + :n",
                        condition="#stop.#aa = :aa AND #stop.#c = :false",
                        names={"#stop": "stop", "#c": "complete", "#d": "discarded", "#aa": "activated_at"},
                        values={":true": True, ":false": False, ":n": discarded, ":aa": activated_at},
                    ),
                    *(Write("Delete", key=k) for k in due),
                    Write("Put", item=audit, condition="attribute_not_exists(PK)"),
                ]
            )
        except Conflict:
            return False
        return True

    def add_discarded(self, wsid: str, flow: str, activated_at: str, count: int) -> None:
        """Count messages discarded after the stop was recorded (late deliveries) on that stop."""
        self.table.update(
            activation_key(wsid, flow),
            "SET #stop.#d = #stop.#d + :n",
            condition="#stop.#aa = :aa",
            names={"#stop": "stop", "#d": "discarded", "#aa": "activated_at"},
            values={":n": count, ":aa": activated_at},
        )

    def start_clock(self, item: Item, stops_at: str, warn_at: str) -> bool:
        """full → limited: an active flow without a stop gets one (idempotent: only if it has none)."""
        condition, names, values = _active_condition(item["activated_at"])
        updated = {**item, "stops_at": stops_at, "warn_at": warn_at}
        try:
            self.table.transact(
                [
                    Write(
                        "Update",
                        key=activation_key(item["workspace_id"], item["flow"]),
                        update="SET stops_at = :s, warn_at = :w, #v = #v + :one REMOVE warned_at",
                        condition=condition + " AND attribute_not_exists(stops_at)",
                        names={**names, "#v": "version"},
                        values={**values, ":s": stops_at, ":w": warn_at, ":one": 1},
                    ),
                    *(Write("Put", item=d) for d in due_entries(updated)),
                ]
            )
        except Conflict:
            return False
        return True

    def clear_clock(self, item: Item) -> bool:
        """limited → full: the pending stop and warning go (idempotent: only if it still has a stop)."""
        condition, names, values = _active_condition(item["activated_at"])
        try:
            self.table.transact(
                [
                    Write(
                        "Update",
                        key=activation_key(item["workspace_id"], item["flow"]),
                        update="SET #v = #v + :one REMOVE stops_at, warn_at, warned_at",
                        condition=condition + " AND attribute_exists(stops_at)",
                        names={**names, "#v": "version"},
                        values={**values, ":one": 1},
                    ),
                    *(Write("Delete", key=k) for k in due_keys_of(item)),
                ]
            )
        except Conflict:
            return False
        return True

    # ---- the due index ----
    def due(self, kind: str, upper_bound: str, limit: int = 100) -> Iterator[Item]:
        """Due entries of one kind up to `upper_bound`, oldest first: reads only what is due."""
        cursor: str | None = None
        while True:
            page = self.table.query_range(f"DUE#{kind}", sk_to=upper_bound, limit=limit, cursor=cursor)
            yield from page.items
            if not page.next:
                return
            cursor = page.next

    def delete_due(self, key: Mapping[str, str]) -> None:
        self.table.transact([Write("Delete", key=key)])

    def mark_warned(self, entry: Mapping[str, Any], at: str) -> bool:
        """Record the warning once per activation and consume its due entry."""
        condition, names, values = _active_condition(entry["activated_at"])
        try:
            self.table.transact(
                [
                    Write(
                        "Update",
                        key=activation_key(entry["workspace_id"], entry["flow"]),
                        update="SET warned_at = :at",
                        condition=condition + " AND attribute_not_exists(warned_at)",
                        names=names,
                        values={**values, ":at": at},
                    ),
                    Write("Delete", key={"PK": entry["PK"], "SK": entry["SK"]}),
                ]
            )
        except Conflict:
            return False
        return True

    def unmark_warned(self, entry: Item, at: str) -> None:
        """The event could not be published: undo the mark and put the entry back for the next run."""
        condition, names, values = _active_condition(entry["activated_at"])
        try:
            self.table.transact(
                [
                    Write(
                        "Update",
                        key=activation_key(entry["workspace_id"], entry["flow"]),
                        update="REMOVE warned_at",
                        condition=condition + " AND warned_at = :at",
                        names=names,
                        values={**values, ":at": at},
                    ),
                    Write("Put", item=entry),
                ]
            )
        except Conflict:
            return

    # ---- messages ----
    def put_message(self, item: Item, activated_at: str) -> None:
        """Store a message only while the activation it was posted to is still active."""
        condition, names, values = _active_condition(activated_at)
        self.table.transact(
            [
                Write(
                    "ConditionCheck",
                    key=activation_key(item["workspace_id"], item["flow"]),
                    condition=condition,
                    names=names,
                    values=values,
                    conflict="the flow stopped while the message was posted; nothing was queued",
                ),
                Write(
                    "Put",
                    item={
                        **item,
                        **message_key(item["workspace_id"], item["flow"], item["id"]),
                        "GSI1PK": queued_index_pk(item["workspace_id"], item["flow"]),
                        "GSI1SK": item["id"],
                    },
                    condition="attribute_not_exists(PK)",
                ),
            ]
        )

    def delete_message(self, wsid: str, flow: str, mid: str) -> None:
        self.table.transact(
            [
                Write(
                    "Delete",
                    key=message_key(wsid, flow, mid),
                    condition="#st = :q",
                    names={"#st": "status"},
                    values={":q": MessageStatus.QUEUED.value},
                )
            ]
        )

    def list_audit(self, wsid: str, flow: str, limit: int, cursor: str | None) -> Page:
        """A flow's activation history, oldest first (the sort key starts with the time)."""
        key = audit_key(wsid, flow, "", "")
        return self.table.query(key["PK"], sk_prefix=f"FLOWAUDIT#{flow}#", limit=limit, cursor=cursor)

    def get_message(self, wsid: str, flow: str, mid: str) -> Item | None:
        key = message_key(wsid, flow, mid)
        return self.table.get(key["PK"], key["SK"])

    def list_messages(
        self, wsid: str, flow: str, status: MessageStatus | None, limit: int, cursor: str | None
    ) -> Page:
        """A flow's messages in order of arrival (ids sort by time), optionally of one status."""
        pk = message_key(wsid, flow, "")["PK"]
        if status is None:
            return self.table.query(pk, sk_prefix="MSG#", limit=limit, cursor=cursor)
        return self.table.query_range(
            pk,
            sk_from="MSG#",
            sk_to="MSG#~",
            filter_expression="#st = :st",
            names={"#st": "status"},
            values={":st": status.value},
            limit=limit,
            cursor=cursor,
        )

    def queued_messages(self, wsid: str, flow: str) -> Iterator[Item]:
        """Messages not yet finished (queued or processing), from the sparse index: done ones are not read."""
        cursor: str | None = None
        while True:
            page = self.table.query(queued_index_pk(wsid, flow), index="GSI1", limit=100, cursor=cursor)
            yield from page.items
            if not page.next:
                return
            cursor = page.next

    def transition_message(
        self,
        wsid: str,
        flow: str,
        mid: str,
        to: MessageStatus,
        *,
        allowed_from: Sequence[MessageStatus],
        final: bool = False,
        add_attempt: bool = False,
        **fields: Any,
    ) -> Item | None:
        """Move a message to `to` only from one of `allowed_from`; None when it was elsewhere.
        A final status leaves the sparse queued index."""
        names = {"#st": "status"}
        values: dict[str, Any] = {":to": to.value}
        sources = [f":s{i}" for i in range(len(allowed_from))]
        values.update({f":s{i}": s.value for i, s in enumerate(allowed_from)})
        sets = ["#st = :to"]
        if add_attempt:
            sets.append("attempts = if_not_exists(attempts, :zero) + :one")
            values.update({":zero": 0, ":one": 1})
        removes = ["GSI1PK", "GSI1SK"] if final else []
        for i, (attr, value) in enumerate(fields.items()):
            names[f"#f{i}"] = attr
            if value is None:
                removes.append(f"#f{i}")
            else:
                values[f":f{i}"] = value
                sets.append(f"#f{i} = :f{i}")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        return self.table.update(
            message_key(wsid, flow, mid),
            expression,
            condition=f"#st IN ({', '.join(sources)})",
            names=names,
            values=values,
        )


__all__ = ["QUOTA_CONFLICT", "STOP", "WARN", "ActivationStore", "StaleVersion"]
