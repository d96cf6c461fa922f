"""Storage of run-time variables in the platform table. Keys are built here and nowhere else;
docs/access-patterns.md ("Run-time variables") lists the item and its access patterns."""

from __future__ import annotations

from typing import Any

from flowgate.db import Item, Page, Table, Write, versioned_update
from flowgate.variables.models import Variable

VARIABLE_PREFIX = "VAR#"
# One Query page of the listing that `check` and `values` read whole.
_PAGE = 100


def variable_key(wsid: str, name: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"{VARIABLE_PREFIX}{name}"}


def variable_from(item: Item) -> Variable:
    return Variable(
        name=item["name"],
        value=item["value"],
        description=item.get("description"),
        version=item["version"],
        created_at=item["created_at"],
        updated_at=item["updated_at"],
        updated_by=item.get("updated_by"),
    )


class VariableStore:
    def __init__(self, table: Table) -> None:
        self.table = table

    def get(self, wsid: str, name: str) -> Item | None:
        key = variable_key(wsid, name)
        return self.table.get(key["PK"], key["SK"])

    def page(self, wsid: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(f"WS#{wsid}", sk_prefix=VARIABLE_PREFIX, limit=limit, cursor=cursor)

    def all(self, wsid: str) -> list[Item]:
        """Every variable of the workspace (one Query, paged through)."""
        items: list[Item] = []
        cursor: str | None = None
        while True:
            page = self.page(wsid, _PAGE, cursor)
            items.extend(page.items)
            if page.next is None:
                return items
            cursor = page.next

    def create(self, item: Item) -> None:
        """Put a new variable; StaleVersion when one of that name was created meanwhile."""
        key = variable_key(item["workspace_id"], item["name"])
        self.table.transact(
            [
                Write(
                    "Put",
                    item={**key, "entity": "variable", **item},
                    condition="attribute_not_exists(PK)",
                    conflict=f"the variable '{item['name']}' was created by another request meanwhile",
                    stale_version=True,
                )
            ]
        )

    def replace(self, current: Item, changes: dict[str, Any]) -> None:
        """Apply `changes` if the variable is still at `current`'s version (StaleVersion otherwise)."""
        key = variable_key(current["workspace_id"], current["name"])
        conflict = f"the variable '{current['name']}' was changed by another request; reload it and retry"
        self.table.transact([versioned_update(key, changes, current["version"], conflict=conflict)])

    def delete(self, current: Item) -> None:
        """Delete the variable if it is still at `current`'s version (StaleVersion otherwise)."""
        self.table.transact(
            [
                Write(
                    "Delete",
                    key=variable_key(current["workspace_id"], current["name"]),
                    condition="#v = :expected",
                    names={"#v": "version"},
                    values={":expected": current["version"]},
                    conflict=f"the variable '{current['name']}' was changed by another request meanwhile",
                    stale_version=True,
                )
            ]
        )
