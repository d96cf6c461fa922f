"""The AWS clients of a container, one per service, created on first use.

boto3 is imported only when a route first needs AWS (it costs ~150 ms of cold start), and each client
is built once per container, however many adapters use it. Tests clear them with `reset()` after
switching to moto.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient


@functools.cache
def dynamodb() -> DynamoDBClient:
    import boto3

    return boto3.client("dynamodb")


@functools.cache
def sqs() -> SQSClient:
    import boto3

    return boto3.client("sqs")


@functools.cache
def secretsmanager() -> SecretsManagerClient:
    import boto3

    return boto3.client("secretsmanager")


@functools.cache
def stepfunctions() -> SFNClient:
    import boto3

    return boto3.client("stepfunctions")


@functools.cache
def events() -> EventBridgeClient:
    import boto3

    return boto3.client("events")


def reset() -> None:
    """Forget every client (tests, after the endpoint or credentials changed)."""
    for factory in (dynamodb, sqs, secretsmanager, stepfunctions, events):
        factory.cache_clear()
