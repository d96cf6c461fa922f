"""Sync sender function: opens the exchanges of the configs that dial out.

Two triggers: the SyncQueue (a config has messages for its peer: sent at once, or after its
sync_interval) and a schedule that keeps every dialing config's exchange going, so the work its peer
queued (results, runs for a controlled side behind NAT) comes back within a long poll. A failed
exchange is retried with a doubling delay; the messages stay in the outbox meanwhile, so nothing is lost
while the peer is down, and the peer applies each message once however often it arrives.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from flowgate.handlers import backoff, sqs_batch
from flowgate.messages import SyncDue
from flowgate.observability import flushing_metrics, logger
from flowgate.wiring import container


def record_handler(record: SQSRecord) -> None:
    message = SyncDue.model_validate_json(record.body)
    logger.append_keys(sync_config=message.sync_config)
    container().sync_sender.run(message.sync_config, poll_seconds=container().settings.sync_poll_seconds)


queue_handler = sqs_batch(
    record_handler,
    retry_delay=backoff(base_seconds=2, cap_seconds=300),
    queue_url=lambda: container().settings.sync_queue_url,
)


@flushing_metrics
@logger.inject_lambda_context(clear_state=True)
def sweep(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The schedule: an exchange for every enabled config that dials out (through the queue, so each
    runs, and retries, on its own)."""
    names = container().sync_sender.sweep()
    trigger = container().sync_outbox.trigger
    for name in names:
        trigger.exchange(name)
    logger.info("sync sweep", extra={"dialers": len(names)})
    return {"dialers": len(names)}


def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    """One function for both triggers: SQS records, or the schedule's event."""
    if event.get("Records"):
        return queue_handler(event, context)
    return sweep(event, context)
