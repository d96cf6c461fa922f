"""Use cases: continue or cancel a held task (`POST /api/object/task/{uuid}/action/{decision}`), and
the enterprise's default action when nobody decided in time.

A decision is one conditional write that only a QUEUEING, undecided task with its token as read can
take, so of concurrent continue and cancel exactly one wins; only the winner sends the token call
(SendTaskSuccess). A continue then answers at once (202, PENDING): the approval state machine, resumed
by that call, hands the task to the notifier, which starts the jobs (flowgate.workflow.jobs). So a
continue costs three AWS calls after authentication: GetItem, TransactWriteItems, SendTaskSuccess.
A decision that lands before the hold reported its token is released by `record_token` when the token
arrives (flowgate.workflow.announcements), and the state machine goes on from there just the same.

Nothing is lost when the follow-through fails: a token call that fails starts the jobs here instead;
a continue whose invocation died before its token call is finished by a repeat after the lease, or
by the hold's timeout, which finds the continue decided and the jobs not started.
"""

from __future__ import annotations

from flowgate.clock import Clock, epoch_ms
from flowgate.errors import Conflict, FlowgateError, Gone, NotFound
from flowgate.identity.ports import Principal
from flowgate.observability import count, logger
from flowgate.workflow import rules
from flowgate.workflow.common import CHANGE_ATTEMPTS, decision_message, decision_of
from flowgate.workflow.jobs import TaskJobs
from flowgate.workflow.models import Decision, DecisionOutcome, Task, TaskState
from flowgate.workflow.ports import Holds
from flowgate.workflow.rules import SYSTEM, Usage
from flowgate.workflow.store.records import Attempt, AuditEntry, TaskRecord, Verdict
from flowgate.workflow.store.tasks import TaskStore

# Longer than the workflow function's timeout: a won continue still PENDING after this lost its runner.
FOLLOW_THROUGH_LEASE_MS = 60_000


