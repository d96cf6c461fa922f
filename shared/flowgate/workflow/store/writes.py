"""Write expressions the workflow stores share: SET clauses, the enterprise's usage counters, and the
VM that moves with its task. Conditions are written here and in the store modules, nowhere else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowgate.db import Write
from flowgate.workflow.models import VmState
from flowgate.workflow.rules import Usage
from flowgate.workflow.store.keys import usage_key, vm_key


def set_clause(changes: Mapping[str, Any], names: dict[str, str], values: dict[str, Any]) -> list[str]:
    """`#fN = :fN` for each attribute; a dotted key `extradata.workflow` sets one entry of a map."""
    sets = []
    for i, (attr, value) in enumerate(changes.items()):
        path = []
        for j, part in enumerate(attr.split(".")):
            names[f"#f{i}_{j}"] = part
            path.append(f"#f{i}_{j}")
        values[f":f{i}"] = value
        sets.append(f"{'.'.join(path)} = :f{i}")
    return sets


def usage_write(cid: str, delta: Usage, caps: Mapping[str, int] | None = None, conflict: str = "") -> Write:
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


def vm_write(
    wsid: str,
    vm_id: str,
    task_id: str,
    state: VmState,
    *,
    keep_task: bool,
    size: tuple[int, int] | None = None,
) -> Write:
    """The VM of task `task_id` shows `state` (and `size`, as cpu and ram); only while it is still that
    task's VM. Without `keep_task` the VM is free again."""
    names = {"#st": "state"}
    values: dict[str, Any] = {":st": state.value, ":tid": task_id, ":one": 1}
    resized = {"cpu": size[0], "ram": size[1]} if size else {}
    sets = ["#st = :st", "version = version + :one", *set_clause(resized, names, values)]
    update = "SET " + ", ".join(sets) + ("" if keep_task else " REMOVE task_id")
    return Write(
        "Update",
        key=vm_key(wsid, vm_id),
        update=update,
        condition="task_id = :tid",
        names=names,
        values=values,
        conflict="the virtual machine is no longer bound to this task",
    )
