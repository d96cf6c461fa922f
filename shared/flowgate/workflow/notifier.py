"""The approval queue's consumer: what the approval state machine's messages turn into.

A `held` message carries one task's token. When every task of the operation request has its token,
the task DTO (or `{"collection": [...]}` for several) is POSTed to the workflow endpoint, signed with
Standard Webhooks headers so the tool can check it came from us. The `webhook-id` is the request id,
the same on every retry, so a receiver can drop duplicates. Delivery retries with jittered backoff;
when it still fails the failure is recorded on the tasks (they stay held and visible) and the message
goes back to the queue, whose redelivery is the longer-term retry. A `continued` message (the state
machine's next step after a continue released it) starts the task's jobs; a `timed_out` message
applies the enterprise's default action.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from flowgate.clock import now
from flowgate.messages import ApprovalEvent
from flowgate.observability import count, logger
from flowgate.url_guard import OutboundPolicy, guarded_session

DELIVERY_ATTEMPTS = 4
TIMEOUT_SECONDS = (5.0, 15.0)


class DeliveryFailed(Exception):
    """The workflow endpoint did not accept the webhook; the queue will bring the message back."""


class Tokens(Protocol):
    """flowgate.workflow.announcements.Announcements, as the notifier uses it."""

    def record_token(self, task_id: str, token: str) -> list[Any] | None: ...
    def tasks_to_deliver(self, request_id: str) -> list[Any]: ...
    def record_delivery(self, request_id: str, ok: bool, error: str | None, attempt: int) -> None: ...


class Timeouts(Protocol):
    """flowgate.workflow.decisions.Decisions, as the notifier uses it."""

    def time_out(self, task_id: str) -> Any: ...


class ApprovedJobs(Protocol):
    """flowgate.workflow.jobs.TaskJobs, as the notifier uses it."""

    def start_approved(self, task_id: str) -> Any: ...


@dataclass
class Notifier:
    tokens: Tokens
    timeouts: Timeouts
    jobs: ApprovedJobs
    endpoint: Callable[[], str | None]  # the workflow endpoint as the platform properties have it now
    signing_secret: Callable[[], str]
    policy: OutboundPolicy
    sleep: Callable[[float], None] | None = None  # tests shorten the backoff

    def handle(self, message: ApprovalEvent, receive_count: int = 1) -> None:
        if message.event == "timed_out":
            self.timeouts.time_out(message.task_id)
            return
        if message.event == "continued":
            self.jobs.start_approved(message.task_id)
            return
        if message.token is None:
            raise ValueError("a held message must carry its task token")
        ready = self.tokens.record_token(message.task_id, message.token)
        if ready is None and receive_count == 1:
            return  # other tasks of the request have not been held yet
        self.deliver(message.request_id, receive_count)

    def deliver(self, request_id: str, receive_count: int = 1) -> None:
        tasks = self.tokens.tasks_to_deliver(request_id)
        if not tasks:
            return  # decided, or delivered already
        endpoint = self.endpoint()
        if not endpoint:
            self.tokens.record_delivery(
                request_id, False, "no workflow endpoint is configured", receive_count
            )
            raise DeliveryFailed("no workflow endpoint is configured")
        dtos = [t.model_dump(mode="json", exclude_none=True) for t in tasks]
        body = json.dumps(dtos[0] if len(dtos) == 1 else {"collection": dtos})
        try:
            self._post(endpoint, request_id, body)
        except DeliveryFailed as exc:
            count("WebhookDeliveryFailures")
            self.tokens.record_delivery(request_id, False, str(exc), receive_count)
            raise
        self.tokens.record_delivery(request_id, True, None, receive_count)

    def _post(self, endpoint: str, request_id: str, body: str) -> None:
        from standardwebhooks.webhooks import Webhook
        from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

        signer = Webhook(self.signing_secret())
        session = guarded_session(self.policy)

        @retry(
            stop=stop_after_attempt(DELIVERY_ATTEMPTS),
            wait=wait_random_exponential(multiplier=0.5, max=8),
            retry=retry_if_exception_type(DeliveryFailed),
            sleep=self.sleep or time.sleep,
            reraise=True,
        )
        def attempt() -> None:
            moment = now()
            headers = {
                "Content-Type": "application/json",
                "webhook-id": request_id,
                "webhook-timestamp": str(int(moment.timestamp())),
                "webhook-signature": signer.sign(request_id, moment, body),
            }
            try:
                answer = session.post(
                    endpoint,
                    data=body.encode(),
                    headers=headers,
                    timeout=TIMEOUT_SECONDS,
                    allow_redirects=False,
                )
            except Exception as exc:  # network errors of any kind become one retryable failure
                raise DeliveryFailed(f"{type(exc).__name__}: could not reach the workflow endpoint") from exc
            if not 200 <= answer.status_code < 300:
                raise DeliveryFailed(f"the workflow endpoint answered {answer.status_code}")

        try:
            attempt()
        finally:
            session.close()
        logger.info("webhook delivered", extra={"request_id": request_id})
