"""Use cases: a task's jobs - starting them through the workspace's flow bound to the operation, and
their outcome.

Jobs start from three places: a request that was not held (at once), a continue (the approval state
machine, once the decision has released its hold, puts a `continued` event on the approval queue and
the notifier calls `start_approved`), and a timeout whose default action is continue. Starting twice is
harmless: the execution's id is derived from the task (`jobs_execution_id`), so every attempt names the
same execution and the flows context creates it once, and PENDING -> STARTED is a conditional write.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from flowgate.clock import Clock, epoch_ms
from flowgate.errors import Conflict, NotFound
from flowgate.observability import logger
from flowgate.workflow import rules
from flowgate.workflow.common import short
from flowgate.workflow.models import Decision, Operation, Task, TaskState
from flowgate.workflow.ports import Jobs
from flowgate.workflow.store.records import TaskRecord
from flowgate.workflow.store.tasks import TaskStore

# Names the executions that run tasks' jobs (uuid5 of the task id within it).
JOBS_NAMESPACE = uuid.UUID("4f0c1d2e-8a57-4d0b-9a39-5d1f0e7b6c21")


def jobs_execution_id(task_id: str) -> str:
    """The id of the execution that runs the jobs of `task_id`: the same on every attempt."""
    return str(uuid.uuid5(JOBS_NAMESPACE, task_id))


class TaskJobs:
    def __init__(self, tasks: TaskStore, jobs: Callable[[], Jobs], clock: Clock) -> None:
        self.tasks = tasks
        self._jobs = jobs  # built on first start: a continue's request never needs the flows context
        self.clock = clock

    @property
    def jobs(self) -> Jobs:
        return self._jobs()

    def start(self, record: TaskRecord) -> Task:
        """Run a PENDING task's jobs through its flow and record the execution (STARTED). A start that
        cannot be made ends the task ABORTED, with the VM back where it was and the resources given back."""
        execution_id = jobs_execution_id(record.id)
        try:
            self.jobs.start(record.task(), record.flow, execution_id)
        except Exception as exc:
            logger.exception("could not start the jobs of a task", extra={"task_id": record.id})
            return self._abort(record, f"could not start the jobs ({type(exc).__name__})")
        started = self.tasks.mark_started(record, execution_id, epoch_ms(self.clock()))
        if started is not None:
            return started.task()
        current = self.tasks.get(record.id)  # the jobs ended first, or another start won
        return (current or record).task()

    def start_approved(self, task_id: str) -> Task | None:
        """The approval state machine's `continued` event: the continued task's jobs, unless they started
        already (a redelivered event, a timeout or a repeated continue got there first)."""
        record = self.tasks.get(task_id)
        if record is None:
            logger.warning("a continued task does not exist", extra={"task_id": task_id})
            return None
        if record.decision != Decision.CONTINUE or not record.awaits_jobs:
            return record.task()
        return self.start(record)

    def _abort(self, record: TaskRecord, reason: str) -> Task:
        try:
            aborted = self.tasks.end(
                record,
                TaskState.ABORTED,
                at_ms=epoch_ms(self.clock()),
                note=reason,
                allowed_from=[TaskState.PENDING],
                vm_state=record.previous_vm_state,
                vm_size=None,
                release=record.reserved,
            )
        except Conflict:
            current = self.tasks.get(record.id)
            return (current or record).task()
        return aborted.task()

    def finished(self, task_id: str, success: bool, message: str | None) -> Task:
        """The jobs' execution ended: the task's final state and the VM's new one. A repeat is a no-op."""
        record = self.tasks.get(task_id)
        if record is None:
            raise NotFound("task not found")
        if record.state.final:
            return record.task()
        if record.state not in (TaskState.PENDING, TaskState.STARTED):
            raise Conflict(
                f"the task is {record.state.value}: its jobs have not started", code="task_not_started"
            )
        op = record.operation
        size: tuple[int, int] | None = None
        if success:
            to = TaskState.FINISHED_SUCCESSFULLY
            vm_state = rules.STATE_AFTER_SUCCESS[op]
            release = rules.given_back_on_success(op, record.cpu, record.ram, record.new_cpu, record.new_ram)
            if op == Operation.RECONFIGURE:
                size = (record.new_cpu or record.cpu, record.new_ram or record.ram)
        else:
            to = TaskState.FINISHED_UNSUCCESSFULLY
            vm_state = record.previous_vm_state
            release = record.reserved
        try:
            ended = self.tasks.end(
                record,
                to,
                at_ms=epoch_ms(self.clock()),
                note=short(message) if message else None,
                allowed_from=(TaskState.PENDING, TaskState.STARTED),
                vm_state=vm_state,
                vm_size=size,
                release=release,
            )
        except Conflict:
            return (self.tasks.get(task_id) or record).task()  # ended by a concurrent callback
        logger.info("task finished", extra={"task_id": task_id, "state": to.value})
        return ended.task()
