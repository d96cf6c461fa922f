"""Use cases: a workspace's virtual machines and virtual appliances, what deploy, undeploy and
reconfigure act on. Whoever works in the workspace reads and creates them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowgate.clock import Clock
from flowgate.errors import BadRequest, NotFound
from flowgate.identity.ports import Directory, Principal, WorkspaceAuthorizer
from flowgate.workflow.common import list_limit, validated
from flowgate.workflow.models import (
    CreateVirtualApplianceRequest,
    CreateVirtualMachineRequest,
    VirtualAppliance,
    VirtualMachine,
)
from flowgate.workflow.store.records import VappRecord, VmRecord
from flowgate.workflow.store.resources import ResourceStore


class Resources:
    def __init__(
        self,
        store: ResourceStore,
        workspaces: WorkspaceAuthorizer,
        directory: Directory,
        clock: Clock,
    ) -> None:
        self.store = store
        self.workspaces = workspaces
        self.directory = directory
        self.clock = clock

    # ---- virtual machines ----
    def create_virtual_machine(
        self, principal: Principal, wsid: str, request: CreateVirtualMachineRequest | Mapping[str, Any]
    ) -> VirtualMachine:
        body = validated(CreateVirtualMachineRequest, request)
        ws = self.workspaces.authorize_workspace(principal, wsid)
        vm = VmRecord.new(
            wsid=wsid,
            cid=ws.contract_id,
            name=body.name,
            cpu=body.cpu,
            ram=body.ram,
            by=principal.user_id,
            at=self.clock(),
        )
        self.store.create_vm(vm, self.directory.workspace_exists(wsid))
        return vm.model()

    def get_virtual_machine(self, principal: Principal, wsid: str, vm_id: str) -> VirtualMachine:
        self.workspaces.authorize_workspace(principal, wsid)
        vm = self.store.get_vm(wsid, vm_id)
        if vm is None:
            raise NotFound("virtual machine not found")
        return vm.model()

    def list_virtual_machines(
        self, principal: Principal, wsid: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[VirtualMachine], str | None]:
        self.workspaces.authorize_workspace(principal, wsid)
        vms, nxt = self.store.list_vms(wsid, list_limit(limit), cursor)
        return [v.model() for v in vms], nxt

    # ---- virtual appliances ----
    def create_virtual_appliance(
        self, principal: Principal, wsid: str, request: CreateVirtualApplianceRequest | Mapping[str, Any]
    ) -> VirtualAppliance:
        body = validated(CreateVirtualApplianceRequest, request)
        self.workspaces.authorize_workspace(principal, wsid)
        found = {v.id for v in self.store.get_vms(wsid, body.virtualmachines)}
        missing = [v for v in body.virtualmachines if v not in found]
        if missing:
            raise BadRequest(
                f"no virtual machine {', '.join(missing)} in this workspace", code="unknown_virtual_machine"
            )
        vapp = VappRecord.new(
            wsid=wsid, name=body.name, vm_ids=body.virtualmachines, by=principal.user_id, at=self.clock()
        )
        self.store.create_vapp(vapp)
        return vapp.model()

    def get_virtual_appliance(self, principal: Principal, wsid: str, vapp_id: str) -> VirtualAppliance:
        self.workspaces.authorize_workspace(principal, wsid)
        vapp = self.store.get_vapp(wsid, vapp_id)
        if vapp is None:
            raise NotFound("virtual appliance not found")
        return vapp.model()

    def list_virtual_appliances(
        self, principal: Principal, wsid: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[VirtualAppliance], str | None]:
        self.workspaces.authorize_workspace(principal, wsid)
        vapps, nxt = self.store.list_vapps(wsid, list_limit(limit), cursor)
        return [v.model() for v in vapps], nxt
