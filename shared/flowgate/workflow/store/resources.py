"""Storage of a workspace's virtual machines, virtual appliances and operation bindings
(docs/access-patterns.md W1-W3). Names are unique per workspace through a marker item written in the
same transaction as the resource."""

from __future__ import annotations

from collections.abc import Sequence

from flowgate.db import Table, Write
from flowgate.workflow.models import Operation
from flowgate.workflow.store.keys import (
    NOT_EXISTS,
    binding_key,
    vapp_key,
    vapp_name_key,
    vm_key,
    vm_name_key,
    workspace_pk,
)
from flowgate.workflow.store.records import VappRecord, VmRecord


class ResourceStore:
    def __init__(self, table: Table) -> None:
        self.table = table

    # ---- virtual machines ----
    def create_vm(self, vm: VmRecord, workspace_exists: Write) -> None:
        """The VM and its name marker, while the workspace exists (`workspace_exists`, from identity)."""
        wsid = vm.workspace_id
        self.table.transact(
            [
                Write(
                    "Put",
                    item={**vm_name_key(wsid, vm.name), "vm_id": vm.id},
                    condition=NOT_EXISTS,
                    conflict=f"a virtual machine named '{vm.name}' already exists in this workspace",
                ),
                Write("Put", item={**vm_key(wsid, vm.id), **vm.to_item()}, condition=NOT_EXISTS),
                workspace_exists,
            ]
        )

    def get_vm(self, wsid: str, vm_id: str) -> VmRecord | None:
        key = vm_key(wsid, vm_id)
        item = self.table.get(key["PK"], key["SK"])
        return VmRecord.from_item(item) if item else None

    def get_vms(self, wsid: str, vm_ids: Sequence[str]) -> list[VmRecord]:
        """The VMs in the order asked for; missing ones are left out."""
        keys = [vm_key(wsid, v) for v in vm_ids]
        found = {i["id"]: i for i in self.table.batch_get([(k["PK"], k["SK"]) for k in keys])}
        return [VmRecord.from_item(found[v]) for v in vm_ids if v in found]

    def list_vms(self, wsid: str, limit: int, cursor: str | None) -> tuple[list[VmRecord], str | None]:
        page = self.table.query(workspace_pk(wsid), sk_prefix="VM#", limit=limit, cursor=cursor)
        return [VmRecord.from_item(i) for i in page.items], page.next

    # ---- virtual appliances ----
    def create_vapp(self, vapp: VappRecord) -> None:
        """The appliance, its name marker, and each VM claimed for it (a VM is in one appliance at most)."""
        wsid = vapp.workspace_id
        writes = [
            Write(
                "Put",
                item={**vapp_name_key(wsid, vapp.name), "vapp_id": vapp.id},
                condition=NOT_EXISTS,
                conflict=f"a virtual appliance named '{vapp.name}' already exists in this workspace",
            ),
            Write("Put", item={**vapp_key(wsid, vapp.id), **vapp.to_item()}, condition=NOT_EXISTS),
        ]
        writes += [
            Write(
                "Update",
                key=vm_key(wsid, vm_id),
                update="SET vapp_id = :vapp",
                condition="attribute_exists(PK) AND attribute_not_exists(vapp_id)",
                values={":vapp": vapp.id},
                conflict=f"the virtual machine {vm_id} already belongs to an appliance, or no longer exists",
            )
            for vm_id in vapp.vm_ids
        ]
        self.table.transact(writes)

    def get_vapp(self, wsid: str, vapp_id: str) -> VappRecord | None:
        key = vapp_key(wsid, vapp_id)
        item = self.table.get(key["PK"], key["SK"])
        return VappRecord.from_item(item) if item else None

    def list_vapps(self, wsid: str, limit: int, cursor: str | None) -> tuple[list[VappRecord], str | None]:
        page = self.table.query(workspace_pk(wsid), sk_prefix="VAPP#", limit=limit, cursor=cursor)
        return [VappRecord.from_item(i) for i in page.items], page.next

    # ---- operation bindings ----
    def put_binding(self, wsid: str, op: Operation, flow: str, *, by: str, at: str) -> None:
        item = {**binding_key(wsid, op), "flow": flow, "updated_by": by, "updated_at": at}
        self.table.transact([Write("Put", item=item)])

    def get_binding(self, wsid: str, op: Operation) -> str | None:
        """The name of the flow bound to `op` in the workspace, if any."""
        key = binding_key(wsid, op)
        item = self.table.get(key["PK"], key["SK"])
        return str(item["flow"]) if item else None
