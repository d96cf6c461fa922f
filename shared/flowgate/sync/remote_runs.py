"""Use case: what the flows context asks of workspace links (flows.ports.Links).

A remote run goes out as a `run` message on the caller's own sync config; a cancel follows it; every
change of an execution that came from a link goes back to it as a `status`; and with
`send_all_executions` every execution of a controlling workspace goes out as a `mirror`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from flowgate.errors import Conflict, NotFound
from flowgate.sync.models import SyncRole
from flowgate.sync.outbox import Outbox
from flowgate.sync.protocol import Cancel, Mirror, Run, Status
from flowgate.sync.store import SyncStore

REPORTED = frozenset({"running", "success", "error", "cancelled"})
MIRRORED_FIELDS = (
    "id", "type", "status", "flow", "connector", "connector_type", "script", "inputs", "input_sources",
    "outputs", "message", "log", "log_truncated", "started_by", "created_at", "started_at", "ended_at",
    "duration_ms", "version",
)  # fmt: skip
MIRROR_CACHE_SECONDS = 5.0  # how long a container trusts its list of a workspace's mirroring links


class RemoteRuns:
    def __init__(self, store: SyncStore, outbox: Outbox, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self._mirrors: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def _config(self, workspace_id: str, name: str) -> dict[str, Any]:
        item = self.store.get(name)
        if item is None or item["workspace_id"] != workspace_id:
            raise NotFound(f"sync config '{name}' not found in this workspace")
        return item

    def check_link(self, workspace_id: str, name: str) -> str:
        item = self._config(workspace_id, name)
        if not item.get("enabled"):
            raise Conflict(f"the sync config '{name}' is disabled", code="link_disabled")
        if item.get("role") != SyncRole.CONTROLLING:
            raise Conflict(
                f"the sync config '{name}' is controlled: its peer runs flows here, not the other way round",
                code="link_controlled",
            )
        return str(item["id"])

    def send_run(self, execution: Mapping[str, Any]) -> None:
        name = execution["remote"]["sync_config"]
        config = self._config(execution["workspace_id"], name)
        self.outbox.add(
            config,
            Run(
                id=f"run:{execution['id']}",
                execution_id=execution["id"],
                flow=execution["flow"],
                script=execution["script"],
                inputs=execution.get("inputs") or {},
                started_by=str(execution.get("started_by") or ""),
            ),
        )

    def send_cancel(self, execution: Mapping[str, Any]) -> None:
        name = execution["remote"]["sync_config"]
        config = self._config(execution["workspace_id"], name)
        self.outbox.add(config, Cancel(id=f"cancel:{execution['id']}", execution_id=execution["id"]))

    def changed(self, execution: Mapping[str, Any]) -> None:
        origin = execution.get("origin")
        if origin:
            if not origin.get("mirrored") and execution.get("status") in REPORTED:
                self._report(execution, origin)
            return  # what came from a link is never mirrored back
        for config in self._mirroring(execution["workspace_id"]):
            self.outbox.add(config, mirror_of(execution))

    def _report(self, execution: Mapping[str, Any], origin: Mapping[str, Any]) -> None:
        config = self.store.get(origin["sync_config"])
        if config is None or config["workspace_id"] != execution["workspace_id"]:
            return  # the link was deleted: nobody to tell
        self.outbox.add(
            config,
            Status(
                id=f"status:{execution['id']}:{execution.get('version')}",
                execution_id=origin["execution_id"],
                remote_execution_id=execution["id"],
                status=execution["status"],
                outputs=execution.get("outputs") or {},
                message=execution.get("message"),
                log=list(execution.get("log") or []),
                log_truncated=bool(execution.get("log_truncated")),
                duration_ms=execution.get("duration_ms"),
            ),
        )

    def _mirroring(self, workspace_id: str) -> list[dict[str, Any]]:
        now = self.clock()
        with self._lock:
            cached = self._mirrors.get(workspace_id)
        if cached is not None and now - cached[0] < MIRROR_CACHE_SECONDS:
            return cached[1]
        found = [
            c
            for c in self.store.all_for_workspace(workspace_id)
            if c.get("enabled") and c.get("send_all_executions") and c.get("role") == SyncRole.CONTROLLING
        ]
        with self._lock:
            self._mirrors[workspace_id] = (now, found)
        return found


def mirror_of(execution: Mapping[str, Any]) -> Mirror:
    snapshot = {k: execution.get(k) for k in MIRRORED_FIELDS if execution.get(k) is not None}
    return Mirror(id=f"mirror:{execution['id']}:{execution.get('version')}", execution=snapshot)
