"""Connectors and vault secrets: the request bodies of their API and the resources it returns.

Request models forbid unknown fields. A secret's value is write-only: no model that leaves the domain
has a field for it (`SecretInfo` carries key names only).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from flowgate.connectors.values import MAX_VALUE_BYTES, parse_value
from flowgate.documents import storable
from flowgate.errors import BadRequest
from flowgate.names import ArtifactName  # one rule for every workspace artifact name

# Secrets Manager stores at most 64 KiB per secret string.
MAX_SECRET_BYTES = 64 * 1024
# A connector lists at most this many secrets: with one reference update per listed and per dropped
# secret, a replace stays inside one DynamoDB transaction (100 items).
MAX_SECRETS_PER_CONNECTOR = 32

STRICT = ConfigDict(extra="forbid")


class PutConnectorRequest(BaseModel):
    """`PUT .../connectors/{name}`: create or replace a connector."""

    model_config = STRICT

    type: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    # A YAML document (JSON is YAML too) holding a mapping of the type's inputs.
    value: Annotated[str, StringConstraints(max_length=MAX_VALUE_BYTES)]
    # Names of workspace vault secrets merged into the inputs, in this order, after the value.
    secrets: list[ArtifactName] = Field(default_factory=list, max_length=MAX_SECRETS_PER_CONNECTOR)
    description: Annotated[str, StringConstraints(max_length=1024)] | None = None

    @field_validator("value")
    @classmethod
    def _storable_value(cls, value: str) -> str:
        """The mapping the value holds is merged into execution inputs, which DynamoDB must hold: its
        numbers, keys and nesting are checked here (flowgate.documents); what YAML itself refuses is
        the service's 400 (`invalid_connector_value`) when it parses the value."""
        try:
            parsed = parse_value(value)
        except BadRequest:
            return value  # the service parses it again and answers why not
        storable(parsed)
        return value

    @field_validator("secrets")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for name in value:
            if name in seen:
                raise ValueError(f"the secret {name!r} is listed twice")
            seen.add(name)
        return value


class Connector(BaseModel):
    """A connector as the API returns it. `id` stays the same across replaces; `version` counts them."""

    id: str
    workspace_id: str
    name: str
    type: str
    value: str  # the YAML text as saved
    parsed: dict[str, Any]  # the mapping it holds
    secrets: list[str]
    description: str | None = None
    version: int
    created_at: str
    updated_at: str
    created_by: str | None = None
    updated_by: str | None = None


class PutSecretRequest(BaseModel):
    """`PUT .../secrets/{name}`: create or replace a vault secret. The value is never returned."""

    model_config = STRICT

    value: dict[str, Any] = Field(repr=False)  # never in a log line, not even powertools' debug ones

    @field_validator("value")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("the secret must hold at least one key")
        try:
            text = json.dumps(value, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError):
            raise ValueError("the secret must be plain JSON data") from None
        if len(text.encode()) > MAX_SECRET_BYTES:
            raise ValueError(f"the secret is larger than {MAX_SECRET_BYTES // 1024} KiB")
        storable(value)  # its values become execution inputs: what DynamoDB can hold (flowgate.documents)
        return value


class SecretInfo(BaseModel):
    """What the API says about a vault secret: never its value, only the names of its keys."""

    name: str
    keys: list[str]
    version: int
    created_at: str
    updated_at: str
    used_by: list[str] = Field(default_factory=list)  # the connectors that list it
