"""Adapters between contexts: each implements one context's port on another context's *service*.

Only the composition root (flowgate.wiring) imports this module, so the contexts themselves never
import each other (import-linter keeps it so).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flowgate.activation.models import MessageRun
from flowgate.connectors.runtime import RunContext
from flowgate.connectors.service import ConnectorService
from flowgate.errors import Conflict, FlowgateError, NotFound
from flowgate.flows.models import ExecutionStatus
from flowgate.flows.ports import ConnectionRun
from flowgate.flows.runner import Runner
from flowgate.flows.service import FlowService
from flowgate.workflow.models import Task


class ConnectorCalls:
    """flows.ports.Connections on the connectors service, with this container's run limits."""

    def __init__(self, connectors: ConnectorService, context: RunContext) -> None:
        self.connectors = connectors
        self.context = context

    def connector_type(self, wsid: str, name: str) -> str:
        return self.connectors.get_connector(wsid, name).type

    def describe(self, wsid: str, name: str) -> dict[str, Any]:
        return self.connectors.get_connector(wsid, name).model_dump(mode="json")

    def secret_names(self, wsid: str) -> list[str]:
        items, _ = self.connectors.list_secrets(wsid, 100, None)
        return [s.name for s in items]

    def run(
        self,
        wsid: str,
        connector: str | None,
        connector_type: str | None,
        inputs: Mapping[str, Any],
        *,
        seconds: float,
        merged: Callable[[ConnectionRun], None],
        execution_id: str | None = None,
    ) -> ConnectionRun:
        try:
            prepared = self.connectors.prepare(wsid, connector, connector_type, inputs, execution_id)
        except FlowgateError as exc:
            return ConnectionRun(error=exc.message)
        run = ConnectionRun(inputs=prepared.merged.redacted, input_sources=dict(prepared.merged.sources))
        merged(run)
        try:
            run.outputs = self.connectors.execute(prepared, self.context.with_time_left(seconds))
        except FlowgateError as exc:  # ConnectorError included: its message is already scrubbed
            run.error = exc.message
        return run


class FlowMessageRunner:
    """activation.ports.MessageRunner: a message's execution, created by the flows service and run
    inline by the runner."""

    def __init__(self, flows: FlowService, runner: Callable[[], Runner]) -> None:
        self.flows = flows
        self.runner = runner  # built on first use: the message processor needs it, the API does not

    def run(
        self, workspace_id: str, flow: str, inputs: Mapping[str, Any], started_by: str, execution_id: str
    ) -> MessageRun:
        try:
            self.flows.create_flow_execution(
                workspace_id, flow, inputs, started_by, source="message", id=execution_id
            )
        except NotFound as exc:
            return MessageRun(None, False, exc.message)
        except Conflict:
            pass  # created by an attempt that died before running it: run that one (claimed once)
        self.runner().run_claimed(execution_id)
        return self.outcome(execution_id) or MessageRun(execution_id, False, "the execution did not end")

    def outcome(self, execution_id: str) -> MessageRun | None:
        ended = self.flows.find_execution(execution_id)
        if ended is None or not ended.status.final:
            return None
        if ended.status == ExecutionStatus.SUCCESS:
            return MessageRun(execution_id, True)
        return MessageRun(execution_id, False, ended.message or f"the execution ended {ended.status.value}")


class FlowJobs:
    """workflow.ports.Jobs: a task's jobs run as an execution of the workspace's flow bound to the
    operation, queued for the runner; the execution's id comes from the workflow context, so a repeated
    start finds the execution made before."""

    def __init__(self, flows: FlowService) -> None:
        self.flows = flows

    def start(self, task: Task, flow: str, execution_id: str) -> None:
        dto = task.model_dump(mode="json")
        self.flows.start_for_task(
            workspace_id=task.workspace_id,
            flow=flow,
            inputs={"task": {k: v for k, v in dto.items() if k != "links"}},
            started_by=task.userId,
            task_id=task.taskId,
            execution_id=execution_id,
        )
