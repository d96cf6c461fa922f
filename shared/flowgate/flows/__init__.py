"""The flows context: flows, executions, and the runner that executes them in the sandbox.

`service()` and `execution_runner()` are the composition root: built once per container from settings.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from flowgate.config import get_settings
from flowgate.db import Table
from flowgate.flows.service import FlowService, KindRetention
from flowgate.flows.store import FlowStore

if TYPE_CHECKING:
    from flowgate.flows.runner import Runner


@functools.cache
def store() -> FlowStore:
    return FlowStore(Table(get_settings().table_name))


@functools.cache
def service() -> FlowService:
    from flowgate import identity
    from flowgate.queue import ExecutionQueue

    settings = get_settings()
    retention = KindRetention(
        {
            "limited": settings.execution_retention_days_limited,
            "full": settings.execution_retention_days_full,
        },
        lambda wsid: (identity.store().get_workspace(wsid) or {}).get("kind"),
        store(),
        {"limited": settings.max_stored_executions_limited},
    )
    return FlowService(
        store(), identity.service(), ExecutionQueue(settings.execution_queue_url), retention, _is_active
    )


def _is_active(workspace_id: str, flow: str) -> bool:
    from flowgate import activation

    return activation.service().state_of(workspace_id, flow).status == "active"


@functools.cache
def execution_runner() -> Runner:
    """Named apart from the `runner` submodule, which importing it would bind over this function."""
    from flowgate import connectors
    from flowgate.flows.runner import Runner, RunnerConfig

    return Runner(store(), connectors.service(), RunnerConfig.from_settings(get_settings()), _task_done)


def _task_done(task_id: str, success: bool, message: str | None) -> None:
    """An operation task's jobs ended: the workflow context records the outcome on the task."""
    from flowgate import workflow

    workflow.service().jobs_finished(task_id, success, message)
