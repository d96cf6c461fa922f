"""Sync configs (DESIGN §3.2, seed 000): the request that sets one and the view the API shows.

The seed's fields keep their names. Beyond the seed: `role` (which side runs flows in the other; by
default the side with a `remote_url` controls, as in the seed, but a controlled workspace behind NAT may
be the one that dials out), `allowed_flows` (what the peer may run here), and a second remote key with
`rotation_ends_at` for key rotation without a failed exchange.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from flowgate.names import ArtifactName

STRICT = ConfigDict(extra="forbid")
MAX_PEM_CHARS = 16_384
MAX_URL_CHARS = 2048
MAX_SYNC_INTERVAL = 86_400
Pem = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PEM_CHARS)]
SyncConfigName = ArtifactName


class SyncRole(StrEnum):
    CONTROLLING = "controlling"  # runs flows in the peer's workspace and may mirror its executions there
    CONTROLLED = "controlled"  # runs what the peer sends (within `allowed_flows`)


class PutSyncConfigRequest(BaseModel):
    """A sync config. On a change, a key left out keeps its stored value (keys are never shown)."""

    model_config = STRICT
    enabled: bool = True
    remote_url: Annotated[str, StringConstraints(min_length=1, max_length=MAX_URL_CHARS)] | None = None
    ca_certificate: Pem | None = None
    verify_ssl: bool = True
    own_private_key: Pem | None = None
    remote_public_key: Pem | None = None
    remote_public_key_next: Pem | None = Field(
        default=None, description="the peer's next key during a rotation: both verify until rotation_ends_at"
    )
    rotation_ends_at: str | None = Field(
        default=None, description="when the current remote key retires and remote_public_key_next replaces it"
    )
    send_all_executions: bool = False
    sync_interval: Annotated[int, Field(ge=1, le=MAX_SYNC_INTERVAL)] | None = None
    role: SyncRole | None = Field(
        default=None,
        description="controlling or controlled; by default controlling when remote_url is set (the seed)",
    )
    allowed_flows: Annotated[list[ArtifactName], Field(max_length=100)] | None = Field(
        default=None, description="the flows the peer may run here (a controlled config); unset: any"
    )
    description: Annotated[str, StringConstraints(max_length=1024)] | None = None


class LinkHealth(BaseModel):
    last_success_at: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    backlog: int = 0  # messages waiting for the peer
    peer_key_fingerprint: str | None = None  # the key that signed the peer's last verified message


class SyncConfig(BaseModel):
    id: str
    workspace_id: str
    name: str
    description: str | None = None
    enabled: bool
    role: SyncRole
    dials_out: bool  # this side opens the exchanges (it has a remote_url)
    remote_url: str | None = None
    inbound_path: str  # where the peer reaches this config, when the peer dials
    ca_certificate: str | None = None
    verify_ssl: bool
    own_key_fingerprint: str
    own_public_key: str  # the public half of own_private_key: what the peer's remote_public_key is
    remote_key_fingerprint: str
    remote_key_next_fingerprint: str | None = None
    rotation_ends_at: str | None = None
    send_all_executions: bool
    sync_interval: int | None = None
    allowed_flows: list[str] | None = None
    health: LinkHealth
    created_at: str
    updated_at: str
    version: int
