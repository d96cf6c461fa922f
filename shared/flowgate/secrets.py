"""Secrets Manager adapter. Values are returned to the caller only; never logged."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from flowgate import aws
from flowgate.errors import BadRequest

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


def read_json_secret(secret_id: str, client: SecretsManagerClient | None = None) -> dict[str, Any]:
    raw = (client or aws.secretsmanager()).get_secret_value(SecretId=secret_id)["SecretString"]
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise BadRequest("the secret does not hold a JSON object")
    return value
