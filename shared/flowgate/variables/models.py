"""Run-time variables: the request body of their API and the resource it returns.

A variable's value is plain text, not a secret: it is shown by the API and substituted into what is
recorded (a connection's inputs). Secrets belong in the connectors' vault.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

MAX_VALUE_CHARS = 4096
MAX_DESCRIPTION_CHARS = 1024


class PutVariableRequest(BaseModel):
    """`PUT .../variables/{name}`: create or replace a workspace variable."""

    model_config = ConfigDict(extra="forbid")

    value: Annotated[str, StringConstraints(max_length=MAX_VALUE_CHARS)]
    description: Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION_CHARS)] | None = None


class Variable(BaseModel):
    """A workspace variable as the API returns it; `version` counts the puts that changed it."""

    name: str
    value: str
    description: str | None = None
    version: int
    created_at: str
    updated_at: str
    updated_by: str | None = None
