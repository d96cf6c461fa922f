"""Storage of connectors and vault-secret metadata in the platform table. Keys are built here and nowhere
else; docs/access-patterns.md ("Connectors and vault secrets") lists every item and access pattern.

A secret's metadata item keeps `used_by`, the set of connectors that list it, updated in the same
transaction as the connector. So "the listed secrets exist" and "a secret in use cannot be deleted"
hold under concurrency: a connector save conditions on each added secret's item existing, and a secret
delete conditions on `used_by` being empty.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from flowgate.connectors.models import Connector, SecretInfo
from flowgate.db import Item, Page, Table, Write, versioned_update

CONNECTOR_PREFIX = "CONNECTOR#"
SECRET_PREFIX = "SECRET#"  # noqa: S105 - a key prefix, not a password


def connector_key(wsid: str, name: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"{CONNECTOR_PREFIX}{name}"}


def secret_key(wsid: str, name: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"{SECRET_PREFIX}{name}"}


def connector_id_index(cid: str) -> str:
    """GSI1PK of a connector: finds it by id (the identity artifacts keep across deployments)."""
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


def secret_info_from(item: Item) -> SecretInfo:
    return SecretInfo(
        name=item["name"],
        keys=list(item.get("keys", [])),
        version=item["version"],
        created_at=item["created_at"],
        updated_at=item["updated_at"],
        used_by=sorted(item.get("used_by", [])),
    )


def _reference_writes(wsid: str, connector: str, added: Iterable[str], dropped: Iterable[str]) -> list[Write]:
    writes = [
        Write(
            "Update",
            key=secret_key(wsid, name),
            update="ADD used_by :c",
            condition="attribute_exists(PK)",
            values={":c": {connector}},
            conflict=f"the vault secret '{name}' was deleted meanwhile",
        )
        for name in added
    ]
    writes += [
        Write(
            "Update",
            key=secret_key(wsid, name),
            update="DELETE used_by :c",
            condition="attribute_exists(PK)",
            values={":c": {connector}},
            conflict=f"the vault secret '{name}' was deleted meanwhile",
        )
        for name in dropped
    ]
    return writes


# Attributes of a connector a replace rewrites (id, created_* stay).
_MUTABLE = ("type", "value", "parsed_json", "secrets", "description", "updated_at", "updated_by")


class ConnectorStore:
    """Reads and writes of connectors and secret metadata."""

    def __init__(self, table: Table) -> None:
        self.table = table

    # ---- connectors ----
    def get_connector(self, wsid: str, name: str) -> Item | None:
        key = connector_key(wsid, name)
        return self.table.get(key["PK"], key["SK"])

    def list_connectors(self, wsid: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(f"WS#{wsid}", sk_prefix=CONNECTOR_PREFIX, limit=limit, cursor=cursor)

    def save_connector(self, item: Item, current: Item | None) -> None:
        """Create (when `current` is None) or replace the connector if it is still at `current`'s version,
        updating the `used_by` sets of the secrets it starts or stops listing, all in one transaction.

        Raises StaleVersion when someone else saved or deleted it first, Conflict when a newly listed
        secret was deleted meanwhile.
        """
        wsid, name = item["workspace_id"], item["name"]
        key = connector_key(wsid, name)
        old = list(current.get("secrets", [])) if current else []
        new = list(item.get("secrets", []))
        if current is None:
            write = Write(
                "Put",
                item={**key, **item, "GSI1PK": connector_id_index(item["id"]), "GSI1SK": f"WS#{wsid}"},
                condition="attribute_not_exists(PK)",
                conflict=f"the connector '{name}' was created by another request meanwhile",
                stale_version=True,
            )
        else:
            write = versioned_update(
                key,
                {attr: item.get(attr) for attr in _MUTABLE},
                current["version"],
                conflict=f"the connector '{name}' was changed by another request; reload it and retry",
            )
        added = [s for s in new if s not in old]
        dropped = [s for s in old if s not in new]
        self.table.transact([write, *_reference_writes(wsid, name, added, dropped)])

    def delete_connector(self, current: Item) -> None:
        """Delete the connector if it is still at `current`'s version, releasing its secrets."""
        wsid, name = current["workspace_id"], current["name"]
        write = Write(
            "Delete",
            key=connector_key(wsid, name),
            condition="#v = :expected",
            names={"#v": "version"},
            values={":expected": current["version"]},
            conflict=f"the connector '{name}' was changed by another request; reload it and retry",
            stale_version=True,
        )
        self.table.transact([write, *_reference_writes(wsid, name, [], current.get("secrets", []))])

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
        `used_by` (kept by connector saves) is left as it is."""
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
                    condition="attribute_exists(PK) AND attribute_not_exists(used_by)",
                    conflict=f"the vault secret '{name}' is used by a connector or was deleted meanwhile",
                )
            ]
        )

    @staticmethod
    def connector_item(**fields: Any) -> Item:
        """A connector item's attributes (without keys), dropping None values."""
        return {"entity": "connector", **{k: v for k, v in fields.items() if v is not None}}
