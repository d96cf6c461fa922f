"""Storage of the workflow context in the platform table. Keys are built here and nowhere else;
docs/access-patterns.md ("Approval workflow") lists every item and access pattern.

Every change of a task's state is one conditional write (a transaction when the VM and the enterprise's
usage move with it), so a continue racing a cancel, a timeout racing a decision, or a jobs callback
delivered twice resolves to exactly one outcome. The pending-task indexes (GSI1, GSI2) are sparse: a
task carries their keys only while it is QUEUEING, so listing held tasks reads only held tasks of that
enterprise, whatever else the table holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flowgate.db import Item, Page, Table, Write
from flowgate.errors import Conflict
from flowgate.workflow.models import (
    Job,
    JobCollection,
    Operation,
    Task,
    TaskState,
    VirtualAppliance,
    VirtualMachine,
    VmState,
)
from flowgate.workflow.rules import Usage, job_state, task_links, vm_links

META = "META"
PLATFORM_KEY = {"PK": "PLATFORM", "SK": "WORKFLOW"}
INDEX_ATTRIBUTES = ("GSI1PK", "GSI1SK", "GSI2PK", "GSI2SK")
_NOT_EXISTS = "attribute_not_exists(PK)"


def vm_key(wsid: str, vm_id: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"VM#{vm_id}"}


def vm_name_key(wsid: str, name: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"VMNAME#{name.lower()}"}


def vapp_key(wsid: str, vapp_id: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"VAPP#{vapp_id}"}


def vapp_name_key(wsid: str, name: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"VAPPNAME#{name.lower()}"}


def binding_key(wsid: str, op: Operation) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"OPERATION#{op.value}"}


def enterprise_key(cid: str) -> dict[str, str]:
    return {"PK": f"CONTRACT#{cid}", "SK": "WORKFLOW"}


def usage_key(cid: str) -> dict[str, str]:
    return {"PK": f"CONTRACT#{cid}", "SK": "WORKFLOW#USAGE"}


def task_key(task_id: str) -> dict[str, str]:
    return {"PK": f"TASK#{task_id}", "SK": META}


def audit_key(task_id: str, at: str, attempt_id: str) -> dict[str, str]:
    return {"PK": f"TASK#{task_id}", "SK": f"AUDIT#{at}#{attempt_id}"}


def request_key(request_id: str) -> dict[str, str]:
    return {"PK": f"REQUEST#{request_id}", "SK": META}


def execution_marker_key(execution_id: str) -> dict[str, str]:
    return {"PK": f"TASKEXEC#{execution_id}", "SK": META}


def pending_enterprise_pk(cid: str) -> str:
    return f"CONTRACT#{cid}#PENDING"


def pending_user_pk(cid: str, uid: str) -> str:
    # The contract is part of the key, so an enterprise's listing filtered by a user of another
    # enterprise finds nothing rather than that enterprise's tasks.
    return f"CONTRACT#{cid}#USER#{uid}#PENDING"


def pending_index(item: Mapping[str, Any]) -> dict[str, str]:
    """The sparse index keys of a held task: newest first is a descending query on `<created>#<id>`."""
    sort = f"{item['created_at']}#{item['id']}"
    return {
        "GSI1PK": pending_enterprise_pk(item["contract_id"]),
        "GSI1SK": sort,
        "GSI2PK": pending_user_pk(item["contract_id"], item["user_id"]),
        "GSI2SK": sort,
    }


# ---- item <-> model -----------------------------------------------------------------------------------


def task_from(item: Mapping[str, Any]) -> Task:
    state = TaskState(item["state"])
    jobs = [
        Job(
            id=j["id"],
            parentTaskId=item["id"],
            type=j["type"],
            description=j["description"],
            state=job_state(state),
            creationTimestamp=item["created_ms"],
            timestamp=item["updated_ms"],
            cpu=j.get("cpu"),
            ram=j.get("ram"),
        )
        for j in item["jobs"]
    ]
    return Task(
        taskId=item["id"],
        userId=item["user_id"],
        ownerId=item["vm_id"],
        type=Operation(item["operation"]).task_type,
        state=state,
        timestamp=item["updated_ms"],
        creationTimestamp=item["created_ms"],
        jobs=JobCollection(collection=jobs),
        links=task_links(
            item["id"], item["contract_id"], item["user_id"], item["workspace_id"], item["vm_id"]
        ),
        extradata={str(k): str(v) for k, v in (item.get("extradata") or {}).items()},
        contract_id=item["contract_id"],
        workspace_id=item["workspace_id"],
        vm_name=item["vm_name"],
        operation=item["operation"],
        request_id=item["request_id"],
        flow=item["flow"],
        held=bool(item.get("held", False)),
        cpu=item["cpu"],
        ram=item["ram"],
        new_cpu=item.get("new_cpu"),
        new_ram=item.get("new_ram"),
        execution_id=item.get("execution_id"),
        decision=item.get("decision"),
        decided_by=item.get("decided_by"),
        decided_at=item.get("decided_at"),
        timed_out=bool(item.get("timed_out", False)),
    )


def vm_from(item: Mapping[str, Any]) -> VirtualMachine:
    return VirtualMachine(
        id=item["id"],
        name=item["name"],
        cpu=item["cpu"],
        ram=item["ram"],
        state=VmState(item["state"]),
        workspaceId=item["workspace_id"],
        virtualApplianceId=item.get("vapp_id"),
        taskId=item.get("task_id"),
        links=vm_links(item["workspace_id"], item["id"], item.get("task_id")),
    )


def vapp_from(item: Mapping[str, Any]) -> VirtualAppliance:
    return VirtualAppliance(
        id=item["id"], name=item["name"], workspaceId=item["workspace_id"], virtualmachines=item["vm_ids"]
    )


def usage_from(item: Mapping[str, Any] | None) -> Usage:
    if not item:
        return Usage()
    return Usage(int(item.get("vms", 0)), int(item.get("cpu", 0)), int(item.get("ram", 0)))


def _usage_write(cid: str, delta: Usage, caps: Mapping[str, int] | None = None, conflict: str = "") -> Write:
    """ADD `delta` to the enterprise's usage; with `caps`, only if each capped counter is at most its cap
    before the addition (the reservation half of a request)."""
    names = {"#vms": "vms", "#cpu": "cpu", "#ram": "ram"}
    values: dict[str, Any] = {":vms": delta.vms, ":cpu": delta.cpu, ":ram": delta.ram}
    conditions = []
    for attr, cap in (caps or {}).items():
        if cap < 0:
            raise ValueError("a negative cap can never be met; refuse before writing")
        conditions.append(f"(attribute_not_exists(#{attr}) OR #{attr} <= :cap_{attr})")
        values[f":cap_{attr}"] = cap
    return Write(
        "Update",
        key=usage_key(cid),
        update="ADD #vms :vms, #cpu :cpu, #ram :ram",
        condition=" AND ".join(conditions) or None,
        names=names,
        values=values,
        conflict=conflict or "the enterprise's usage changed meanwhile; retry",
    )


def _set_clause(changes: Mapping[str, Any], names: dict[str, str], values: dict[str, Any]) -> list[str]:
    """`#fN = :fN` for each attribute; a dotted key `extradata.workflow` sets one entry of a map."""
    sets = []
    for i, (attr, value) in enumerate(changes.items()):
        parts = attr.split(".")
        path = []
        for j, part in enumerate(parts):
            names[f"#f{i}_{j}"] = part
            path.append(f"#f{i}_{j}")
        values[f":f{i}"] = value
        sets.append(f"{'.'.join(path)} = :f{i}")
    return sets


class WorkflowStore:
    def __init__(self, table: Table) -> None:
        self.table = table

    def _get(self, key: Mapping[str, str]) -> Item | None:
        return self.table.get(key["PK"], key["SK"])

    # ---- virtual machines and appliances ----
    def create_vm(self, item: Item, workspace_exists: Write) -> None:
        """The VM and its name marker, while the workspace exists (`workspace_exists`, from identity)."""
        wsid = item["workspace_id"]
        self.table.transact(
            [
                Write(
                    "Put",
                    item={**vm_name_key(wsid, item["name"]), "vm_id": item["id"]},
                    condition=_NOT_EXISTS,
                    conflict=f"a virtual machine named '{item['name']}' already exists in this workspace",
                ),
                Write("Put", item={**vm_key(wsid, item["id"]), **item}, condition=_NOT_EXISTS),
                workspace_exists,
            ]
        )

    def get_vm(self, wsid: str, vm_id: str) -> Item | None:
        return self._get(vm_key(wsid, vm_id))

    def get_vms(self, wsid: str, vm_ids: Sequence[str]) -> list[Item]:
        """The VMs in the order asked for; missing ones are left out."""
        keys = [vm_key(wsid, v) for v in vm_ids]
        found = {i["id"]: i for i in self.table.batch_get([(k["PK"], k["SK"]) for k in keys])}
        return [found[v] for v in vm_ids if v in found]

    def list_vms(self, wsid: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(f"WS#{wsid}", sk_prefix="VM#", limit=limit, cursor=cursor)

    def create_vapp(self, item: Item) -> None:
        """The appliance, its name marker, and each VM claimed for it (a VM is in one appliance at most)."""
        wsid = item["workspace_id"]
        writes = [
            Write(
                "Put",
                item={**vapp_name_key(wsid, item["name"]), "vapp_id": item["id"]},
                condition=_NOT_EXISTS,
                conflict=f"a virtual appliance named '{item['name']}' already exists in this workspace",
            ),
            Write("Put", item={**vapp_key(wsid, item["id"]), **item}, condition=_NOT_EXISTS),
        ]
        writes += [
            Write(
                "Update",
                key=vm_key(wsid, vm_id),
                update="SET vapp_id = :vapp",
                condition="attribute_exists(PK) AND attribute_not_exists(vapp_id)",
                values={":vapp": item["id"]},
                conflict=f"the virtual machine {vm_id} already belongs to an appliance, or no longer exists",
            )
            for vm_id in item["vm_ids"]
        ]
        self.table.transact(writes)

    def get_vapp(self, wsid: str, vapp_id: str) -> Item | None:
        return self._get(vapp_key(wsid, vapp_id))

    def list_vapps(self, wsid: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(f"WS#{wsid}", sk_prefix="VAPP#", limit=limit, cursor=cursor)

    # ---- operation bindings ----
    def put_binding(self, wsid: str, op: Operation, item: Item) -> None:
        self.table.transact([Write("Put", item={**binding_key(wsid, op), **item})])

    def get_binding(self, wsid: str, op: Operation) -> Item | None:
        return self._get(binding_key(wsid, op))

    # ---- enterprise settings and usage ----
    def get_enterprise(self, cid: str) -> Item | None:
        return self._get(enterprise_key(cid))

    def put_enterprise(self, cid: str, item: Item, read_version: int | None) -> None:
        """Replace the settings if nobody else did since they were read (optimistic lock)."""
        first = read_version is None
        self.table.transact(
            [
                Write(
                    "Put",
                    item={**enterprise_key(cid), **item, "version": 1 if first else (read_version or 0) + 1},
                    condition=_NOT_EXISTS if first else "version = :v",
                    values={} if first else {":v": read_version},
                    conflict="the enterprise's settings were changed by another request; reload and retry",
                ),
                Write(
                    "ConditionCheck",
                    key={"PK": f"CONTRACT#{cid}", "SK": META},
                    condition="attribute_exists(PK)",
                    conflict="the enterprise no longer exists",
                ),
            ]
        )

    def get_usage(self, cid: str) -> Usage:
        return usage_from(self._get(usage_key(cid)))

    # ---- platform properties ----
    def get_platform(self) -> Item:
        return self._get(PLATFORM_KEY) or {}

    def update_platform(
        self, sets: Mapping[str, Any], removes: Iterable[str], *, condition: str | None = None, **values: Any
    ) -> bool:
        """Change platform properties; False when `condition` failed (nothing changed)."""
        names: dict[str, str] = {}
        vals: dict[str, Any] = {f":{k}": v for k, v in values.items()}
        parts = []
        set_parts = _set_clause(sets, names, vals)
        if set_parts:
            parts.append("SET " + ", ".join(set_parts))
        removed = list(removes)
        for i, attr in enumerate(removed):
            names[f"#r{i}"] = attr
        if removed:
            parts.append("REMOVE " + ", ".join(f"#r{i}" for i in range(len(removed))))
        return (
            self.table.update(PLATFORM_KEY, " ".join(parts), condition=condition, names=names, values=vals)
            is not None
        )

    # ---- operation requests ----
    def create_request(
        self,
        request: Item,
        tasks: Sequence[Item],
        vms: Sequence[Item],
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
                    key=vm_key(vm["workspace_id"], vm["id"]),
                    update="SET #st = :st, task_id = :tid, version = version + :one",
                    condition="version = :v AND attribute_not_exists(task_id)",
                    names={"#st": "state"},
                    values={":st": vm_state.value, ":tid": task["id"], ":one": 1, ":v": vm["version"]},
                    conflict=f"the virtual machine '{vm['name']}' was changed by another request; retry",
                )
            )
            index = pending_index(task) if task["state"] == TaskState.QUEUEING else {}
            writes.append(Write("Put", item={**task_key(task["id"]), **task, **index}, condition=_NOT_EXISTS))
        writes.append(Write("Put", item={**request_key(request["id"]), **request}, condition=_NOT_EXISTS))
        if not reserve.zero:
            writes.append(_usage_write(request["contract_id"], reserve, caps, limits_conflict))
        self.table.transact(writes)

    def get_request(self, request_id: str) -> Item | None:
        return self._get(request_key(request_id))

    # ---- tasks ----
    def get_task(self, task_id: str) -> Item | None:
        return self._get(task_key(task_id))

    def get_tasks(self, task_ids: Sequence[str]) -> list[Item]:
        keys = [task_key(t) for t in task_ids]
        found = {i["id"]: i for i in self.table.batch_get([(k["PK"], k["SK"]) for k in keys])}
        return [found[t] for t in task_ids if t in found]

    def leave_queue(
        self,
        task: Item,
        to: TaskState,
        changes: Mapping[str, Any],
        *,
        vm_state: VmState,
        vm_task_kept: bool,
        release: Usage,
        audit: Item | None,
    ) -> None:
        """Decide a held task: QUEUEING -> `to`, once. The condition also pins the token as it was read:
        a token recorded meanwhile fails the write, so the caller re-reads and releases that token
        (otherwise nobody would). The VM shows `vm_state` (running, or back where it was); the
        enterprise gets `release` back; a winning decision's audit record is written with it."""
        names = {"#st": "state"}
        values: dict[str, Any] = {":to": to.value, ":queueing": TaskState.QUEUEING.value}
        sets = ["#st = :to", *_set_clause(changes, names, values)]
        condition = "#st = :queueing AND attribute_not_exists(decision)"
        if task.get("token"):
            condition += " AND #tok = :tok"
            values[":tok"] = task["token"]
        else:
            condition += " AND attribute_not_exists(#tok)"
        names["#tok"] = "token"
        for i, attr in enumerate(INDEX_ATTRIBUTES):
            names[f"#x{i}"] = attr
        remove = ", ".join(f"#x{i}" for i in range(len(INDEX_ATTRIBUTES)))
        writes = [
            Write(
                "Update",
                key=task_key(task["id"]),
                update=f"SET {', '.join(sets)} REMOVE {remove}",
                condition=condition,
                names=names,
                values=values,
                conflict="the task was decided or changed by another request",
            ),
            self._vm_write(task, vm_state, keep_task=vm_task_kept),
        ]
        if not release.zero:
            writes.append(_usage_write(task["contract_id"], -release))
        if audit is not None:
            writes.append(self._audit_write(task["id"], audit))
        self.table.transact(writes)

    def _vm_write(
        self,
        task: Mapping[str, Any],
        state: VmState,
        *,
        keep_task: bool,
        size: Mapping[str, int] | None = None,
    ) -> Write:
        """The VM of `task` shows `state`; only while it is still that task's VM."""
        names = {"#st": "state"}
        values: dict[str, Any] = {":st": state.value, ":tid": task["id"], ":one": 1}
        sets = ["#st = :st", "version = version + :one", *_set_clause(size or {}, names, values)]
        update = "SET " + ", ".join(sets) + ("" if keep_task else " REMOVE task_id")
        return Write(
            "Update",
            key=vm_key(task["workspace_id"], task["vm_id"]),
            update=update,
            condition="task_id = :tid",
            names=names,
            values=values,
            conflict="the virtual machine is no longer bound to this task",
        )

    def end_task(
        self,
        task: Item,
        to: TaskState,
        changes: Mapping[str, Any],
        *,
        allowed_from: Iterable[TaskState],
        vm_state: VmState,
        vm_size: Mapping[str, int] | None,
        release: Usage,
    ) -> None:
        """A task whose jobs ended (or could not start): `to` once, the VM settled and freed of the task,
        the enterprise's usage given back as the outcome says."""
        sources = [s.value for s in allowed_from]
        names = {"#st": "state"}
        values: dict[str, Any] = {":to": to.value, **{f":s{i}": s for i, s in enumerate(sources)}}
        sets = ["#st = :to", *_set_clause(changes, names, values)]
        writes = [
            Write(
                "Update",
                key=task_key(task["id"]),
                update="SET " + ", ".join(sets),
                condition="#st IN (" + ", ".join(f":s{i}" for i in range(len(sources))) + ")",
                names=names,
                values=values,
                conflict="the task already ended",
            ),
            self._vm_write(task, vm_state, keep_task=False, size=vm_size),
        ]
        if not release.zero:
            writes.append(_usage_write(task["contract_id"], -release))
        self.table.transact(writes)

    def mark_started(self, task_id: str, execution_id: str, now_ms: int) -> bool:
        """PENDING -> STARTED with the execution that runs the jobs, and the execution's marker (so the
        jobs' end finds the task by a key). False when the task had already moved on (the jobs ended
        first); the marker is written all the same."""
        marker = Write("Put", item={**execution_marker_key(execution_id), "task_id": task_id})
        try:
            self.table.transact(
                [
                    Write(
                        "Update",
                        key=task_key(task_id),
                        update="SET #st = :to, execution_id = :eid, updated_ms = :now",
                        condition="#st = :from",
                        names={"#st": "state"},
                        values={
                            ":to": TaskState.STARTED.value,
                            ":from": TaskState.PENDING.value,
                            ":eid": execution_id,
                            ":now": now_ms,
                        },
                    ),
                    marker,
                ]
            )
        except Conflict:  # the condition failed: record the execution anyway, state untouched
            self.table.transact([marker])
            self.table.update(
                task_key(task_id),
                "SET execution_id = :eid",
                condition="attribute_exists(PK) AND attribute_not_exists(execution_id)",
                values={":eid": execution_id},
            )
            return False
        return True

    def task_for_execution(self, execution_id: str) -> str | None:
        item = self._get(execution_marker_key(execution_id))
        return str(item["task_id"]) if item else None

    # ---- tokens and notification ----
    def set_first_token(self, task_id: str, token: str) -> Item | None:
        """Store the hold's token if the task has none; the task as it is then, or None if it had one."""
        return self.table.update(
            task_key(task_id),
            "SET #tok = :tok",
            condition="attribute_exists(PK) AND attribute_not_exists(#tok)",
            names={"#tok": "token"},
            values={":tok": token},
        )

    def replace_token(self, task_id: str, old: str, new: str) -> Item | None:
        """A newer token of the same hold (its wait state ran again), only while the task is undecided."""
        return self.table.update(
            task_key(task_id),
            "SET #tok = :new",
            condition="#tok = :old AND attribute_not_exists(decision)",
            names={"#tok": "token"},
            values={":old": old, ":new": new},
        )

    def add_token_task(self, request_id: str, task_id: str) -> Item | None:
        """Count `task_id` among the request's tasks whose token is in (a set, so a repeat counts once)."""
        return self.table.update(
            request_key(request_id),
            "ADD token_tasks :t",
            condition="attribute_exists(PK)",
            values={":t": {task_id}},
        )

    def claim_notification(self, request_id: str, now_ms: int) -> bool:
        """True for exactly one caller: the one that gets to notify the workflow tool of the request."""
        return (
            self.table.update(
                request_key(request_id),
                "SET notified_at = :now",
                condition="attribute_exists(PK) AND attribute_not_exists(notified_at)",
                values={":now": now_ms},
            )
            is not None
        )

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

    # ---- audit ----
    @staticmethod
    def _audit_write(task_id: str, record: Item) -> Write:
        return Write(
            "Put",
            item={**audit_key(task_id, record["at"], record["attempt_id"]), **record},
            condition=_NOT_EXISTS,
        )

    def append_audit(self, task_id: str, record: Item) -> None:
        self.table.transact([self._audit_write(task_id, record)])

    def list_audit(self, task_id: str, limit: int) -> list[Item]:
        items: list[Item] = []
        cursor: str | None = None
        while len(items) < limit:
            page = self.table.query(
                f"TASK#{task_id}", sk_prefix="AUDIT#", limit=min(100, limit - len(items)), cursor=cursor
            )
            items += page.items
            cursor = page.next
            if cursor is None:
                break
        return items

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
    ) -> Page:
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
        return self.table.query_range(
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
