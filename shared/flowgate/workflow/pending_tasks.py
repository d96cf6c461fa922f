"""Use case: an enterprise's held tasks, newest first, filterable
(`GET /api/admin/enterprises/{id}/action/pendingtasks` for WORKFLOW_OVERRIDE holders and tenant
admins, `.../users/{uid}/action/pendingtasks` also for that user). One Query of a sparse index
partition that holds only that enterprise's (or user's) held tasks."""

from __future__ import annotations

from datetime import datetime

from flowgate.errors import BadRequest, NotFound
from flowgate.identity.ports import Directory, Principal
from flowgate.workflow import rules
from flowgate.workflow.common import list_limit, moment, one_of
from flowgate.workflow.models import Task, TaskType
from flowgate.workflow.store.tasks import TaskStore


class PendingTasks:
    def __init__(self, tasks: TaskStore, directory: Directory) -> None:
        self.tasks = tasks
        self.directory = directory

    def pending_tasks(
        self,
        principal: Principal,
        cid: str,
        *,
        user_id: str | None = None,
        type: str | None = None,
        vm: str | None = None,
        since: int | datetime | None = None,
        until: int | datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Task], str | None]:
        """Held tasks of an enterprise (or of one of its users), newest first; `since`/`until` are
        inclusive bounds on the creation time (epoch milliseconds or datetimes)."""
        rules.check_oversight(principal, cid, user_id)
        if self.directory.find_contract(cid) is None:
            raise NotFound("enterprise not found")
        if user_id is not None:
            user = self.directory.find_member(user_id)
            if user is None or user.contract_id != cid:
                raise NotFound("user not found")
        operation = None
        if type:
            task_type = one_of(TaskType, type.upper(), "type", [t.value for t in TaskType])
            operation = task_type.value.lower()
        low, high = moment(since, "since"), moment(until, "until")
        if low and high and low > high:
            raise BadRequest("since is after until", code="invalid_request")
        records, nxt = self.tasks.pending(
            cid,
            user_id,
            since=low,
            until=high,
            task_type=operation,
            vm_id=vm,
            limit=list_limit(limit),
            cursor=cursor,
        )
        return [r.task() for r in records], nxt