class Decisions:
    def __init__(self, tasks: TaskStore, holds: Holds, jobs: TaskJobs, clock: Clock) -> None:
        self.tasks = tasks
        self.holds = holds
        self.jobs = jobs
        self.clock = clock

    def decide(
        self, principal: Principal, task_id: str, decision: str, message: str | None, source_ip: str
    ) -> DecisionOutcome:
        """Answers 202 when a continue wins (the jobs start next), 200 when a cancel wins or the same
        decision was already recorded; 410 when the other decision was; 409 when the task was never
        held. Every attempt on an existing task is audited, refused ones too."""
        wanted = decision_of(decision)
        text = decision_message(message)
        for _ in range(CHANGE_ATTEMPTS):
            record = self.tasks.get(task_id)
            if record is None:
                logger.info("decision on an unknown task", extra={"task_id": task_id})
                raise NotFound("task not found")
            attempt = Attempt.now(
                principal.user_id,
                principal.username,
                source_ip=source_ip,
                decision=wanted,
                message=text,
                at=self.clock(),
            )
            try:
                _check_decidable(principal, record, wanted)
            except NotFound:
                raise  # another enterprise: it writes nothing into this tenant's audit
            except FlowgateError as exc:
                self.tasks.append_audit(task_id, attempt.ended(exc.status, exc.message))
                raise
            if record.decision == wanted:
                self.tasks.append_audit(task_id, attempt.ended(200, "already decided the same way"))
                if self._follow_through_lost(record):
                    # the winner's invocation died between the decision and its token call: finish it now
                    return DecisionOutcome(200, self._finish_lost(record))
                return DecisionOutcome(200, record.task())
            status = 202 if wanted == Decision.CONTINUE else 200
            outcome = "continued: the jobs start" if wanted == Decision.CONTINUE else "cancelled"
            verdict = Verdict(wanted, principal.username, principal.user_id, self._now_ms(), message=text)
            decided = self._leave_queue(record, verdict, attempt.ended(status, outcome))
            if decided is not None:
                count("ApprovalsContinued" if wanted == Decision.CONTINUE else "ApprovalsCancelled")
                return DecisionOutcome(status, self._after_decision(decided))
        raise Conflict("the task kept changing while deciding it; retry", code="decision_conflict")

    def time_out(self, task_id: str) -> Task:
        """Nobody decided in time: the enterprise's default action, as the system, with the reason in
        `extradata["workflow"]`. A task already decided is left as it is, except a continue whose jobs
        never started (its token call failed, or its invocation died): they start now."""
        for _ in range(CHANGE_ATTEMPTS):
            record = self.tasks.get(task_id)
            if record is None:
                raise NotFound("task not found")
            if record.decision or record.state != TaskState.QUEUEING:
                if record.decision == Decision.CONTINUE and record.awaits_jobs:
                    logger.info("a continue's jobs start at its hold's timeout", extra={"task_id": task_id})
                    return self.jobs.start(record)
                return record.task()
            action = record.timeout_action
            decision = Decision(action.value)
            reason = rules.timeout_reason(action, record.timeout_seconds)
            verdict = Verdict(decision, SYSTEM, SYSTEM, self._now_ms(), timed_out=True, message=reason)
            attempt = Attempt.now(
                SYSTEM, SYSTEM, source_ip="", decision=decision, message=reason, at=self.clock()
            )
            decided = self._leave_queue(record, verdict, attempt.ended(200, reason))
            if decided is not None:
                count("ApprovalsTimedOut")
                return self._after_decision(decided)
        raise Conflict("the task kept changing while timing it out; retry", code="decision_conflict")

    # ---- the decision's write and its follow-through ----
    def _now_ms(self) -> int:
        return epoch_ms(self.clock())

    def _leave_queue(self, record: TaskRecord, verdict: Verdict, audit: AuditEntry) -> TaskRecord | None:
        """The one conditional write of a decision; None when another request changed the task first."""
        cont = verdict.decision == Decision.CONTINUE
        try:
            return self.tasks.leave_queue(
                record,
                TaskState.PENDING if cont else TaskState.CANCELLED,
                verdict,
                vm_state=rules.RUNNING_STATE[record.operation] if cont else record.previous_vm_state,
                vm_task_kept=cont,
                release=Usage() if cont else record.reserved,
                audit=audit,
            )
        except Conflict:
            return None

    def _after_decision(self, decided: TaskRecord) -> Task:
        """The winner's follow-through: the one token call. The state machine it resumes starts the jobs
        of a continue; a timeout's jobs (its hold has ended) and those of a continue whose token call
        failed start here."""
        released = self._release(decided)
        logger.info("task decided", extra={"task_id": decided.id, "decision": str(decided.decision)})
        if decided.decision == Decision.CONTINUE and (decided.timed_out or not released):
            return self.jobs.start(decided)
        return decided.task()

    def _release(self, decided: TaskRecord) -> bool:
        """Send the token call if the hold has reported its token (else `record_token` will); False when
        it failed: the decision stands, and a hold left waiting times out and finds it decided."""
        if not decided.token:
            return True
        try:
            self.holds.release(decided.token, decided.release_decision)
        except Exception:
            logger.exception("releasing the hold failed", extra={"task_id": decided.id})
            return False
        return True

    def _follow_through_lost(self, record: TaskRecord) -> bool:
        """A won continue whose jobs never started, long after the winner's invocation must have ended
        (so a repeat arriving while the winner still works sends no second token call)."""
        return (
            record.decision == Decision.CONTINUE
            and record.awaits_jobs
            and self._now_ms() - (record.decided_at or 0) > FOLLOW_THROUGH_LEASE_MS
        )

    def _finish_lost(self, record: TaskRecord) -> Task:
        """The token call again (harmless if it got through: the token is then used up), and the jobs."""
        self._release(record)
        return self.jobs.start(record)


def _check_decidable(principal: Principal, record: TaskRecord, wanted: Decision) -> None:
    rules.check_decision(principal, record.contract_id, record.user_id, wanted)
    if record.decision and record.decision != wanted:
        raise Gone(
            rules.already_decided(
                record.decision,
                str(record.decided_by),
                int(record.decided_at or 0),
                record.timed_out,
                wanted,
            ),
            code="task_decided",
        )
    if not record.decision and record.state != TaskState.QUEUEING:
        raise Conflict(
            f"the task is {record.state.value}: it was not held for review, so there is nothing to "
            f"{wanted.value}",
            code="task_not_held",
        )
