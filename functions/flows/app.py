"""Flows function: flows (versioned scripts) and executions of a workspace.

Thin by design: parse (pydantic, via the resolver), authenticate, call the flows service, shape the answer.
"""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body

from flowgate.activation.models import FlowActivation, MessageBody, MessageStatus, QueuedMessage, StopRecord
from flowgate.flows.models import (
    Execution,
    ExecutionSummary,
    Flow,
    FlowName,
    FlowSummary,
    PutFlowRequest,
    StartExecutionRequest,
)
from flowgate.http import API_ROOT, Cursor, Limit, Listing, accepted, create_app, created, entry
from flowgate.identity.ports import Principal
from flowgate.rest import caller as principal_of
from flowgate.wiring import container

app = create_app()
WS = f"{API_ROOT}/workspaces/<ws>"


def caller() -> Principal:
    return principal_of(app)


@app.put(f"{WS}/flows/<name>", tags=["flows"])
def put_flow(ws: str, name: FlowName, body: PutFlowRequest) -> Response[Flow]:
    flow, was_created = container().flows.put_flow(caller(), ws, name, body)
    if was_created:
        return created(flow, f"{API_ROOT}/workspaces/{ws}/flows/{name}")
    return Response(status_code=200, content_type="application/json", body=flow)


@app.get(f"{WS}/flows", tags=["flows"])
def list_flows(ws: str, limit: Limit = 50, cursor: Cursor = None) -> Listing[FlowSummary]:
    items, nxt = container().flows.list_flows(caller(), ws, limit, cursor)
    return Listing(items=items, next=nxt)


class FlowView(Flow):
    """A flow with its activation: status (inactive, active, stopped), when it stops, and why it did."""

    status: str
    activated_at: str | None = None
    stops_at: str | None = None
    seconds_left: int | None = None
    warned_at: str | None = None
    stop: StopRecord | None = None


@app.get(f"{WS}/flows/<name>", tags=["flows"])
def get_flow(ws: str, name: str) -> FlowView:
    flow = container().flows.get_flow(caller(), ws, name)
    state = container().activation.state_of(ws, name)
    return FlowView(
        **flow.model_dump(), **state.model_dump(include=set(FlowView.model_fields) - set(Flow.model_fields))
    )


@app.post(f"{WS}/flows/<name>/activate", tags=["active flows"])
def activate_flow(ws: str, name: str) -> FlowActivation:
    return container().activation.activate(caller(), ws, name)


@app.post(f"{WS}/flows/<name>/deactivate", tags=["active flows"])
def deactivate_flow(ws: str, name: str) -> FlowActivation:
    return container().activation.deactivate(caller(), ws, name)


@app.post(f"{WS}/flows/<name>/messages", tags=["active flows"])
def post_message(ws: str, name: str, body: Annotated[MessageBody, Body()]) -> Response[QueuedMessage]:
    message = container().activation.post_message(caller(), ws, name, body)
    return accepted(message, f"{API_ROOT}/workspaces/{ws}/flows/{name}/messages/{message.id}")


@app.get(f"{WS}/flows/<name>/messages/<mid>", tags=["active flows"])
def get_message(ws: str, name: str, mid: str) -> QueuedMessage:
    return container().activation.get_message(caller(), ws, name, mid)


@app.get(f"{WS}/flows/<name>/messages", tags=["active flows"])
def list_messages(
    ws: str, name: str, status: MessageStatus | None = None, limit: Limit = 50, cursor: Cursor = None
) -> Listing[QueuedMessage]:
    items, nxt = container().activation.list_messages(caller(), ws, name, status, limit, cursor)
    return Listing(items=items, next=nxt)


@app.delete(f"{WS}/flows/<name>", tags=["flows"])
def delete_flow(ws: str, name: str) -> Response[None]:
    container().flows.delete_flow(caller(), ws, name)
    return Response(status_code=204)


@app.post(f"{WS}/executions", tags=["executions"])
def start_execution(ws: str, body: StartExecutionRequest) -> Response[Execution]:
    execution = container().flows.start_execution(caller(), ws, body)
    return accepted(execution, f"{API_ROOT}/workspaces/{ws}/executions/{execution.id}")


@app.get(f"{WS}/executions", tags=["executions"])
def list_executions(ws: str, limit: Limit = 50, cursor: Cursor = None) -> Listing[ExecutionSummary]:
    items, nxt = container().flows.list_executions(caller(), ws, limit, cursor)
    return Listing(items=items, next=nxt)


@app.get(f"{WS}/executions/<eid>", tags=["executions"])
def get_execution(ws: str, eid: str) -> Execution:
    return container().flows.get_execution(caller(), ws, eid)


@app.post(f"{WS}/executions/<eid>/cancel", tags=["executions"])
def cancel_execution(ws: str, eid: str) -> Execution:
    return container().flows.cancel_execution(caller(), ws, eid)


handler = entry(app, max_body_bytes=512 * 1024)
