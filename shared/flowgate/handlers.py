"""What every Lambda function's entry module shares: who is calling, and the SQS batch entry point.

This sits above the composition root (it reaches services through `flowgate.wiring`); the functions
under `functions/` are the only modules above it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowgate.observability import logger
from flowgate.wiring import container

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from flowgate.identity.ports import Principal

SqsHandler = Callable[[dict[str, Any], "LambdaContext"], "PartialItemFailureResponse"]


def caller(app: APIGatewayRestResolver) -> Principal:
    """The principal behind the current request's Authorization header (Bearer or Basic); HTTP Basic's
    password attempts are throttled by the caller's address, API Gateway's `identity.sourceIp`."""
    identity = (app.current_event.raw_event.get("requestContext") or {}).get("identity") or {}
    return container().authenticator.authenticate(
        app.current_event.headers.get("authorization"), identity.get("sourceIp")
    )


def sqs_batch(record_handler: Callable[[SQSRecord], None], *, fifo: bool = False) -> SqsHandler:
    """The Lambda handler of an SQS queue: each record through `record_handler`, failures reported as
    partial batch failures (the template's `FunctionResponseTypes: ReportBatchItemFailures`), so one bad
    record is retried alone and never holds back the others. On a FIFO queue, after a failure the rest
    of the batch goes back too, so no later message of the same group overtakes it.

    powertools' batch utilities load here, not when the module is imported: REST functions never pay
    for them (~40 ms of cold start)."""
    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        SqsFifoPartialProcessor,
        process_partial_response,
    )

    processor = SqsFifoPartialProcessor() if fifo else BatchProcessor(event_type=EventType.SQS)

    @logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )

    return handler
