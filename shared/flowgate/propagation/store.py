"""What the propagation context keeps in the table (docs/access-patterns.md, P1-P8): custom commands
(keyed by id, a name marker per name), the admin API's audit records and the propagation records, and
saved targets (never a password)."""

from __future__ import annotations

from typing import Any

from flowgate.db import Item, Page, Table, Write


def command_key(wsid: str, command_id: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"COMMAND#{command_id}"}


def command_name_key(wsid: str, name: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"COMMANDNAME#{name}"}


def _name_taken(name: str) -> str:
    return f"a custom command named '{name}' already exists in this site"


class PropagationStore:
    def __init__(self, table: Table) -> None:
        self.table = table

    # ---- custom commands (P1-P4) ----
    def get_command(self, wsid: str, command_id: str) -> Item | None:
        key = command_key(wsid, command_id)
        return self.table.get(key["PK"], key["SK"])

    def list_commands(self, wsid: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(f"WS#{wsid}", sk_prefix="COMMAND#", limit=limit, cursor=cursor)

    def save_command(self, item: Item, current: Item | None) -> None:
        """Create the command (`current` None) or replace it if still at `current`'s version; a new name
        takes its marker in the same transaction, so of two writers of one name exactly one wins."""
        wsid, name = item["workspace_id"], item["name"]
        key = command_key(wsid, item["id"])
        writes: list[Write] = []
        if current is None:
            writes.append(
                Write(
                    "Put",
                    item={**key, **item},
                    condition="attribute_not_exists(PK)",
                    conflict=f"the custom command {item['id']} was created by another request meanwhile",
                )
            )
        else:
            writes.append(
                Write(
                    "Put",
                    item={**key, **item},
                    condition="#v = :v",
                    names={"#v": "version"},
                    values={":v": current["version"]},
                    stale_version=True,
                    conflict="the custom command was changed by another request; retry",
                )
            )
        if current is None or current["name"] != name:
            writes.append(
                Write(
                    "Put",
                    item={**command_name_key(wsid, name), "command_id": item["id"]},
                    condition="attribute_not_exists(PK)",
                    conflict=_name_taken(name),
                )
            )
        if current is not None and current["name"] != name:
            writes.append(Write("Delete", key=command_name_key(wsid, current["name"])))
        self.table.transact(writes)

    def delete_command(self, current: Item) -> None:
        wsid = current["workspace_id"]
        self.table.transact(
            [
                Write(
                    "Delete",
                    key=command_key(wsid, current["id"]),
                    condition="#v = :v",
                    names={"#v": "version"},
                    values={":v": current["version"]},
                    stale_version=True,
                    conflict="the custom command was changed by another request; retry",
                ),
                Write("Delete", key=command_name_key(wsid, current["name"])),
            ]
        )

    # ---- records (P5-P6): the admin API's writes and the propagations, newest first ----
    def record(
        self, wsid: str, kind: str, *, at: str, record_id: str, fields: dict[str, Any], ttl: int
    ) -> None:
        self.table.put(
            {
                "PK": f"WS#{wsid}#{kind}",
                "SK": f"{at}#{record_id}",
                "id": record_id,
                "at": at,
                "ttl": ttl,
                **fields,
            },
            condition="attribute_not_exists(PK)",
        )

    def records(self, wsid: str, kind: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(f"WS#{wsid}#{kind}", limit=limit, cursor=cursor, newest_first=True)

    # ---- saved targets (P7-P8) ----
    def save_target(self, wsid: str, user_id: str, target_id: str, fields: dict[str, Any]) -> None:
        self.table.put(
            {"PK": f"WS#{wsid}#TARGETS", "SK": f"{user_id}#{target_id}", "id": target_id, **fields}
        )

    def targets(self, wsid: str, user_id: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(f"WS#{wsid}#TARGETS", sk_prefix=f"{user_id}#", limit=limit, cursor=cursor)
