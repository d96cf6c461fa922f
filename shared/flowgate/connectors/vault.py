"""The workspace vault: each secret's value lives in AWS Secrets Manager as one JSON secret named
`flowgate/<stage>/ws/<workspace_id>/<name>`.

Only values live here. What the API lists about secrets (key names, version, who uses them) is a
DynamoDB item kept by `ConnectorStore`, so listing needs no Secrets Manager call and no Scan, and the
name prefix lets the function's IAM policy cover exactly `flowgate/<stage>/ws/*`.

Values are returned to the connectors domain only (to merge them into a run), never logged, never in an
exception message. The boto3 client is created on first use, or injected (tests).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from flowgate import aws
from flowgate.errors import Conflict

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


class SecretValueMissing(Conflict):
    """The metadata says a secret exists but Secrets Manager has no value for it."""


class Vault:
    def __init__(self, stage: str, client: SecretsManagerClient | None = None) -> None:
        self.stage = stage
        self._client = client

    @property
    def client(self) -> SecretsManagerClient:
        return self._client or aws.secretsmanager()

    def secret_id(self, wsid: str, name: str) -> str:
        return f"flowgate/{self.stage}/ws/{wsid}/{name}"

    def put(self, wsid: str, name: str, value: dict[str, Any]) -> None:
        """Create the secret, or store a new version of it when it exists."""
        secret_id = self.secret_id(wsid, name)
        text = json.dumps(value, separators=(",", ":"))
        client = self.client
        try:
            client.put_secret_value(SecretId=secret_id, SecretString=text)
        except client.exceptions.ResourceNotFoundException:
            try:
                # No tags: tagging would need secretsmanager:TagResource too; the name prefix scopes IAM.
                client.create_secret(
                    Name=secret_id, SecretString=text, Description="Flowgate workspace vault secret"
                )
            except client.exceptions.ResourceExistsException:
                # Created by a concurrent put between our two calls: ours becomes the newer version.
                client.put_secret_value(SecretId=secret_id, SecretString=text)

    def get(self, wsid: str, name: str) -> dict[str, Any]:
        """The secret's value (internal: for merging into a run only)."""
        client = self.client
        try:
            raw = client.get_secret_value(SecretId=self.secret_id(wsid, name))
        except client.exceptions.ResourceNotFoundException:
            raise SecretValueMissing(f"the vault secret '{name}' has no value; put it again") from None
        try:
            value = json.loads(raw["SecretString"])
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise SecretValueMissing(f"the vault secret '{name}' does not hold a mapping; put it again")
        return value

    def delete(self, wsid: str, name: str) -> None:
        """Delete at once (no recovery window), so a secret of the same name can be put right after.
        Deleting one that is already gone is not an error (a retried delete)."""
        client = self.client
        try:
            client.delete_secret(SecretId=self.secret_id(wsid, name), ForceDeleteWithoutRecovery=True)
        except client.exceptions.ResourceNotFoundException:
            return
