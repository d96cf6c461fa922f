"""What the connectors context needs of others: run-time variables (`%NAME%` in a connector's value).

The composition root (flowgate.wiring) plugs in the variables context's service.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class Variables(Protocol):
    """A workspace's run-time variables. Raises BadRequest `unknown_variable` naming the field and the
    variable when a reference has no value."""

    def check(self, wsid: str, fields: Mapping[str, str]) -> None:
        """Every variable each field's text names is a built-in or one of the workspace's."""
        ...

    def values(self, wsid: str, execution_id: str | None = None) -> dict[str, str]:
        """The workspace's variables and the built-ins (EXECUTION_ID only when given)."""
        ...

    def resolve(
        self, wsid: str, document: Mapping[str, Any], *, field: str = "value", execution_id: str | None = None
    ) -> dict[str, Any]:
        """`document` with every reference in its strings substituted (fields named `<field>.<path>`)."""
        ...
