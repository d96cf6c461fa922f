"""What the sync context keeps in the table: the nonces of verified requests (`NonceStore`), the
configs and their outboxes (docs/access-patterns.md, S1-S9)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flowgate.db import Item, Page, Table, Write, versioned_update
from flowgate.errors import Conflict


def nonce_key(key_id: str, nonce: str) -> dict[str, str]:
    return {"PK": f"SYNCNONCE#{key_id}#{nonce}", "SK": "SEEN"}


class TableNonceStore:
    """S1: a nonce is recorded with a conditional PutItem (`attribute_not_exists`), so of any number of
    concurrent requests carrying it exactly one is accepted; DynamoDB's TTL removes it after `ttl`.
    An expired item DynamoDB has not removed yet still counts as seen, which errs on the safe side."""

    def __init__(self, table: Table, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.clock = clock

    def remember(self, key_id: str, nonce: str, ttl_seconds: int) -> bool:
        item = {**nonce_key(key_id, nonce), "ttl": int(self.clock()) + ttl_seconds}
        try:
            self.table.put(item, condition="attribute_not_exists(PK)")
        except Conflict:
            return False
        return True


# ---- sync configs and their outboxes (access patterns S2-S9) ----------------------------------

DIALERS = "SYNCDIALERS"


def config_key(name: str) -> dict[str, str]:
    return {"PK": f"SYNC#{name}", "SK": "META"}


def _outbox_pk(config_id: str) -> str:
    return f"SYNCOUT#{config_id}"


@dataclass(frozen=True)
class Queued:
    """A message waiting in a config's outbox for the peer."""

    sk: str
    message_id: str
    body: str  # the message as JSON, exactly as it goes on the wire


class SyncStore:
    """Configs are keyed by name alone (the inbound URL names no workspace), so a name is unique in the
    deployment by the key's own `attribute_not_exists`; GSI1 lists a workspace's configs by name. Dialing
    configs (with a remote_url, enabled) also have an entry in one `SYNCDIALERS` partition, which the
    sweep reads to keep their exchanges going. A config's outbox is one partition, oldest first."""

    def __init__(self, table: Table) -> None:
        self.table = table

    # ---- configs ----
    def get(self, name: str) -> Item | None:
        key = config_key(name)
        return self.table.get(key["PK"], key["SK"])

    def _dialer_writes(self, item: Mapping[str, Any]) -> list[Write]:
        key = {"PK": DIALERS, "SK": item["name"]}
        if item.get("enabled") and item.get("remote_url"):
            return [Write("Put", item={**key, "config_id": item["id"]})]
        return [Write("Delete", key=key)]

    def create(self, item: Mapping[str, Any], workspace_exists: Write) -> None:
        full = {
            **config_key(item["name"]),
            **item,
            "GSI1PK": f"WS#{item['workspace_id']}#SYNC",
            "GSI1SK": item["name"],
        }
        taken = f"the sync config name '{item['name']}' is taken in this deployment; choose another"
        self.table.transact(
            [
                Write("Put", item=full, condition="attribute_not_exists(PK)", conflict=taken),
                workspace_exists,
                *self._dialer_writes(item),
            ]
        )

    def replace(self, current: Mapping[str, Any], changes: Mapping[str, Any]) -> Item:
        self.table.transact(
            [
                versioned_update(config_key(current["name"]), changes, current["version"]),
                *self._dialer_writes({**current, **changes}),
            ]
        )
        return {**current, **changes, "version": current["version"] + 1}

    def delete(self, item: Mapping[str, Any]) -> None:
        self.table.transact(
            [
                Write(
                    "Delete",
                    key=config_key(item["name"]),
                    condition="attribute_exists(PK)",
                    conflict="the sync config no longer exists",
                ),
                Write("Delete", key={"PK": DIALERS, "SK": item["name"]}),
            ]
        )

    def list_for_workspace(self, wsid: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(f"WS#{wsid}#SYNC", index="GSI1", limit=limit, cursor=cursor)

    def all_for_workspace(self, wsid: str) -> list[Item]:
        items: list[Item] = []
        cursor: str | None = None
        while True:
            page = self.list_for_workspace(wsid, 100, cursor)
            items.extend(page.items)
            if not page.next:
                return items
            cursor = page.next

    def dialers(self) -> list[str]:
        """The names of the enabled configs that open exchanges (for the sweep)."""
        names: list[str] = []
        cursor: str | None = None
        while True:
            page = self.table.query(DIALERS, limit=100, cursor=cursor)
            names.extend(str(i["SK"]) for i in page.items)
            if not page.next:
                return names
            cursor = page.next

    def record_health(self, name: str, **fields: Any) -> None:
        """Health fields of a config (last success, last error, peer key), if it still exists."""
        sets, removes = [], []
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        for i, (attr, value) in enumerate(fields.items()):
            names[f"#h{i}"] = attr
            if value is None:
                removes.append(f"#h{i}")
            else:
                sets.append(f"#h{i} = :h{i}")
                values[f":h{i}"] = value
        expression = ("SET " + ", ".join(sets) if sets else "") + (
            " REMOVE " + ", ".join(removes) if removes else ""
        )
        self.table.update(
            config_key(name),
            expression.strip(),
            condition="attribute_exists(PK)",
            names=names,
            values=values or None,
        )

    def claim(self, name: str, attribute: str, now_ts: float, until_ts: float) -> bool:
        """True for the one caller that takes the config's `attribute` lease until `until_ts` (the next
        batched send, a running sender, a sweep)."""
        done = self.table.update(
            config_key(name),
            "SET #n = :until",
            condition="attribute_exists(PK) AND (attribute_not_exists(#n) OR #n <= :now)",
            names={"#n": attribute},
            values={":until": until_ts, ":now": now_ts},
        )
        return done is not None

    def release(self, name: str, attribute: str) -> None:
        self.table.update(config_key(name), "REMOVE #n", names={"#n": attribute})

    # ---- outboxes ----
    def enqueue(self, config_id: str, message_id: str, body: str, stamp: str, ttl: int) -> None:
        self.table.put(
            {
                "PK": _outbox_pk(config_id),
                "SK": f"{stamp}#{message_id}",
                "message_id": message_id,
                "body": body,
                "ttl": ttl,
            }
        )

    def outbox(self, config_id: str, limit: int) -> list[Queued]:
        page = self.table.query(_outbox_pk(config_id), limit=limit)
        return [Queued(str(i["SK"]), str(i["message_id"]), str(i["body"])) for i in page.items]

    def drop(self, config_id: str, sks: list[str]) -> None:
        self.table.delete_many([(_outbox_pk(config_id), sk) for sk in sks])

    def backlog(self, config_id: str) -> int:
        return self.table.count(_outbox_pk(config_id))

    def backlog_of(self, name: str) -> int:
        config = self.get(name)
        return 0 if config is None else self.backlog(config["id"])
