"""AWS adapters behind the ports of active flows: the SQS FIFO message queue, EventBridge, and the
flows runner that executes one message inline."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flowgate import aws
from flowgate.activation.models import MessageRun

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_sqs import SQSClient

# Version of the queue message body; the SQS handler rejects versions it does not know.
MESSAGE_BODY_VERSION = 1


class SqsFifoMessageQueue:
    """One message group per flow, so SQS hands a flow's messages over in order, one at a time; the
    deduplication id is the message id, so a retried send does not queue it twice."""

    def __init__(self, url: str, client: SQSClient | None = None) -> None:
        self.url = url
        self._injected = client

    def send(self, workspace_id: str, flow: str, message_id: str) -> None:
        body = {
            "version": MESSAGE_BODY_VERSION,
            "workspace_id": workspace_id,
            "flow": flow,
            "message_id": message_id,
        }
        (self._injected or aws.sqs()).send_message(
            QueueUrl=self.url,
            MessageBody=json.dumps(body),
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


class FlowMessageRunner:
    """Creates a flow execution with the message as its input and runs it inline (flows' runner)."""

    def run(
        self, workspace_id: str, flow: str, inputs: Mapping[str, Any], started_by: str, execution_id: str
    ) -> MessageRun:
        from flowgate import flows
        from flowgate.errors import Conflict, NotFound

        try:
            flows.service().create_flow_execution(
                workspace_id, flow, inputs, started_by, source="message", id=execution_id
            )
        except NotFound as exc:
            return MessageRun(None, False, exc.message)
        except Conflict:
            pass  # created by an attempt that died before running it: run that one (claimed once)
        flows.execution_runner().run_claimed(execution_id)
        return self.outcome(execution_id) or MessageRun(execution_id, False, "the execution did not end")

    def outcome(self, execution_id: str) -> MessageRun | None:
        from flowgate import flows
        from flowgate.flows.models import ExecutionStatus

        ended = flows.store().get_execution(execution_id)
        if ended is None or not ExecutionStatus(ended["status"]).final:
            return None
        if ended["status"] == ExecutionStatus.SUCCESS:
            return MessageRun(execution_id, True)
        return MessageRun(
            execution_id, False, ended.get("message") or f"the execution ended {ended['status']}"
        )
