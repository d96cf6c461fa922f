"""SQS adapter: hands execution ids to the runner function."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from flowgate import aws

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class ExecutionQueue:
    def __init__(self, url: str, client: SQSClient | None = None) -> None:
        self.url = url
        self._injected = client

    def send(self, execution_id: str, workspace_id: str) -> None:
        body = json.dumps({"version": 1, "execution_id": execution_id, "workspace_id": workspace_id})
        (self._injected or aws.sqs()).send_message(QueueUrl=self.url, MessageBody=body)
