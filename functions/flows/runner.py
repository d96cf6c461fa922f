"""Runner function: executes the executions queued by the flows and connectors functions (SQS).

Each record names one execution; the runner claims it with a conditional write, so duplicate
deliveries run it once. A record that cannot be processed is reported as a partial batch failure
and, after the queue's retries, lands in the dead-letter queue.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from flowgate import sandbox
from flowgate.handlers import sqs_batch
from flowgate.messages import ExecutionQueued
from flowgate.observability import logger
from flowgate.wiring import container

sandbox.harden_current_process()  # non-dumpable, and the warm fork server (which never sees a credential)


def record_handler(record: SQSRecord) -> None:
    message = ExecutionQueued.model_validate_json(record.body)
    logger.append_keys(execution_id=message.execution_id, workspace_id=message.workspace_id)
    container().runner.handle(message.execution_id)


handler = sqs_batch(record_handler)
