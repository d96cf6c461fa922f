"""Message processor function: runs each message of an active flow as an execution of that flow.

The queue is FIFO with one message group per flow, so a flow's messages run in order of arrival, one
at a time. A message whose execution fails is reported as a batch failure and retried after a short,
doubling delay; after the queue's maxReceiveCount it goes to the dead-letter queue (and is marked
failed, visibly).
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from flowgate import sandbox
from flowgate.handlers import backoff, sqs_batch
from flowgate.messages import FlowMessageQueued
from flowgate.observability import logger
from flowgate.wiring import container

sandbox.harden_current_process()  # non-dumpable, and the warm fork server (which never sees a credential)


def record_handler(record: SQSRecord) -> None:
    message = FlowMessageQueued.model_validate_json(record.body)
    logger.append_keys(workspace_id=message.workspace_id, flow=message.flow, message_id=message.message_id)
    container().activation.process_message(
        message.workspace_id,
        message.flow,
        message.message_id,
        int(record.attributes.approximate_receive_count),
    )


# FIFO: after a failure the rest of the batch goes back too, so no later message of the flow overtakes it;
# they come back after a doubling delay (2 s, 4 s, ...) rather than the queue's 16-minute visibility timeout.
handler = sqs_batch(
    record_handler,
    fifo=True,
    retry_delay=backoff(),
    queue_url=lambda: container().activation_settings.message_queue_url,
)
