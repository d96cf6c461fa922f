"""AWS adapters behind the ports of active flows: the SQS FIFO message queue and EventBridge."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flowgate import aws
from flowgate.messages import FlowMessageQueued

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_sqs import SQSClient


class SqsFifoMessageQueue:
    """One message group per flow, so SQS hands a flow's messages over in order, one at a time; the
    deduplication id is the message id, so a retried send does not queue it twice."""

    def __init__(self, url: str, client: SQSClient | None = None) -> None:
        self.url = url
        self._injected = client

    def send(self, workspace_id: str, flow: str, message_id: str) -> None:
        if not self.url:  # each function gets only the variables it uses (template.yaml)
            raise RuntimeError("MESSAGE_QUEUE_URL is not set in this function's environment")
        body = FlowMessageQueued(workspace_id=workspace_id, flow=flow, message_id=message_id)
        (self._injected or aws.sqs()).send_message(
            QueueUrl=self.url,
            MessageBody=body.body(),
            MessageGroupId=f"{workspace_id}#{flow}",
            MessageDeduplicationId=message_id,
        )


class EventBridgePublisher:
    def __init__(self, bus_name: str = "default", source: str = "flowgate", client: Any = None) -> None:
        self.bus_name = bus_name
        self.source = source
        self._injected: EventBridgeClient | None = client

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        answer = (self._injected or aws.events()).put_events(
            Entries=[
                {
                    "Source": self.source,
                    "DetailType": detail_type,
                    "Detail": json.dumps(dict(detail)),
                    "EventBusName": self.bus_name,
                }
            ]
        )
        if answer.get("FailedEntryCount"):
            raise RuntimeError(f"EventBridge refused the event: {answer.get('Entries')}")
