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


class StringSecret:
    """One secret string at a fixed name (created on first put), e.g. a platform-wide signing key."""

    def __init__(self, secret_id: str, client: SecretsManagerClient | None = None) -> None:
        self.secret_id = secret_id
        self._client = client

    @property
    def client(self) -> SecretsManagerClient:
        return self._client or aws.secretsmanager()

    def get(self) -> str | None:
        try:
            return self.client.get_secret_value(SecretId=self.secret_id)["SecretString"]
        except self.client.exceptions.ResourceNotFoundException:
            return None

    def put(self, value: str) -> None:
        client = self.client
        try:
            client.put_secret_value(SecretId=self.secret_id, SecretString=value)
        except client.exceptions.ResourceNotFoundException:
            try:
                client.create_secret(Name=self.secret_id, SecretString=value)
            except client.exceptions.ResourceExistsException:  # created concurrently: ours is newer
                client.put_secret_value(SecretId=self.secret_id, SecretString=value)

    def delete(self) -> None:
        try:
            self.client.delete_secret(SecretId=self.secret_id, ForceDeleteWithoutRecovery=True)
        except self.client.exceptions.ResourceNotFoundException:
            return
