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
    return IdentityService(store())
