"""The one rule for the names of workspace artifacts (flows, connectors, secrets, ...)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

# No leading dot, so "." and ".." can never be a path segment.
NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"
NAME = re.compile(NAME_PATTERN)
ArtifactName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
