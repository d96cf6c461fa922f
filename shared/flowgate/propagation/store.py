"""What the propagation context keeps in the table (docs/access-patterns.md, P1-P9): custom commands,
user groups and AWE folders (keyed by id, a name marker per name), a flow's folder, the admin API's
audit records and the propagation records, and saved targets (never a password)."""

from __future__ import annotations

from typing import Any

from flowgate.db import Item, Page, Table, Write


def named_key(wsid: str, prefix: str, item_id: str) -> dict[str, str]:
    """A site's resource kept here by id: COMMAND (custom commands), USERGROUP, AWEFOLDER."""
    return {"PK": f"WS#{wsid}", "SK": f"{prefix}#{item_id}"}


def name_key(wsid: str, prefix: str, name: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"{prefix}NAME#{name}"}


def folder_of_key(wsid: str, flow_id: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"FLOWFOLDER#{flow_id}"}


class PropagationStore:
    def __init__(self, table: Table) -> None:
        self.table = table

    # ---- custom commands, user groups, AWE folders (P1-P4): by id, one name marker per name ----
    def get_named(self, wsid: str, prefix: str, item_id: str) -> Item | None:
        key = named_key(wsid, prefix, item_id)
        return self.table.get(key["PK"], key["SK"])

    def get_many(self, wsid: str, prefix: str, ids: list[str]) -> list[Item]:
        return self.table.batch_get([(f"WS#{wsid}", f"{prefix}#{i}") for i in ids]) if ids else []

    def list_named(self, wsid: str, prefix: str, limit: int, cursor: str | None) -> Page:
        # `<prefix>NAME#` markers do not match `<prefix>#`.
        return self.table.query(f"WS#{wsid}", sk_prefix=f"{prefix}#", limit=limit, cursor=cursor)

    def save_named(self, prefix: str, item: Item, current: Item | None, *, label: str) -> None:
        """Create (`current` None) or replace it if still at `current`'s version; a new name takes its
        marker in the same transaction, so of two writers of one name exactly one wins."""
        wsid, name = item["workspace_id"], item["name"]
        key = named_key(wsid, prefix, item["id"])
        writes: list[Write] = []
        if current is None:
            writes.append(
                Write(
                    "Put",
                    item={**key, **item},
                    condition="attribute_not_exists(PK)",
                    conflict=f"the {label} {item['id']} was created by another request meanwhile",
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
                    conflict=f"the {label} was changed by another request; retry",
                )
            )
        if current is None or current["name"] != name:
            writes.append(
                Write(
                    "Put",
                    item={**name_key(wsid, prefix, name), "item_id": item["id"]},
                    condition="attribute_not_exists(PK)",
                    conflict=f"a {label} named '{name}' already exists in this site",
                )
            )
        if current is not None and current["name"] != name:
            writes.append(Write("Delete", key=name_key(wsid, prefix, current["name"])))
        self.table.transact(writes)

    def delete_named(self, prefix: str, current: Item, *, label: str) -> None:
        wsid = current["workspace_id"]
        self.table.transact(
            [
                Write(
                    "Delete",
                    key=named_key(wsid, prefix, current["id"]),
                    condition="#v = :v",
                    names={"#v": "version"},
                    values={":v": current["version"]},
                    stale_version=True,
                    conflict=f"the {label} was changed by another request; retry",
                ),
                Write("Delete", key=name_key(wsid, prefix, current["name"])),
            ]
        )

    # ---- an artifact's admin permissions (P10): not propagated, so kept beside the artifact ----
    def get_acl(self, wsid: str, type_: str, artifact_id: str) -> Item | None:
        return self.table.get(f"WS#{wsid}", f"ACL#{type_}#{artifact_id}")

    def get_acls(self, wsid: str, type_: str, ids: list[str]) -> dict[str, Item]:
        items = self.table.batch_get([(f"WS#{wsid}", f"ACL#{type_}#{i}") for i in ids]) if ids else []
        return {str(i["artifact_id"]): i for i in items}

    def put_acl(self, wsid: str, type_: str, artifact_id: str, fields: dict[str, Any]) -> None:
        key = {"PK": f"WS#{wsid}", "SK": f"ACL#{type_}#{artifact_id}"}
        if fields.get("inherited", True):
            self.table.transact([Write("Delete", key=key)])  # inherited is the absence of an ACL
            return
        self.table.put({**key, "artifact_id": artifact_id, **fields})

    # ---- a flow's AWE folder (P9): not propagated, so kept beside the flow, not in it ----
    def folder_of(self, wsid: str, flow_id: str) -> str | None:
        key = folder_of_key(wsid, flow_id)
        item = self.table.get(key["PK"], key["SK"])
        return str(item["folder_id"]) if item else None

    def set_folder(self, wsid: str, flow_id: str, folder_id: str | None) -> None:
        key = folder_of_key(wsid, flow_id)
        if folder_id is None:
            self.table.transact([Write("Delete", key=key)])
            return
        self.table.put({**key, "folder_id": folder_id})

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
