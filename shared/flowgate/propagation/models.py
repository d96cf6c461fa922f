"""The EFT-style admin API's resources (Fortra's EFT REST API, seed 004): JSON:API documents of the three
artifact kinds, their attributes with EFT's names and defaults, and the `propagate` call's params.

Attribute models forbid unknown fields (a field the artifact does not have is a 400, never stored) and
give every field its default, which is what a PUT's full representation means for a missing field.
"""

from __future__ import annotations

import base64
import binascii
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, field_validator

from flowgate.names import ArtifactName

STRICT = ConfigDict(extra="forbid", populate_by_name=True)
JSON_API = "application/vnd.api+json"
ROOT_FOLDER = "00000000-0000-0000-0000-000000000000"
# An artifact's id: a UUID in its 8-4-4-4-12 hex form (seed 004's ids, `...-000000000001`, included).
UUID_TEXT = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

Text = Annotated[str, StringConstraints(max_length=1024)]
LongText = Annotated[str, StringConstraints(max_length=4096)]


class LogLevel(StrEnum):
    NONE = "none"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"


class CustomCommandAttributes(BaseModel):
    """`customCommand`. `executable` and `logFileName` accept run-time variables (`%NAME%`)."""

    model_config = STRICT

    enabled: bool = True
    name: ArtifactName
    description: Text = ""
    executable: Text = ""
    parameters: LongText = ""
    redirectOutputToLog: bool = False
    useProcessTimeOut: bool = False
    processTimeOut: int = Field(default=60, ge=1, le=86400)
    logFileName: Text = ""
    redirectOutputToClient: bool = False
    useMinNumOfParams: bool = False
    minNumOfParams: int = Field(default=0, ge=0, le=100)
    minNumOfParamsMsg: Text = ""


def _base64_script(value: str) -> str:
    try:
        script = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("code is the flow's Python script, base64-encoded UTF-8") from None
    if not script.strip():
        raise ValueError("code holds an empty script")
    return value


class AweTaskAttributes(BaseModel):
    """`aweTask`: a flow. `code` is its script, base64 as EFT sends it; `logDirectory` accepts run-time
    variables, whose periods become underscores (seed 004). `created` is read-only (ignored on writes)."""

    model_config = STRICT

    name: ArtifactName
    created: str | None = Field(default=None, max_length=64)
    description: Text = ""
    useTimeout: bool = False
    timeout: int = Field(default=60, ge=1, le=86400)
    logLevel: LogLevel = LogLevel.INFO
    logDirectory: Text = ""
    retainSuccessfulLogs: bool = False
    retainFailedLogs: bool = True
    code: Annotated[str, StringConstraints(min_length=1, max_length=180_000)]

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        return _base64_script(value)

    @property
    def script(self) -> str:
        return base64.b64decode(self.code).decode("utf-8")


class ConnectionProfileAttributes(BaseModel):
    """`connectionProfile`: a connector. `connectionSettings` is its value (a mapping); `value` is the
    same as Flowgate's YAML text (kept verbatim when given, so a propagated copy is identical);
    `secrets` names the workspace's vault secrets it merges in (their values are never copied)."""

    model_config = STRICT

    type: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    name: ArtifactName
    description: Text = ""
    connectionSettings: dict[str, Any] = Field(default_factory=dict)
    value: Annotated[str, StringConstraints(max_length=64 * 1024)] | None = None
    secrets: list[ArtifactName] = Field(default_factory=list, max_length=32)


class UserGroupAttributes(BaseModel):
    """`userGroup`: a named set of the contract's members (by id); custom commands' execution
    permissions name user groups. Not propagated (seed 004)."""

    model_config = STRICT

    name: ArtifactName
    description: Text = ""
    members: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=100
    )


class AweFolderAttributes(BaseModel):
    """`aweFolder`: where AWE tasks are filed. Not propagated: a flow's folder stays the target's."""

    model_config = STRICT

    name: ArtifactName
    description: Text = ""


Permission = Literal["read", "write", "delete", "propagate"]
PERMISSIONS: tuple[Permission, ...] = ("read", "write", "delete", "propagate")


class AclEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    member: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    permissions: list[Permission] = Field(max_length=4)


class AclAttributes(BaseModel):
    """An artifact's admin permissions. `inherited` (the default): every administrator of the site may do
    everything, as for the site itself. Otherwise only the listed members may, each what is listed (the
    contract's owner always may, so an ACL never locks the contract out). Not propagated (seed 004)."""

    model_config = ConfigDict(extra="forbid")

    inherited: bool = True
    entries: list[AclEntry] = Field(default_factory=list, max_length=50)


class AclResource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["permissions"]
    id: Annotated[str, StringConstraints(max_length=64)] | None = None
    attributes: AclAttributes


class AclDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: AclResource


class Resource(BaseModel):
    """A JSON:API resource object as clients send it."""

    model_config = ConfigDict(extra="forbid")

    type: Annotated[str, StringConstraints(max_length=64)]
    id: Annotated[str, StringConstraints(max_length=64)] | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    relationships: dict[str, Any] | None = None


class ResourceDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: Resource
    links: dict[str, Any] | None = None


class AuthenticationRequest(BaseModel):
    """`POST /admin/v1/authentication`, as EFT clients send it (often without a JSON content type)."""

    model_config = ConfigDict(extra="ignore")

    userName: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    password: Annotated[SecretStr, Field(max_length=1024)]
    authType: Annotated[str, StringConstraints(max_length=32)] = "EFT"


class Target(BaseModel):
    """Where to propagate to: seed 004's four parameters."""

    model_config = ConfigDict(extra="forbid")

    targetEndpoint: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    targetSiteName: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    targetAdminUsername: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    targetAdminPassword: Annotated[SecretStr, Field(min_length=1, max_length=1024)]


class PropagateParams(Target):
    """The `propagate` call's params on an artifact (seed 004), plus Flowgate's `dryRun` and `saveTarget`."""

    dryRun: bool = False
    saveTarget: bool = False


ArtifactType = Literal["customCommand", "aweTask", "connectionProfile"]


class ArtifactRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: ArtifactType
    id: Annotated[str, StringConstraints(pattern=UUID_TEXT.pattern)]


MAX_BATCH_ARTIFACTS = 50
MAX_BATCH_TARGETS = 5


class PropagateManyParams(BaseModel):
    """`propagate` on a site's propagations (beyond EFT, which has no multiselect): many artifacts to one
    or several targets in one call, each item with its own result."""

    model_config = ConfigDict(extra="forbid")

    artifacts: list[ArtifactRef] = Field(min_length=1, max_length=MAX_BATCH_ARTIFACTS)
    targets: list[Target] = Field(min_length=1, max_length=MAX_BATCH_TARGETS)
    dryRun: bool = False
    saveTarget: bool = False
