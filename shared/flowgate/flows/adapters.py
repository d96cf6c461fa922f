"""The SQS adapter behind the flows context's Queue port: hands pending executions to the runner."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowgate import aws
from flowgate.messages import ExecutionQueued

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class ExecutionQueue:
    def __init__(self, url: str, client: SQSClient | None = None) -> None:
        self.url = url
        self._injected = client

    def send(self, execution_id: str, workspace_id: str) -> None:
        if not self.url:  # each function gets only the variables it uses (template.yaml)
            raise RuntimeError("EXECUTION_QUEUE_URL is not set in this function's environment")
        body = ExecutionQueued(execution_id=execution_id, workspace_id=workspace_id).body()
        (self._injected or aws.sqs()).send_message(QueueUrl=self.url, MessageBody=body)
