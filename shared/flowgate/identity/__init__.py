"""The identity context: login and tokens, contracts, members, roles, workspaces and their access.

`authenticator()` and `service()` are the composition root: built once per container from settings.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from flowgate.config import get_settings
from flowgate.db import Table
from flowgate.identity.auth import Authenticator
from flowgate.identity.service import IdentityService
from flowgate.identity.store import IdentityStore

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver

    from flowgate.identity.models import Principal


@functools.cache
def store() -> IdentityStore:
    return IdentityStore(Table(get_settings().table_name))


@functools.cache
def authenticator() -> Authenticator:
    return Authenticator(store(), get_settings().token_ttl_seconds)


def caller(app: APIGatewayRestResolver) -> Principal:
    """The principal behind the current request's Authorization header (Bearer or Basic)."""
    return authenticator().authenticate(app.current_event.headers.get("authorization"))


@functools.cache
def service() -> IdentityService:
    return IdentityService(store(), _kind_changed)


def _kind_changed(workspace_id: str, kind: str) -> None:
    """The activation context keeps the stops of a workspace's active flows in step with its kind."""
    from flowgate import activation

    activation.service().kind_changed(workspace_id, kind)
