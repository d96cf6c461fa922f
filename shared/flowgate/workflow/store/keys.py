"""The workflow context's keys in the platform table, built here and nowhere else
(docs/access-patterns.md, "Approval workflow", lists them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowgate.workflow.models import Operation

META = "META"
PLATFORM_KEY = {"PK": "PLATFORM", "SK": "WORKFLOW"}
# The pending-task indexes: a task carries these only while it is QUEUEING (sparse indexes).
INDEX_ATTRIBUTES = ("GSI1PK", "GSI1SK", "GSI2PK", "GSI2SK")
NOT_EXISTS = "attribute_not_exists(PK)"


def vm_key(wsid: str, vm_id: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"VM#{vm_id}"}


def vm_name_key(wsid: str, name: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"VMNAME#{name.lower()}"}


def vapp_key(wsid: str, vapp_id: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"VAPP#{vapp_id}"}


def vapp_name_key(wsid: str, name: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"VAPPNAME#{name.lower()}"}


def workspace_pk(wsid: str) -> str:
    return f"WS#{wsid}"


def binding_key(wsid: str, op: Operation) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"OPERATION#{op.value}"}


def enterprise_key(cid: str) -> dict[str, str]:
    return {"PK": f"CONTRACT#{cid}", "SK": "WORKFLOW"}


def usage_key(cid: str) -> dict[str, str]:
    return {"PK": f"CONTRACT#{cid}", "SK": "WORKFLOW#USAGE"}


def task_pk(task_id: str) -> str:
    return f"TASK#{task_id}"


def task_key(task_id: str) -> dict[str, str]:
    return {"PK": task_pk(task_id), "SK": META}


def audit_key(task_id: str, at: str, attempt_id: str) -> dict[str, str]:
    return {"PK": task_pk(task_id), "SK": f"AUDIT#{at}#{attempt_id}"}


def request_key(request_id: str) -> dict[str, str]:
    return {"PK": f"REQUEST#{request_id}", "SK": META}


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
