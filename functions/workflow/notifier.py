"""Approval notifier function: consumes the approval state machine's queue (SQS).

`held` messages become signed webhooks to the workflow tool once every task of a request is held;
`continued` messages (a continue released the hold) start the task's jobs; `timed_out` messages apply
the enterprise's default action. A record that fails (the endpoint is down) is reported as a partial
batch failure, so SQS brings it back later.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from flowgate.handlers import sqs_batch
from flowgate.messages import ApprovalEvent
from flowgate.observability import logger
from flowgate.wiring import container


def record_handler(record: SQSRecord) -> None:
    message = ApprovalEvent.model_validate_json(record.body)
    logger.append_keys(task_id=message.task_id, request_id=message.request_id, approval_event=message.event)
    container().notifier.handle(message, int(record.attributes.approximate_receive_count))


handler = sqs_batch(record_handler)
