"""Sync function: workspace links (seed 000) — the sync configs of a workspace, and the inbound exchange.

Thin by design. The config routes take a token and an org admin (flowgate.sync.configs); the inbound
route `POST /api/latest/sync_config/{name}/sync` takes no token: its RFC 9421 signature is checked
before anything else (flowgate.sync.exchange), and every refusal of an unknown name or a bad signature
is the same 401, so names cannot be probed.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types

from flowgate.http import API_ROOT, Cursor, Limit, Listing, create_app, created, entry
from flowgate.rest import caller
from flowgate.sync.models import PutSyncConfigRequest, SyncConfig, SyncConfigName
from flowgate.wiring import container

app = create_app()
WS = f"{API_ROOT}/workspaces/<ws>"


@app.put(f"{WS}/sync_config/<name>", tags=["workspace linking"])
def put_sync_config(ws: str, name: SyncConfigName, body: PutSyncConfigRequest) -> Response[SyncConfig]:
    config, was_created = container().sync_configs.put(caller(app), ws, name, body)
    if was_created:
        return created(config, f"{API_ROOT}/workspaces/{ws}/sync_config/{name}")
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=config)


@app.get(f"{WS}/sync_config", tags=["workspace linking"])
def list_sync_configs(ws: str, limit: Limit = 50, cursor: Cursor = None) -> Listing[SyncConfig]:
    items, nxt = container().sync_configs.list(caller(app), ws, limit, cursor)
    return Listing(items=items, next=nxt)


@app.get(f"{WS}/sync_config/<name>", tags=["workspace linking"])
def get_sync_config(ws: str, name: str) -> SyncConfig:
    return container().sync_configs.get(caller(app), ws, name)


@app.delete(f"{WS}/sync_config/<name>", tags=["workspace linking"])
def delete_sync_config(ws: str, name: str) -> Response[None]:
    container().sync_configs.delete(caller(app), ws, name)
    return Response(status_code=204)


@app.post(f"{API_ROOT}/sync_config/<name>/sync", tags=["workspace linking"])
def exchange(name: str) -> Response[Any]:
    """A peer's signed exchange; the answer is signed with this side's key (Signature, Content-Digest)."""
    from flowgate.sync.exchange import request_headers  # cryptography and the signature package: here only

    event = app.current_event
    headers, body = container().sync_receiver.receive(
        name,
        signed_url(event.raw_event),
        request_headers(event.headers, event.multi_value_headers),
        (event.body or "").encode(),
    )
    # The body goes out as the exact bytes that were signed, not as a model serialized again.
    signed: Response[Any] = Response(
        status_code=200, content_type=content_types.APPLICATION_JSON, body=body.decode(), headers=headers
    )
    return signed


def signed_url(event: dict[str, Any]) -> str:
    """The URL the peer called, as it signed it (@target-uri). On API Gateway's own domain the path
    starts with the stage (requestContext.path); on a custom domain, and in the local stack, it does not."""
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    host = headers.get("host", "")
    proto = headers.get("x-forwarded-proto", "http")  # API Gateway always sets it; plain local stacks do not
    context = event.get("requestContext") or {}
    path = context.get("path") if host.endswith(".amazonaws.com") else event.get("path")
    return f"{proto}://{host}{path or event.get('path') or ''}"


handler = entry(app, max_body_bytes=4 * 1024 * 1024)
