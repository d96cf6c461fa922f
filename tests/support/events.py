"""Events as AWS delivers them to the functions, built by the local stack's own builders
(`devstack.events`): SQS batches from the messages received off the real (moto) queue, as Lambda's
poller hands them over, and the Scheduled Events of the template's schedules."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
from mypy_boto3_sqs.type_defs import MessageTypeDef

from devstack.events import SQS_MAX_BATCH, scheduled_event, sqs_event
from tests.support.template import stack_template, template_function


@dataclass(frozen=True)
class SqsQueue:
    """One queue of the account, read the way Lambda's SQS poller reads it."""

    url: str
    arn: str
    region: str

    @classmethod
    def at(cls, url: str) -> SqsQueue:
        """The queue at `url` (its ARN looked up once)."""
        sqs = boto3.client("sqs")
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
        return cls(url, attributes["QueueArn"], sqs.meta.region_name)

    def receive(self) -> list[MessageTypeDef]:
        """Every message now receivable (each then in flight), with the attributes the poller asks for."""
        sqs = boto3.client("sqs")
        out: list[MessageTypeDef] = []
        while True:
            got = sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=SQS_MAX_BATCH,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not got:
                return out
            out += got

    def records(self, messages: list[MessageTypeDef] | None = None) -> list[dict[str, Any]]:
        """The event records of `messages` (by default: every message now receivable)."""
        received = self.receive() if messages is None else messages
        records: list[dict[str, Any]] = sqs_event(received, self.arn, self.region)["Records"]
        return records

    def forged(self, body: str) -> dict[str, Any]:
        """A record with any body, as if someone had sent it to the queue and it came at first delivery."""
        return self.records([sqs_message(body)])[0]


def sqs_message(
    body: str, *, message_id: str | None = None, receipt_handle: str | None = None
) -> MessageTypeDef:
    """A message as ReceiveMessage returns it at its first delivery (system attributes included)."""
    sent = str(int(time.time() * 1000))
    return {
        "MessageId": message_id or str(uuid.uuid4()),
        "ReceiptHandle": receipt_handle or uuid.uuid4().hex,
        "Body": body,
        "MD5OfBody": hashlib.md5(body.encode()).hexdigest(),  # noqa: S324 - what SQS sends
        "Attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": sent,
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": sent,
        },
    }


def batch(*records: dict[str, Any]) -> dict[str, Any]:
    """The event of one batch of records."""
    return {"Records": list(records)}


def schedule_event(function_id: str, event_name: str | None = None) -> Any:
    """What the template's schedule (`event_name`, else the function's only one) delivers to the function."""
    schedules = [
        schedule
        for schedule in template_function(function_id).schedules
        if event_name is None or schedule.event_name == event_name
    ]
    if len(schedules) != 1:
        raise KeyError(f"{function_id} has {len(schedules)} schedules named {event_name or '(any)'}")
    return scheduled_event(schedules[0], stack_template().context)
