"""Storage of operation requests, their tasks, the holds' tokens and the decision audit
(docs/access-patterns.md W6-W15).

Every change of a task's state is one conditional write (a transaction when the VM and the enterprise's
usage move with it), so a continue racing a cancel, a timeout racing a decision, or a jobs callback
delivered twice resolves to exactly one outcome. The pending-task indexes (GSI1, GSI2) are sparse: a
task carries their keys only while it is QUEUEING, so listing held tasks reads only held tasks of that
enterprise, whatever else the table holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flowgate.db import Item, Table, Write
from flowgate.workflow.models import AuditRecord, TaskState, VmState
from flowgate.workflow.rules import Usage
from flowgate.workflow.store.keys import (
    INDEX_ATTRIBUTES,
    NOT_EXISTS,
    audit_key,
    pending_enterprise_pk,
    pending_index,
    pending_user_pk,
    request_key,
    task_key,
    task_pk,
    vm_key,
)
from flowgate.workflow.store.records import (
    AuditEntry,
    RequestRecord,
    TaskRecord,
    Verdict,
    VmRecord,
    audit_record,
)
from flowgate.workflow.store.writes import set_clause, usage_write, vm_write

AUDIT_PAGE = 100


class TaskStore:
    def __init__(self, table: Table) -> None:
        self.table = table

    def _get(self, key: Mapping[str, str]) -> Item | None:
        return self.table.get(key["PK"], key["SK"])

    # ---- operation requests ----
    def create_request(
        self,
        request: RequestRecord,
        tasks: Sequence[TaskRecord],
        vms: Sequence[VmRecord],
        *,
        vm_state: VmState,
        reserve: Usage,
        caps: Mapping[str, int],
        limits_conflict: str,
    ) -> None:
        """One transaction: each VM takes its task (only if unchanged and idle since read), each task is
        created, the request is recorded, and the enterprise's usage grows within its limits."""
        writes: list[Write] = []
        for vm, task in zip(vms, tasks, strict=True):
            writes.append(
                Write(
                    "Update",
                    key=vm_key(vm.workspace_id, vm.id),
                    update="SET #st = :st, task_id = :tid, version = version + :one",
                    condition="version = :v AND attribute_not_exists(task_id)",
                    names={"#st": "state"},
                    values={":st": vm_state.value, ":tid": task.id, ":one": 1, ":v": vm.version},
                    conflict=f"the virtual machine '{vm.name}' was changed by another request; retry",
                )
            )
            item = task.to_item()
            index = pending_index(item) if task.state == TaskState.QUEUEING else {}
            writes.append(Write("Put", item={**task_key(task.id), **item, **index}, condition=NOT_EXISTS))
        writes.append(
            Write("Put", item={**request_key(request.id), **request.to_item()}, condition=NOT_EXISTS)
        )
        if not reserve.zero:
            writes.append(usage_write(request.contract_id, reserve, caps, limits_conflict))
        self.table.transact(writes)

    def get_request(self, request_id: str) -> RequestRecord | None:
        item = self._get(request_key(request_id))
        return RequestRecord.from_item(item) if item else None

    # ---- tasks ----
    def get(self, task_id: str) -> TaskRecord | None:
        item = self._get(task_key(task_id))
        return TaskRecord.from_item(item) if item else None

    def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        """The tasks in the order asked for; missing ones are left out."""
        keys = [task_key(t) for t in task_ids]
        found = {i["id"]: i for i in self.table.batch_get([(k["PK"], k["SK"]) for k in keys])}
        return [TaskRecord.from_item(found[t]) for t in task_ids if t in found]

    def leave_queue(
        self,
        task: TaskRecord,
        to: TaskState,
        verdict: Verdict,
        *,
        vm_state: VmState,
        vm_task_kept: bool,
        release: Usage,
        audit: AuditEntry | None,
    ) -> TaskRecord:
        """Decide a held task: QUEUEING -> `to`, once; the task as decided. The condition also pins the
        token as it was read: a token recorded meanwhile fails the write (Conflict), so the caller
        re-reads and releases that token (otherwise nobody would). The VM shows `vm_state` (running, or
        back where it was); the enterprise gets `release` back; a winning decision's audit entry is
        written with it."""
        changes: dict[str, Any] = {
            "decision": verdict.decision.value,
            "decided_by": verdict.by,
            "decided_by_id": verdict.by_id,
            "decided_at": verdict.at_ms,
            "updated_ms": verdict.at_ms,
            "timed_out": verdict.timed_out,
        }
        if verdict.message:
            changes["extradata.workflow"] = verdict.message
        names = {"#st": "state", "#tok": "token"}
        values: dict[str, Any] = {":to": to.value, ":queueing": TaskState.QUEUEING.value}
        sets = ["#st = :to", *set_clause(changes, names, values)]
        condition = "#st = :queueing AND attribute_not_exists(decision)"
        if task.token:
            condition += " AND #tok = :tok"
            values[":tok"] = task.token
        else:
            condition += " AND attribute_not_exists(#tok)"
        for i, attr in enumerate(INDEX_ATTRIBUTES):
            names[f"#x{i}"] = attr
        remove = ", ".join(f"#x{i}" for i in range(len(INDEX_ATTRIBUTES)))
        writes = [
            Write(
                "Update",
                key=task_key(task.id),
                update=f"SET {', '.join(sets)} REMOVE {remove}",
                condition=condition,
                names=names,
                values=values,
                conflict="the task was decided or changed by another request",
            ),
            vm_write(task.workspace_id, task.vm_id, task.id, vm_state, keep_task=vm_task_kept),
        ]
        if not release.zero:
            writes.append(usage_write(task.contract_id, -release))
        if audit is not None:
            writes.append(_audit_write(task.id, audit))
        self.table.transact(writes)
        extradata = dict(task.extradata)
        if verdict.message:
            extradata["workflow"] = verdict.message
        return dataclasses.replace(
            task,
            state=to,
            decision=verdict.decision,
            decided_by=verdict.by,
            decided_by_id=verdict.by_id,
            decided_at=verdict.at_ms,
            updated_ms=verdict.at_ms,
            timed_out=verdict.timed_out,
            extradata=extradata,
        )

    def end(
        self,
        task: TaskRecord,
        to: TaskState,
        *,
        at_ms: int,
        note: str | None,
        allowed_from: Iterable[TaskState],
        vm_state: VmState,
        vm_size: tuple[int, int] | None,
        release: Usage,
    ) -> TaskRecord:
        """A task whose jobs ended (or could not start): `to` once, the VM settled and freed of the task,
        the enterprise's usage given back as the outcome says; `note` is kept in extradata["jobs"]. The
        task as ended; Conflict when it had left `allowed_from` meanwhile."""
        changes: dict[str, Any] = {"updated_ms": at_ms}
        if note:
            changes["extradata.jobs"] = note
        sources = [s.value for s in allowed_from]
        names = {"#st": "state"}
        values: dict[str, Any] = {":to": to.value, **{f":s{i}": s for i, s in enumerate(sources)}}
        sets = ["#st = :to", *set_clause(changes, names, values)]
        writes = [
            Write(
                "Update",
                key=task_key(task.id),
                update="SET " + ", ".join(sets),
                condition="#st IN (" + ", ".join(f":s{i}" for i in range(len(sources))) + ")",
                names=names,
                values=values,
                conflict="the task already ended",
            ),
            vm_write(task.workspace_id, task.vm_id, task.id, vm_state, keep_task=False, size=vm_size),
        ]
        if not release.zero:
            writes.append(usage_write(task.contract_id, -release))
        self.table.transact(writes)
        extradata = {**task.extradata, "jobs": note} if note else dict(task.extradata)
        return dataclasses.replace(task, state=to, updated_ms=at_ms, extradata=extradata)

    def mark_started(self, task: TaskRecord, execution_id: str, at_ms: int) -> TaskRecord | None:
        """PENDING -> STARTED with the execution that runs the jobs; the task as started. None when the
        task had already moved on (its jobs ended first, or another start won): the execution is then
        recorded all the same if the task has none, its state untouched."""
        started = self.table.update(
            task_key(task.id),
            "SET #st = :to, execution_id = :eid, updated_ms = :now",
            condition="#st = :from",
            names={"#st": "state"},
            values={
                ":to": TaskState.STARTED.value,
                ":from": TaskState.PENDING.value,
                ":eid": execution_id,
                ":now": at_ms,
            },
        )
        if started is not None:
            return TaskRecord.from_item(started)
        self.table.update(
            task_key(task.id),
            "SET execution_id = :eid",
            condition="attribute_exists(PK) AND attribute_not_exists(execution_id)",
            values={":eid": execution_id},
        )
        return None

    # ---- the holds' tokens and the announcement ----
    def set_first_token(self, task_id: str, token: str) -> TaskRecord | None:
        """Store the hold's token if the task has none; the task as it is then, or None if it had one."""
        item = self.table.update(
            task_key(task_id),
            "SET #tok = :tok",
            condition="attribute_exists(PK) AND attribute_not_exists(#tok)",
            names={"#tok": "token"},
            values={":tok": token},
        )
        return TaskRecord.from_item(item) if item else None

    def replace_token(self, task_id: str, old: str, new: str) -> TaskRecord | None:
        """A newer token of the same hold (its wait state ran again), only while the task is undecided."""
        item = self.table.update(
            task_key(task_id),
            "SET #tok = :new",
            condition="#tok = :old AND attribute_not_exists(decision)",
            names={"#tok": "token"},
            values={":old": old, ":new": new},
        )
        return TaskRecord.from_item(item) if item else None

    def add_token_task(self, request_id: str, task_id: str) -> RequestRecord | None:
        """Count `task_id` among the request's tasks whose token is in (a set, so a repeat counts once)."""
        item = self.table.update(
            request_key(request_id),
            "ADD token_tasks :t",
            condition="attribute_exists(PK)",
            values={":t": {task_id}},
        )
        return RequestRecord.from_item(item) if item else None

    def claim_notification(self, request_id: str, at_ms: int) -> bool:
        """True for exactly one caller: the one that gets to notify the workflow tool of the request."""
        claimed = self.table.update(
            request_key(request_id),
            "SET notified_at = :now",
            condition="attribute_exists(PK) AND attribute_not_exists(notified_at)",
            values={":now": at_ms},
        )
        return claimed is not None

    def record_delivery(self, task_id: str, attempt: int, ok: bool, text: str) -> None:
        """The last webhook attempt on the task; an older attempt never overwrites a newer one."""
        self.table.update(
            task_key(task_id),
            "SET extradata.#wh = :text, webhook_attempt = :n, webhook_ok = :ok",
            condition=(
                "attribute_exists(PK) AND (attribute_not_exists(webhook_attempt) OR webhook_attempt <= :n)"
            ),
            names={"#wh": "webhook"},
            values={":text": text, ":n": attempt, ":ok": ok},
        )

    # ---- the decision audit ----
    def append_audit(self, task_id: str, entry: AuditEntry) -> None:
        self.table.transact([_audit_write(task_id, entry)])

    def list_audit(self, task_id: str, limit: int) -> list[AuditRecord]:
        """The task's audit, oldest first, at most `limit` entries."""
        items: list[Item] = []
        cursor: str | None = None
        while len(items) < limit:
            page = self.table.query(
                task_pk(task_id), sk_prefix="AUDIT#", limit=min(AUDIT_PAGE, limit - len(items)), cursor=cursor
            )
            items += page.items
            cursor = page.next
            if cursor is None:
                break
        return [audit_record(i) for i in items]

    # ---- pending tasks ----
    def pending(
        self,
        cid: str,
        uid: str | None,
        *,
        since: str | None,
        until: str | None,
        task_type: str | None,
        vm_id: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[TaskRecord], str | None]:
        """Held tasks, newest first: the enterprise's (GSI1) or one user's (GSI2). The time range is a
        key condition; type and VM are filters on what the key selected."""
        index, pk = ("GSI2", pending_user_pk(cid, uid)) if uid else ("GSI1", pending_enterprise_pk(cid))
        filters = []
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        if task_type:
            filters.append("#op = :op")
            names["#op"] = "operation"
            values[":op"] = task_type
        if vm_id:
            filters.append("vm_id = :vm")
            values[":vm"] = vm_id
        page = self.table.query_range(
            pk,
            index=index,
            sk_from=since,
            sk_to=f"{until}#~" if until else None,
            filter_expression=" AND ".join(filters) or None,
            names=names,
            values=values,
            limit=limit,
            cursor=cursor,
            newest_first=True,
        )
        return [TaskRecord.from_item(i) for i in page.items], page.next


def _audit_write(task_id: str, entry: AuditEntry) -> Write:
    item = entry.to_item()
    return Write(
        "Put", item={**audit_key(task_id, item["at"], item["attempt_id"]), **item}, condition=NOT_EXISTS
    )
