"""Event sources moto does not run: EventBridge schedules and SQS event source mappings.

moto stores rules and queues but invokes nothing, so devstack fires the template's schedules and
polls its SQS event sources itself, with the payloads AWS sends and the delete semantics of the
Lambda SQS poller (partial batch failures included), so redrive to a dead-letter queue works as in AWS.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from mypy_boto3_sqs import SQSClient
from mypy_boto3_sqs.type_defs import MessageTypeDef

from devstack.lambdas import Invoke
from devstack.model import Schedule, SqsEventSource
from devstack.naming import StackContext

log = logging.getLogger(__name__)

SQS_MAX_BATCH = 10  # ReceiveMessage and DeleteMessageBatch take at most 10 messages
_POLL_WAIT_SECONDS = 1
_ERROR_BACKOFF_SECONDS = 1.0


def scheduled_event(schedule: Schedule, context: StackContext, now: datetime | None = None) -> Any:
    """What the rule (or scheduler schedule) delivers: its constant Input, else a Scheduled Event."""
    if schedule.input is not None:
        return json.loads(schedule.input)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": schedule.source,
        "account": context.account_id,
        "time": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": context.region,
        "resources": [schedule.resource_arn],
        # EventBridge rules send an empty object; EventBridge Scheduler sends it as a JSON string.
        "detail": {} if schedule.source == "aws.events" else "{}",
    }


def schedule_interval(schedule: Schedule, floor_seconds: float | None) -> float | None:
    """Seconds between firings: the rate, at most `floor_seconds` when set; None for cron/at alone."""
    intervals = [s for s in (schedule.interval_seconds, floor_seconds) if s is not None]
    return float(min(intervals)) if intervals else None


def sqs_event(messages: Sequence[MessageTypeDef], queue_arn: str, region: str) -> dict[str, Any]:
    """The event the Lambda SQS poller sends for a batch of received messages."""
    return {"Records": [_sqs_record(message, queue_arn, region) for message in messages]}


def _sqs_record(message: MessageTypeDef, queue_arn: str, region: str) -> dict[str, Any]:
    attributes: Mapping[str, Any] = message.get("MessageAttributes") or {}
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": {name: _message_attribute(value) for name, value in attributes.items()},
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    attribute: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues") or []),
        "binaryListValues": [b64(item) for item in value.get("BinaryListValues") or []],
        "dataType": value.get("DataType"),
    }
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = b64(value["BinaryValue"])
    return attribute


def receipts_to_delete(
    records: Sequence[Mapping[str, Any]], result: Any, report_batch_item_failures: bool
) -> list[str]:
    """Receipt handles of the messages a handler's result marks as processed (Lambda's rules).

    Without ReportBatchItemFailures a normal return processes the whole batch. With it, the messages
    named in `batchItemFailures` stay; a malformed or unknown itemIdentifier fails the whole batch.
    """
    handles = {record["messageId"]: record["receiptHandle"] for record in records}
    failures = (
        result.get("batchItemFailures") if report_batch_item_failures and isinstance(result, dict) else None
    )
    if not failures:
        return list(handles.values())
    failed_ids = {
        failure.get("itemIdentifier") if isinstance(failure, dict) else None for failure in failures
    }
    if not failed_ids <= handles.keys():
        log.warning(
            "batchItemFailures names unknown messages %s; the whole batch fails", failed_ids - handles.keys()
        )
        return []
    return [handle for message_id, handle in handles.items() if message_id not in failed_ids]


class EventSources:
    """Background threads that fire schedules and poll SQS event sources until stopped."""

    def __init__(self, invoke: Invoke, context: StackContext) -> None:
        self._invoke = invoke
        self._context = context
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start_schedules(self, schedules: Iterable[Schedule], floor_seconds: float | None) -> None:
        """Fire each schedule on its rate (at most every `floor_seconds` when set)."""
        for schedule in schedules:
            if not schedule.enabled:
                continue
            interval = schedule_interval(schedule, floor_seconds)
            if interval is None:
                log.warning(
                    "%s.%s: %r is not emulated locally; set FLOWGATE_LOCAL_SCHEDULE_SECONDS to fire it",
                    schedule.function_id,
                    schedule.event_name,
                    schedule.expression,
                )
                continue
            log.info("%s.%s fires every %gs", schedule.function_id, schedule.event_name, interval)
            self._spawn(
                f"schedule-{schedule.function_id}-{schedule.event_name}", self._every(interval, schedule)
            )

    def start_sqs_poller(
        self, source: SqsEventSource, client: SQSClient, queue_url: str, queue_arn: str
    ) -> None:
        """Poll `queue_url` and deliver batches to the source's function until stopped."""
        poller = SqsPoller(
            source,
            client=client,
            queue_url=queue_url,
            queue_arn=queue_arn,
            invoke=self._invoke,
            region=self._context.region,
        )

        def run() -> None:
            while not self._stop.is_set():
                try:
                    poller.poll_once()
                except Exception:
                    if self._stop.is_set():
                        return  # moto is going away with the stack
                    log.warning("%s: SQS call failed, retrying", source.function_id, exc_info=True)
                    self._stop.wait(_ERROR_BACKOFF_SECONDS)

        self._spawn(f"sqs-{source.function_id}-{source.event_name}", run)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask every thread to stop and wait for them (a running handler is not interrupted)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _every(self, interval: float, schedule: Schedule) -> Callable[[], None]:
        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self._invoke(schedule.function_id, scheduled_event(schedule, self._context))
                except Exception:
                    log.exception(
                        "%s.%s: the scheduled invocation failed", schedule.function_id, schedule.event_name
                    )

        return run

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"devstack-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)


class SqsPoller:
    """One SQS event source mapping: receive a batch, invoke, delete what succeeded."""

    def __init__(
        self,
        source: SqsEventSource,
        *,
        client: SQSClient,
        queue_url: str,
        queue_arn: str,
        invoke: Invoke,
        region: str,
    ) -> None:
        self.source = source
        self._client = client
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._invoke = invoke
        self._region = region

    def poll_once(self) -> None:
        """Receive at most one batch and deliver it; SQS errors propagate, handler errors do not."""
        messages = self._client.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=min(self.source.batch_size, SQS_MAX_BATCH),
            WaitTimeSeconds=_POLL_WAIT_SECONDS,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return
        event = sqs_event(messages, self._queue_arn, self._region)
        try:
            result = self._invoke(self.source.function_id, event)
        except Exception:
            # As in AWS: the batch becomes visible again after the visibility timeout, then redrives.
            log.exception("%s: SQS batch of %d failed", self.source.function_id, len(messages))
            return
        handles = receipts_to_delete(event["Records"], result, self.source.report_batch_item_failures)
        for start in range(0, len(handles), SQS_MAX_BATCH):
            chunk = handles[start : start + SQS_MAX_BATCH]
            self._client.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[{"Id": str(index), "ReceiptHandle": handle} for index, handle in enumerate(chunk)],
            )
