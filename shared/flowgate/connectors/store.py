"""Storage of connectors and vault-secret metadata in the platform table. Keys are built here and nowhere
else; docs/access-patterns.md ("Connectors and vault secrets") lists every item and access pattern.

Each connector has an id marker, `WS#<wsid>`/`CONNECTORID#<id>` holding its name, written and deleted in
the same transaction as the connector: finding a connector by id is two consistent reads, and two
creates of one id (or of one name) cannot both succeed.

A secret's metadata item keeps `used_by_ids`, the set of the ids of the connectors that list it, updated
in the same transaction as the connector. So "the listed secrets exist" and "a secret in use cannot be
deleted" hold under concurrency: a connector save conditions on each added secret's item existing, and
a secret delete conditions on no connector using it. Ids, not names, so a rename touches only the secrets
it starts or stops listing. Connectors saved before the id markers (items without `marker`) are counted
by name in `used_by`; their next save or delete moves them to the id set (and writes their marker).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flowgate.connectors.models import Connector, SecretInfo
from flowgate.db import Item, Page, Table, Write, versioned_update

CONNECTOR_PREFIX = "CONNECTOR#"
MARKER_PREFIX = "CONNECTORID#"  # not under CONNECTOR#: listing connectors never reads a marker
SECRET_PREFIX = "SECRET#"  # noqa: S105 - a key prefix, not a password


def connector_key(wsid: str, name: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"{CONNECTOR_PREFIX}{name}"}


def marker_key(wsid: str, cid: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"{MARKER_PREFIX}{cid}"}


def secret_key(wsid: str, name: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"{SECRET_PREFIX}{name}"}


def connector_id_index(cid: str) -> str:
    """GSI1PK of a connector: finds it by id across workspaces (the id marker is the consistent way)."""
    return f"CONNECTOR#{cid}"


def connector_from(item: Item) -> Connector:
    return Connector(
        id=item["id"],
        workspace_id=item["workspace_id"],
        name=item["name"],
        type=item["type"],
        value=item["value"],
        parsed=json.loads(item["parsed_json"]),
        secrets=list(item.get("secrets", [])),
        description=item.get("description"),
        version=item["version"],
        created_at=item["created_at"],
        updated_at=item["updated_at"],
        created_by=item.get("created_by"),
        updated_by=item.get("updated_by"),
    )


def secret_info_from(item: Item, names: Mapping[str, str] | None = None) -> SecretInfo:
    """The secret as the API shows it; `names` maps connector ids to names (`ConnectorStore.user_names`)."""
    users = set(item.get("used_by", []))  # connectors saved before the id markers, by name
    users |= {names[cid] for cid in item.get("used_by_ids", []) if names and cid in names}
    return SecretInfo(
        name=item["name"],
        keys=list(item.get("keys", [])),
        version=item["version"],
        created_at=item["created_at"],
        updated_at=item["updated_at"],
        used_by=sorted(users),
    )


def _reference_writes(wsid: str, current: Item | None, item: Item | None) -> list[Write]:
    """The `used_by_ids` updates of a connector write: `current` is the connector before it (None for a
    create), `item` after it (None for a delete). A connector saved before the id markers is counted by
    name in `used_by`: its names are dropped in the same update (distinct paths, one write per item)."""
    old = list(current.get("secrets", [])) if current else []
    new = list(item.get("secrets", [])) if item else []
    legacy = current is not None and not current.get("marker")
    cid = (item or current or {})["id"]
    writes: list[Write] = []
    for name in dict.fromkeys([*new, *old]):
        parts, values = [], {}
        if name in new and (legacy or name not in old):
            parts.append("ADD used_by_ids :id")
            values[":id"] = {cid}
        if name in old and legacy:
            assert current is not None
            parts.append("DELETE used_by :name")
            values[":name"] = {current["name"]}
        elif name in old and name not in new:
            parts.append("DELETE used_by_ids :id")
            values[":id"] = {cid}
        if parts:
            writes.append(
                Write(
                    "Update",
                    key=secret_key(wsid, name),
                    update=" ".join(parts),
                    condition="attribute_exists(PK)",
                    values=values,
                    conflict=f"the vault secret '{name}' was deleted meanwhile",
                )
            )
    return writes


# Attributes of a connector a replace rewrites (id, created_* stay).
_MUTABLE = ("type", "value", "parsed_json", "secrets", "description", "updated_at", "updated_by", "marker")


class ConnectorStore:
    """Reads and writes of connectors, their id markers and secret metadata."""

    def __init__(self, table: Table) -> None:
        self.table = table

    # ---- connectors ----
    def get_connector(self, wsid: str, name: str) -> Item | None:
        key = connector_key(wsid, name)
        return self.table.get(key["PK"], key["SK"])

    def connector_by_id(self, wsid: str, cid: str) -> Item | None:
        """The workspace's connector of id `cid`: its marker, then the connector it names (consistent
        reads; read again if a rename moved it in between)."""
        for _ in range(3):
            key = marker_key(wsid, cid)
            marker = self.table.get(key["PK"], key["SK"])
            if marker is None:
                return self._unmarked_by_id(wsid, cid)
            item = self.get_connector(wsid, marker["name"])
            if item is not None and item["id"] == cid:
                return item
        return None

    def _unmarked_by_id(self, wsid: str, cid: str) -> Item | None:
        """A connector saved before the id markers, through the id index (long settled for those)."""
        page = self.table.query(connector_id_index(cid), index="GSI1", limit=10)
        for found in page.items:
            if found.get("GSI1SK") == f"WS#{wsid}" and not found.get("marker"):
                item = self.get_connector(wsid, found["name"])
                if item is not None and item["id"] == cid and not item.get("marker"):
                    return item
        return None

    def list_connectors(self, wsid: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(f"WS#{wsid}", sk_prefix=CONNECTOR_PREFIX, limit=limit, cursor=cursor)

    def save_connector(self, item: Item, current: Item | None, *, exclusive: bool = False) -> None:
        """Create (when `current` is None), replace or rename (`item` names another name than `current`)
        the connector if it is still at `current`'s version, with its id marker and the `used_by_ids`
        sets of the secrets it starts or stops listing, all in one transaction.

        Raises StaleVersion when someone else saved or deleted it first (for a create: created it; with
        `exclusive`, a create that finds the name or the id taken is a Conflict instead), Conflict when a
        newly listed secret was deleted meanwhile or a rename's new name is taken.
        """
        wsid, name, cid = item["workspace_id"], item["name"], item["id"]
        item = {**item, "marker": True}
        key = connector_key(wsid, name)
        full = {**key, **item, "GSI1PK": connector_id_index(cid), "GSI1SK": f"WS#{wsid}"}
        marker = {
            **marker_key(wsid, cid),
            "entity": "connector_id",
            "id": cid,
            "name": name,
            "workspace_id": wsid,
        }
        writes: list[Write] = []
        if current is None:
            writes.append(
                Write(
                    "Put",
                    item=full,
                    condition="attribute_not_exists(PK)",
                    conflict=(
                        f"a connector named '{name}' already exists in this workspace"
                        if exclusive
                        else f"the connector '{name}' was created by another request meanwhile"
                    ),
                    stale_version=not exclusive,
                )
            )
        elif current["name"] == name:
            writes.append(
                versioned_update(
                    key,
                    {attr: item.get(attr) for attr in _MUTABLE},
                    current["version"],
                    conflict=f"the connector '{name}' was changed by another request; reload it and retry",
                )
            )
        else:  # a rename: the name is the key
            writes.append(self._versioned_delete(current))
            writes.append(
                Write(
                    "Put",
                    item=full,
                    condition="attribute_not_exists(PK)",
                    conflict=f"a connector named '{name}' already exists in this workspace",
                )
            )
        if current is None or not current.get("marker"):
            writes.append(
                Write(
                    "Put",
                    item=marker,
                    condition="attribute_not_exists(PK)",
                    conflict=f"a connector with the id '{cid}' was created by another request meanwhile",
                    stale_version=current is None and not exclusive,
                )
            )
        elif current["name"] != name:
            writes.append(
                Write(
                    "Update",
                    key=marker_key(wsid, cid),
                    update="SET #n = :new",
                    condition="#n = :old",
                    names={"#n": "name"},
                    values={":new": name, ":old": current["name"]},
                    conflict=f"the connector '{current['name']}' was renamed by another request meanwhile",
                    stale_version=True,
                )
            )
        self.table.transact([*writes, *_reference_writes(wsid, current, item)])

    @staticmethod
    def _versioned_delete(current: Item) -> Write:
        return Write(
            "Delete",
            key=connector_key(current["workspace_id"], current["name"]),
            condition="#v = :expected",
            names={"#v": "version"},
            values={":expected": current["version"]},
            conflict=f"the connector '{current['name']}' was changed by another request; reload it and retry",
            stale_version=True,
        )

    def delete_connector(self, current: Item) -> None:
        """Delete the connector and its id marker if it is still at `current`'s version, releasing its
        secrets."""
        writes = [self._versioned_delete(current)]
        if current.get("marker"):
            writes.append(Write("Delete", key=marker_key(current["workspace_id"], current["id"])))
        self.table.transact([*writes, *_reference_writes(current["workspace_id"], current, None)])

    def user_names(self, wsid: str, items: Iterable[Item]) -> dict[str, str]:
        """Connector id -> name for every connector the secret items' `used_by_ids` hold (their markers,
        one BatchGetItem per 100)."""
        ids = sorted({cid for item in items for cid in item.get("used_by_ids", [])})
        if not ids:
            return {}
        keys = [(k["PK"], k["SK"]) for k in (marker_key(wsid, cid) for cid in ids)]
        return {marker["id"]: marker["name"] for marker in self.table.batch_get(keys)}

    # ---- vault secret metadata ----
    def get_secret(self, wsid: str, name: str) -> Item | None:
        key = secret_key(wsid, name)
        return self.table.get(key["PK"], key["SK"])

    def get_secrets(self, wsid: str, names: Sequence[str]) -> dict[str, Item]:
        """The metadata items of the named secrets that exist, by name (one BatchGetItem)."""
        if not names:
            return {}
        keys = [(k["PK"], k["SK"]) for k in (secret_key(wsid, n) for n in names)]
        return {item["name"]: item for item in self.table.batch_get(keys)}

    def list_secrets(self, wsid: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(f"WS#{wsid}", sk_prefix=SECRET_PREFIX, limit=limit, cursor=cursor)

    def record_secret(self, wsid: str, name: str, keys: list[str], now: str) -> Item:
        """Create or update the secret's metadata in one atomic update: the version counts puts, and
        `used_by_ids` (kept by connector saves) is left as it is."""
        item = self.table.update(
            secret_key(wsid, name),
            "SET #keys = :keys, #name = :name, workspace_id = :ws, entity = :entity, updated_at = :now, "
            "created_at = if_not_exists(created_at, :now) ADD #v :one",
            names={"#keys": "keys", "#name": "name", "#v": "version"},
            values={":keys": keys, ":name": name, ":ws": wsid, ":entity": "secret", ":now": now, ":one": 1},
        )
        assert item is not None  # no condition, so the update always applies
        return item

    def delete_secret(self, wsid: str, name: str) -> None:
        """Delete the metadata unless a connector lists the secret (Conflict) or it is gone (Conflict)."""
        self.table.transact(
            [
                Write(
                    "Delete",
                    key=secret_key(wsid, name),
                    condition="attribute_exists(PK) AND attribute_not_exists(used_by) "
                    "AND attribute_not_exists(used_by_ids)",
                    conflict=f"the vault secret '{name}' is used by a connector or was deleted meanwhile",
                )
            ]
        )

    @staticmethod
    def connector_item(**fields: Any) -> Item:
        """A connector item's attributes (without keys), dropping None values."""
        return {"entity": "connector", **{k: v for k, v in fields.items() if v is not None}}
