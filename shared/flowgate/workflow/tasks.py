"""Use cases: reading a task (`GET /api/object/task/{uuid}`) and the audit of every attempt to decide
it (`GET /api/object/task/{uuid}/audit`). Another enterprise's task is not found (404)."""

from __future__ import annotations

from flowgate.errors import Forbidden, NotFound
from flowgate.identity.ports import Principal, WorkspaceAuthorizer
from flowgate.workflow import rules
from flowgate.workflow.models import AuditRecord, Task
from flowgate.workflow.store.records import TaskRecord
from flowgate.workflow.store.tasks import TaskStore

MAX_AUDIT_RECORDS = 500


class Tasks:
    def __init__(self, tasks: TaskStore, workspaces: WorkspaceAuthorizer) -> None:
        self.tasks = tasks
        self.workspaces = workspaces

    def _visible(self, principal: Principal, task_id: str) -> TaskRecord:
        record = self.tasks.get(task_id)
        if record is None or not (principal.platform_admin or principal.contract_id == record.contract_id):
            raise NotFound("task not found")
        return record

    def get_task(self, principal: Principal, task_id: str) -> Task:
        """The task's user, overseers, and whoever works in its workspace."""
        record = self._visible(principal, task_id)
        if principal.user_id != record.user_id and not rules.may_oversee(principal, record.contract_id):
            self.workspaces.authorize_workspace(principal, record.workspace_id)
        return record.task()

    def audit(self, principal: Principal, task_id: str) -> list[AuditRecord]:
        """Every attempt to decide the task, oldest first (WORKFLOW_OVERRIDE holders and tenant admins)."""
        record = self._visible(principal, task_id)
        if not rules.may_oversee(principal, record.contract_id):
            raise Forbidden("reading a task's audit needs WORKFLOW_OVERRIDE or a tenant admin role")
        return self.tasks.list_audit(task_id, MAX_AUDIT_RECORDS)
