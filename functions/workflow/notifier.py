"""Approval notifier function: consumes the approval state machine's queue (SQS).

`held` messages become signed webhooks to the workflow tool once every task of a request is held;
`timed_out` messages apply the enterprise's default action. A record that fails (the endpoint is
down) is reported as a partial batch failure, so SQS brings it back later.
"""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from flowgate.observability import logger
from flowgate.workflow.notifier import ApprovalMessage, Notifier, build_notifier

processor = BatchProcessor(event_type=EventType.SQS)


@functools.cache
def notifier() -> Notifier:
    return build_notifier()


def record_handler(record: SQSRecord) -> None:
    message = ApprovalMessage.model_validate_json(record.body)
    logger.append_keys(task_id=message.task_id, request_id=message.request_id, approval_event=message.event)
    notifier().handle(message, int(record.attributes.approximate_receive_count))


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
