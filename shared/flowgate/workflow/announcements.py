"""Use cases: the holds' tokens, and announcing held tasks to the workflow tool.

Each hold (one approval state machine execution per task) puts its task token on the approval queue;
the notifier records it here. Once every task of an operation request has its token, exactly one
caller gets the tasks to announce (the webhook, flowgate.workflow.notifier), and each delivery attempt
is recorded on the tasks. A token that arrives after its task was decided is released at once with that
decision (nobody else would), and the state machine goes on as if the decision had come later.
"""

from __future__ import annotations

from flowgate.clock import Clock, epoch_ms, iso_ms
from flowgate.errors import Conflict, NotFound
from flowgate.workflow.common import CHANGE_ATTEMPTS, short
from flowgate.workflow.models import Task, TaskState
from flowgate.workflow.ports import Holds
from flowgate.workflow.store.records import TaskRecord
from flowgate.workflow.store.tasks import TaskStore


class Announcements:
    def __init__(self, tasks: TaskStore, holds: Holds, clock: Clock) -> None:
        self.tasks = tasks
        self.holds = holds
        self.clock = clock

    def record_token(self, task_id: str, token: str) -> list[Task] | None:
        """The hold of `task_id` is waiting on `token`. When that makes every task of its request held,
        the tasks to announce to the workflow tool, to exactly one caller; else None."""
        record = self.tasks.set_first_token(task_id, token)
        if record is not None:
            if record.decision:  # decided before its hold reported: release it now, nobody else will
                self.holds.release(token, record.release_decision)
        else:
            record = self._later_token(task_id, token)
        request = self.tasks.add_token_task(record.request_id, task_id)
        if request is None or not request.every_hold_reported:
            return None
        if not self.tasks.claim_notification(request.id, epoch_ms(self.clock())):
            return None
        return self.tasks_to_deliver(request.id) or None

    def _later_token(self, task_id: str, token: str) -> TaskRecord:
        """A token for a task that has one: the same one again (a redelivery, nothing to do) or a new one
        because the hold's wait ran again (it replaces the old one, or is released if decided)."""
        for _ in range(CHANGE_ATTEMPTS):
            current = self.tasks.get(task_id)
            if current is None:
                raise NotFound("task not found")
            if current.token == token:
                return current
            if current.decision:
                self.holds.release(token, current.release_decision)
                return current
            replaced = self.tasks.replace_token(task_id, str(current.token), token)
            if replaced is not None:
                return replaced
        raise Conflict("the task kept changing while recording its token; retry")

    def tasks_to_deliver(self, request_id: str) -> list[Task]:
        """The request's tasks the workflow tool still has to hear of: none until every hold has its
        token, then those still held whose webhook has not got through."""
        request = self.tasks.get_request(request_id)
        if request is None or not request.every_hold_reported:
            return []
        return [
            t.task()
            for t in self.tasks.get_many(request.task_ids)
            if t.state == TaskState.QUEUEING and not t.webhook_ok
        ]

    def record_delivery(self, request_id: str, ok: bool, error: str | None, attempt: int) -> None:
        """The last webhook attempt, on every task of the request (`extradata["webhook"]`): a task whose
        webhook never got through stays held, and shows why."""
        request = self.tasks.get_request(request_id)
        if request is None:
            return
        at = iso_ms(self.clock())
        if ok:
            text = f"delivered on attempt {attempt} at {at}"
        else:
            text = f"attempt {attempt} failed at {at}: {short(error) or 'unknown error'}"
        for task_id in request.task_ids:
            self.tasks.record_delivery(task_id, attempt, ok, text)
