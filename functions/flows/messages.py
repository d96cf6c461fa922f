"""Message processor function: runs each message of an active flow as an execution of that flow.

The queue is FIFO with one message group per flow, so a flow's messages run in order of arrival, one
at a time. A message whose execution fails is reported as a batch failure and retried; after the
queue's maxReceiveCount it goes to the dead-letter queue (and is marked failed, visibly).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from flowgate import activation, sandbox
from flowgate.observability import logger

# FIFO: after a failure the rest of the batch goes back too, so no later message of the flow overtakes it.
processor = SqsFifoPartialProcessor()
sandbox.harden_current_process()  # scripts must not read this process's credentials from /proc


class QueuedMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: int
    workspace_id: str
    flow: str
    message_id: str


def record_handler(record: SQSRecord) -> None:
    message = QueuedMessage.model_validate_json(record.body)
    logger.append_keys(workspace_id=message.workspace_id, flow=message.flow, message_id=message.message_id)
    activation.service().process_message(
        message.workspace_id,
        message.flow,
        message.message_id,
        int(record.attributes.approximate_receive_count),
    )


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
