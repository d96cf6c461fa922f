"""Runner function: executes the executions queued by the flows and connectors functions (SQS).

Each record names one execution; the runner claims it with a conditional write, so duplicate
deliveries run it once. A record that cannot be processed is reported as a partial batch failure
and, after the queue's retries, lands in the dead-letter queue.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from flowgate import flows, sandbox
from flowgate.observability import logger

processor = BatchProcessor(event_type=EventType.SQS)
sandbox.harden_current_process()  # scripts must not read this process's credentials from /proc


class QueuedExecution(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: int
    execution_id: str
    workspace_id: str


def record_handler(record: SQSRecord) -> None:
    message = QueuedExecution.model_validate_json(record.body)
    logger.append_keys(execution_id=message.execution_id, workspace_id=message.workspace_id)
    flows.execution_runner().handle(message.execution_id)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
