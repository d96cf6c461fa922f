"""Connectors function: connectors, vault secrets (write-only values), run-time variables and connection
runs of a workspace.

Thin by design: parse (pydantic, via the resolver), authenticate and authorize the workspace, call the
connectors service, shape the answer. A run is queued as a `connection` execution for the runner.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response

from flowgate.connectors.models import Connector, PutConnectorRequest, PutSecretRequest, SecretInfo
from flowgate.flows.models import Execution, RunConnectorRequest
from flowgate.http import API_ROOT, Cursor, Limit, Listing, accepted, create_app, created, entry
from flowgate.rest import caller
from flowgate.variables.models import PutVariableRequest, Variable
from flowgate.wiring import container

app = create_app()
WS = f"{API_ROOT}/workspaces/<ws>"


def authorized(ws: str) -> tuple[Any, str]:
    """The caller, once the identity context confirmed they may work in workspace `ws`."""
    principal = caller(app)
    container().identity.authorize_workspace(principal, ws)
    return principal, ws


@app.put(f"{WS}/connectors/<name>", tags=["connectors"])
def put_connector(ws: str, name: str, body: PutConnectorRequest) -> Response[Connector]:
    principal, _ = authorized(ws)
    existed = container().connectors.exists(ws, name)
    connector = container().connectors.put_connector(ws, name, body, principal.user_id)
    if existed:
        return Response(status_code=200, content_type="application/json", body=connector)
    return created(connector, f"{API_ROOT}/workspaces/{ws}/connectors/{name}")


@app.get(f"{WS}/connectors", tags=["connectors"])
def list_connectors(ws: str, limit: Limit = 50, cursor: Cursor = None) -> Listing[Connector]:
    authorized(ws)
    items, nxt = container().connectors.list_connectors(ws, limit, cursor)
    return Listing(items=items, next=nxt)


@app.get(f"{WS}/connectors/<name>", tags=["connectors"])
def get_connector(ws: str, name: str) -> Connector:
    authorized(ws)
    return container().connectors.get_connector(ws, name)


@app.delete(f"{WS}/connectors/<name>", tags=["connectors"])
def delete_connector(ws: str, name: str) -> Response[None]:
    authorized(ws)
    container().connectors.delete_connector(ws, name)
    return Response(status_code=204)


@app.post(f"{WS}/connectors/<name>/run", tags=["connectors"])
def run_connector(ws: str, name: str, body: RunConnectorRequest) -> Response[Execution]:
    principal, _ = authorized(ws)
    connector = container().connectors.get_connector(ws, name)
    execution = container().flows.start_connection(
        principal, ws, {"name": connector.name, "type": connector.type}, body.inputs
    )
    return accepted(execution, f"{API_ROOT}/workspaces/{ws}/executions/{execution.id}")


@app.put(f"{WS}/secrets/<name>", tags=["secrets"])
def put_secret(ws: str, name: str, body: PutSecretRequest) -> SecretInfo:
    authorized(ws)
    return container().connectors.put_secret(ws, name, body)


@app.get(f"{WS}/secrets", tags=["secrets"])
def list_secrets(ws: str, limit: Limit = 50, cursor: Cursor = None) -> Listing[SecretInfo]:
    authorized(ws)
    items, nxt = container().connectors.list_secrets(ws, limit, cursor)
    return Listing(items=items, next=nxt)


@app.delete(f"{WS}/secrets/<name>", tags=["secrets"])
def delete_secret(ws: str, name: str) -> Response[None]:
    authorized(ws)
    container().connectors.delete_secret(ws, name)
    return Response(status_code=204)


@app.put(f"{WS}/variables/<name>", tags=["variables"])
def put_variable(ws: str, name: str, body: PutVariableRequest) -> Response[Variable]:
    principal, _ = authorized(ws)
    variable, created_now = container().variables.put(ws, name, body, principal.user_id)
    if created_now:
        return created(variable, f"{API_ROOT}/workspaces/{ws}/variables/{name}")
    return Response(status_code=200, content_type="application/json", body=variable)


@app.get(f"{WS}/variables", tags=["variables"])
def list_variables(ws: str, limit: Limit = 50, cursor: Cursor = None) -> Listing[Variable]:
    authorized(ws)
    items, nxt = container().variables.list(ws, limit, cursor)
    return Listing(items=items, next=nxt)


@app.get(f"{WS}/variables/<name>", tags=["variables"])
def get_variable(ws: str, name: str) -> Variable:
    authorized(ws)
    return container().variables.get(ws, name)


@app.delete(f"{WS}/variables/<name>", tags=["variables"])
def delete_variable(ws: str, name: str) -> Response[None]:
    authorized(ws)
    container().variables.delete(ws, name)
    return Response(status_code=204)


handler = entry(app)
