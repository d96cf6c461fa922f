"""The AWS adapter behind the workflow context's Holds port: the Step Functions hold.

The hold is one named state machine execution per task (the name is the task id, so a retried start
is recognised), paused on an SQS task token. Releasing sends the one token call; a token that was
already used answers InvalidToken on moto and TaskTimedOut on AWS, and both mean "already released".
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from flowgate import aws
from flowgate.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient


ALREADY_RELEASED = ("InvalidToken", "TaskTimedOut", "TaskDoesNotExist")


class StepFunctionsHolds:
    def __init__(self, state_machine_arn: str, client: SFNClient | None = None) -> None:
        self.state_machine_arn = state_machine_arn
        self._injected = client

    @property
    def client(self) -> SFNClient:
        return self._injected or aws.stepfunctions()

    def hold(self, task_id: str, request_id: str, timeout_seconds: int) -> None:
        payload = {"task_id": task_id, "request_id": request_id, "timeout_seconds": timeout_seconds}
        try:
            self.client.start_execution(
                stateMachineArn=self.state_machine_arn, name=task_id, input=json.dumps(payload)
            )
        except self.client.exceptions.ExecutionAlreadyExists:
            logger.info("the hold of this task already exists", extra={"task_id": task_id})

    def release(self, token: str, decision: str) -> None:
        try:
            self.client.send_task_success(taskToken=token, output=json.dumps({"decision": decision}))
        except self.client.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ALREADY_RELEASED:
                raise
            logger.info("the hold was already released", extra={"code": code})
