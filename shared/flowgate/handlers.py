"""The SQS entry point every queue function shares: powertools' batch processing with partial failures.

Import it before anything that loads pydantic (the SQS functions import it first, and `handlers`
sorts before `messages`): powertools' batch types import every parser event model (kafka, kinesis,
...) when pydantic is already loaded, ~30 ms of cold start for nothing. A test keeps it so.
REST functions use `flowgate.rest` instead and never load this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    SqsFifoPartialProcessor,
    process_partial_response,
)

from flowgate.observability import flushing_metrics, logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from mypy_boto3_sqs.type_defs import ChangeMessageVisibilityBatchRequestEntryTypeDef

SqsHandler = Callable[[dict[str, Any], "LambdaContext"], "PartialItemFailureResponse"]


# Seconds until the n-th failed delivery of a message comes back (n = its receive count).
RetryDelay = Callable[[int], int]
SQS_BATCH_LIMIT = 10  # entries per ChangeMessageVisibilityBatch


def backoff(base_seconds: int = 2, cap_seconds: int = 300) -> RetryDelay:
    """Doubling delays from `base_seconds` (2, 4, 8, ... s), never more than `cap_seconds`."""
    return lambda receive_count: min(cap_seconds, base_seconds * 2 ** max(0, receive_count - 1))


def sqs_batch(
    record_handler: Callable[[SQSRecord], None],
    *,
    fifo: bool = False,
    retry_delay: RetryDelay | None = None,
    queue_url: Callable[[], str] | None = None,
) -> SqsHandler:
    """The Lambda handler of an SQS queue: each record through `record_handler`, failures reported as
    partial batch failures (the template's `FunctionResponseTypes: ReportBatchItemFailures`), so one bad
    record is retried alone and never holds back the others. On a FIFO queue, after a failure the rest
    of the batch goes back too, so no later message of the same group overtakes it.

    With `retry_delay` (and the queue's `queue_url`), the failed records come back after that delay
    instead of the queue's visibility timeout (which must cover the function's timeout, so it is long):
    a failing message of a FIFO group then holds its group seconds, not a quarter of an hour, and after
    the queue's maxReceiveCount it still goes to the dead-letter queue."""

    processor = SqsFifoPartialProcessor() if fifo else BatchProcessor(event_type=EventType.SQS)
    if retry_delay is not None:
        # A batch that failed whole is answered as failures too (not raised), so its retry is shortened.
        processor.raise_on_entire_batch_failure = False

    @flushing_metrics
    @logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
        answer = process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
        if retry_delay is not None and queue_url is not None and answer.get("batchItemFailures"):
            _retry_sooner(event, answer, retry_delay, queue_url(), fifo)
        return answer

    return handler


def _retry_sooner(
    event: dict[str, Any], answer: PartialItemFailureResponse, delay: RetryDelay, queue_url: str, fifo: bool
) -> None:
    """Shorten the visibility of the failed records to their retry delay (best effort: if it fails,
    they come back after the queue's visibility timeout, as before).

    On a FIFO queue only the first failed record failed; the ones after it were handed back unprocessed
    and become visible at once: SQS delivers nothing more of a group while one of its messages is in
    flight, so they still wait for it, and then follow it in order."""
    from flowgate import aws

    failed = {item["itemIdentifier"] for item in answer["batchItemFailures"]}
    entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = []
    for n, record in enumerate(event.get("Records", [])):
        if record.get("messageId") not in failed:
            continue
        attempt = int(record.get("attributes", {}).get("ApproximateReceiveCount", 1))
        seconds = 0 if fifo and entries else delay(attempt)
        entries.append({"Id": str(n), "ReceiptHandle": record["receiptHandle"], "VisibilityTimeout": seconds})
    for start in range(0, len(entries), SQS_BATCH_LIMIT):
        chunk = entries[start : start + SQS_BATCH_LIMIT]
        try:
            result = aws.sqs().change_message_visibility_batch(QueueUrl=queue_url, Entries=chunk)
        except Exception:  # the retry still happens, only later
            logger.exception("could not shorten the retry delay of failed records")
            continue
        if result.get("Failed"):
            logger.warning("some retry delays were not shortened", extra={"failed": result["Failed"]})
