"""Use cases: the flow bound to each operation of a workspace, which runs the jobs of its tasks
(`PUT/GET /api/latest/workspaces/{ws}/operations/{op}`). Only the workspace's owners choose it."""

from __future__ import annotations

from flowgate.clock import Clock, iso_ms
from flowgate.errors import NotFound
from flowgate.identity.ports import Principal, WorkspaceAuthorizer
from flowgate.workflow.common import operation_of, validated
from flowgate.workflow.models import BindOperationRequest, OperationBinding
from flowgate.workflow.ports import FlowLookup
from flowgate.workflow.store.resources import ResourceStore


class OperationBindings:
    def __init__(
        self, store: ResourceStore, workspaces: WorkspaceAuthorizer, flows: FlowLookup, clock: Clock
    ) -> None:
        self.store = store
        self.workspaces = workspaces
        self.flows = flows
        self.clock = clock

    def bind_operation(self, principal: Principal, wsid: str, op: str, flow: str) -> OperationBinding:
        """The flow that runs an operation's jobs in this workspace (workspace owners choose it)."""
        operation = operation_of(op)
        name = validated(BindOperationRequest, {"flow": flow}).flow
        self.workspaces.authorize_workspace(principal, wsid, manage=True)
        if not self.flows.flow_exists(wsid, name):
            raise NotFound(f"flow '{name}' not found")
        self.store.put_binding(wsid, operation, name, by=principal.user_id, at=iso_ms(self.clock()))
        return OperationBinding(operation=operation, flow=name, workspaceId=wsid)

    def get_binding(self, principal: Principal, wsid: str, op: str) -> OperationBinding:
        operation = operation_of(op)
        self.workspaces.authorize_workspace(principal, wsid)
        flow = self.store.get_binding(wsid, operation)
        if flow is None:
            raise NotFound(f"no flow is bound to {operation.value}")
        return OperationBinding(operation=operation, flow=flow, workspaceId=wsid)
