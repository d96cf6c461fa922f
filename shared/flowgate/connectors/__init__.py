"""The connectors context: connectors (a type plus a YAML value plus vault secret names), the workspace
vault, and connection runs (seed 003, DESIGN §3.5).

`service()` and `run_context()` are the composition root: built once per container from settings.
Importing this package is cheap (pydantic and the standard library): YAML, requests, dulwich and boto3
load only when a value is parsed, a call made or AWS reached.

The submodules are imported here, before `service()` is defined: importing `flowgate.connectors.service`
later would otherwise rebind the package attribute `service` from this function to that module.
"""

from __future__ import annotations

import functools

from flowgate.config import get_settings
from flowgate.connectors.runtime import ConnectorError, RunContext
from flowgate.connectors.service import ConnectorService, Prepared
from flowgate.connectors.store import ConnectorStore
from flowgate.connectors.vault import Vault
from flowgate.db import Table

__all__ = ["ConnectorError", "ConnectorService", "Prepared", "RunContext", "run_context", "service"]


@functools.cache
def run_context() -> RunContext:
    """This container's limits for connector runs: the outbound allow-list, local git in local mode."""
    return RunContext.from_settings(get_settings())


@functools.cache
def service() -> ConnectorService:
    settings = get_settings()
    return ConnectorService(ConnectorStore(Table(settings.table_name)), Vault(settings.stage), run_context())
