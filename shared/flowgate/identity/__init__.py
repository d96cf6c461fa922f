"""The identity context: login and tokens, contracts, members, roles, workspaces and their access.

`authenticator()` and `service()` are the composition root: built once per container from settings.
"""

from __future__ import annotations

import functools

from flowgate.config import get_settings
from flowgate.db import Table
from flowgate.identity.auth import Authenticator
from flowgate.identity.service import IdentityService
from flowgate.identity.store import IdentityStore


@functools.cache
def store() -> IdentityStore:
    return IdentityStore(Table(get_settings().table_name))


@functools.cache
def authenticator() -> Authenticator:
    return Authenticator(store(), get_settings().token_ttl_seconds)


@functools.cache
def service() -> IdentityService:
    return IdentityService(store(), _kind_changed)


def _kind_changed(workspace_id: str, kind: str) -> None:
    """The activation context keeps the stops of a workspace's active flows in step with its kind."""
    from flowgate import activation

    activation.service().kind_changed(workspace_id, kind)
