"""Storage of the identity context in the platform table. Keys are built here and nowhere else;
docs/access-patterns.md lists every item and access pattern."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flowgate.db import Item, Page, Table, Write, versioned_update
from flowgate.errors import Conflict
from flowgate.identity.models import (
    ApiToken,
    Contract,
    Member,
    Privilege,
    Role,
    Workspace,
    WorkspaceAccess,
    WorkspaceKind,
    WorkspaceRole,
)

META = "META"
UNIQUE = "UNIQUE"


def contract_key(cid: str) -> dict[str, str]:
    return {"PK": f"CONTRACT#{cid}", "SK": META}


def user_key(uid: str) -> dict[str, str]:
    return {"PK": f"USER#{uid}", "SK": META}


def username_key(username: str) -> dict[str, str]:
    return {"PK": f"USERNAME#{username.lower()}", "SK": UNIQUE}


def contract_name_key(name: str) -> dict[str, str]:
    return {"PK": f"CONTRACTNAME#{name.lower()}", "SK": UNIQUE}


def workspace_key(wsid: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": META}


def workspace_name_key(cid: str, name: str) -> dict[str, str]:
    return {"PK": f"CONTRACT#{cid}", "SK": f"WSNAME#{name.lower()}"}


def access_key(wsid: str, uid: str) -> dict[str, str]:
    return {"PK": f"WS#{wsid}", "SK": f"ACCESS#{uid}"}


def token_key(token_hash: str) -> dict[str, str]:
    return {"PK": f"TOKEN#{token_hash}", "SK": META}


# ---- login throttling -----------------------------------------------------------------------------

COUNTER = "COUNTER"
# What a stored username can be (models.Username); anything else names nobody.
_USERNAME = re.compile(r"^[A-Za-z0-9._@-]{3,64}$")
# Read in place of the member when a username names nobody, so that an unknown username costs what a
# known one does: the same reads, an item of a member's size, an Argon2id hash of the same cost.
LOGIN_DECOY_KEY = {"PK": "DECOY#LOGIN", "SK": META}


def login_subject(username: str) -> str:
    """The account part of the throttle and marker keys of a login attempt: the lowercased username, or,
    for a name no user can have (wrong characters, too long: HTTP Basic sends anything), `~` and a digest
    of it, so that a key never outgrows DynamoDB's limits nor holds what was sent."""
    if _USERNAME.match(username):
        return username.lower()
    return "~" + hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def account_throttle_key(subject: str) -> dict[str, str]:
    return {"PK": f"THROTTLE#user#{subject}", "SK": COUNTER}


def source_throttle_key(source: str) -> dict[str, str]:
    return {"PK": f"THROTTLE#ip#{source}", "SK": COUNTER}


def lockout_audit_key(day: str, at: str, audit_id: str) -> dict[str, str]:
    """`day` is `YYYY-MM-DD` (UTC), `at` an ISO-8601 time with milliseconds: a day's lockouts sort by time."""
    return {"PK": f"AUDIT#LOGIN#{day}", "SK": f"{at}#{audit_id}"}


@dataclass(frozen=True)
class Counter:
    """Failed attempts counted under one throttle key (an account or a source). Times are epoch seconds;
    the counter counts from `resets_at` on as if it did not exist (DynamoDB's TTL removes it later)."""

    failures: int = 0
    resets_at: int = 0
    locked_until: int = 0
    locks: int = 0

    @classmethod
    def of(cls, item: Item | None) -> Counter:
        if item is None:
            return cls()
        return cls(
            failures=int(item.get("failures", 0)),
            resets_at=int(item.get("resets_at", 0)),
            locked_until=int(item.get("locked_until", 0)),
            locks=int(item.get("locks", 0)),
        )

    def live(self, now: int) -> bool:
        """Still counting (or locked) at `now`."""
        return self.resets_at > now or self.locked_until > now


# Attribute names of a counter as expressions name them (some are DynamoDB reserved words).
_COUNTER_NAMES = {"#resets": "resets_at", "#until": "locked_until", "#locks": "locks", "#ttl": "ttl"}


@dataclass(frozen=True)
class _Update:
    expression: str
    condition: str
    names: dict[str, str]
    values: dict[str, Any]


@dataclass(frozen=True)
class LoginLookup:
    """What one read tells of a login attempt: the user the username names, and both counters."""

    user_id: str | None
    account: Counter
    source: Counter | None  # None when the attempt's source is not known


def _not_exists() -> str:
    return "attribute_not_exists(PK)"


# ---- item <-> model ---------------------------------------------------------------------------


def contract_from(item: Item) -> Contract:
    return Contract(id=item["id"], name=item["name"], created_at=item["created_at"], version=item["version"])


def member_from(item: Item) -> Member:
    return Member(
        id=item["id"],
        username=item["username"],
        contract_id=item.get("contract_id"),
        role=Role(item["role"]) if item.get("role") else None,
        privileges=[Privilege(p) for p in item.get("privileges", [])],
        platform_admin=bool(item.get("platform_admin", False)),
        created_at=item["created_at"],
        version=item["version"],
    )


def workspace_from(item: Item) -> Workspace:
    return Workspace(
        id=item["id"],
        contract_id=item["contract_id"],
        name=item["name"],
        kind=WorkspaceKind(item["kind"]),
        owner_id=item["owner_id"],
        created_at=item["created_at"],
        version=item["version"],
    )


def access_from(item: Item) -> WorkspaceAccess:
    return WorkspaceAccess(
        workspace_id=item["workspace_id"],
        user_id=item["user_id"],
        role=WorkspaceRole(item["role"]),
        granted_by=item["granted_by"],
        granted_at=item["granted_at"],
    )


def token_from(item: Item) -> ApiToken:
    return ApiToken(
        id=item["id"],
        name=item.get("name", ""),
        kind=item["kind"],
        created_at=item["created_at"],
        expires_at=item.get("expires_at"),
    )


UserChanged = Callable[[str], None]


class IdentityStore:
    """Reads and writes of contracts, users, workspaces, grants and tokens."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._user_listeners: list[UserChanged] = []

    def on_user_changed(self, listener: UserChanged) -> None:
        """Call `listener(user_id)` after each write of a user item through this store (the Authenticator
        forgets the member's cached Basic credentials), also when the write failed, as it may have landed."""
        self._user_listeners.append(listener)

    def _user_changed(self, uid: str) -> None:
        for listener in self._user_listeners:
            listener(uid)

    def _get(self, key: Mapping[str, str]) -> Item | None:
        return self.table.get(key["PK"], key["SK"])

    # ---- contracts ----
    def get_contract(self, cid: str) -> Item | None:
        return self._get(contract_key(cid))

    def create_contract(self, item: Item) -> None:
        self.table.transact(
            [
                Write(
                    "Put",
                    item={**contract_name_key(item["name"]), "contract_id": item["id"]},
                    condition=_not_exists(),
                    conflict=f"a contract named '{item['name']}' already exists",
                ),
                Write(
                    "Put",
                    item={
                        **contract_key(item["id"]),
                        **item,
                        "GSI1PK": "CONTRACTS",
                        "GSI1SK": item["name"].lower(),
                    },
                    condition=_not_exists(),
                ),
            ]
        )

    def rename_contract(self, current: Item, new_name: str) -> None:
        writes = [
            versioned_update(
                contract_key(current["id"]),
                {"name": new_name, "GSI1SK": new_name.lower()},
                current["version"],
            )
        ]
        if new_name.lower() != current["name"].lower():
            writes += [
                Write("Delete", key=contract_name_key(current["name"])),
                Write(
                    "Put",
                    item={**contract_name_key(new_name), "contract_id": current["id"]},
                    condition=_not_exists(),
                    conflict=f"a contract named '{new_name}' already exists",
                ),
            ]
        self.table.transact(writes)

    def list_contracts(self, limit: int, cursor: str | None) -> Page:
        return self.table.query("CONTRACTS", index="GSI1", limit=limit, cursor=cursor)

    # ---- users ----
    def get_user(self, uid: str) -> Item | None:
        return self._get(user_key(uid))

    def find_user_id(self, username: str) -> str | None:
        item = self._get(username_key(username))
        return item["user_id"] if item else None

    # ---- login throttling (docs/access-patterns.md, L1-L6) ----
    def login_lookup(self, subject: str, source: str | None) -> LoginLookup:
        """L1: the username marker and the account and source counters of an attempt, in one BatchGetItem."""
        marker, account = username_key(subject), account_throttle_key(subject)
        keys = [marker, account] + ([source_throttle_key(source)] if source is not None else [])
        found = {(i["PK"], i["SK"]): i for i in self.table.batch_get([(k["PK"], k["SK"]) for k in keys])}

        def item(key: Mapping[str, str]) -> Item | None:
            return found.get((key["PK"], key["SK"]))

        marker_item = item(marker)
        return LoginLookup(
            user_id=str(marker_item["user_id"]) if marker_item else None,
            account=Counter.of(item(account)),
            source=Counter.of(item(source_throttle_key(source))) if source is not None else None,
        )

    def count_failure(
        self, key: Mapping[str, str], *, now: int, resets_at: int, slide: bool, fresh: bool
    ) -> Counter | None:
        """L2: one failed attempt more on a counter, in one UpdateItem; the counter afterwards.

        A live counter gets `ADD failures 1` (with `slide`, its `resets_at` moves on to the one given); a
        missing or forgotten one starts again at 1, counting until `resets_at`. The read (`fresh`: it was
        not live) picks which to try first; each one's condition is the other's negation, so a race costs
        a second try and no failure is lost or counted twice. None only if the counter changed under us
        three times running."""
        live = "attribute_exists(PK) AND (#resets > :now OR #until > :now)"
        names = {"#failures": "failures", "#resets": "resets_at", "#until": "locked_until"}
        add = _Update(
            "ADD #failures :one" + (" SET #resets = :resets, #ttl = :resets" if slide else ""),
            live,
            {**names, **({"#ttl": "ttl"} if slide else {})},
            {":one": 1, ":now": now, **({":resets": resets_at} if slide else {})},
        )
        start = _Update(
            "SET #failures = :one, #resets = :resets, #until = :zero, #locks = :zero, #ttl = :resets",
            f"NOT ({live})",
            {**names, **_COUNTER_NAMES},
            {":one": 1, ":zero": 0, ":now": now, ":resets": resets_at},
        )
        first, second = (start, add) if fresh else (add, start)
        for update in (first, second, first):
            after = self.table.update(
                key, update.expression, condition=update.condition, names=update.names, values=update.values
            )
            if after is not None:
                return Counter.of(after)
        return None

    def lock(self, key: Mapping[str, str], *, level: int, until: int, resets_at: int) -> bool:
        """L3: lock a counter until `until` (epoch seconds) as its `level`-th lock; conditioned on it not
        being at that level yet, so of concurrent callers one locks (and a later, longer lock is never
        shortened by an earlier one landing late). Whether this call locked it."""
        return (
            self.table.update(
                key,
                "SET #until = :until, #locks = :level, #resets = :resets, #ttl = :resets",
                condition="attribute_exists(PK) AND #locks < :level",
                names=_COUNTER_NAMES,
                values={":until": until, ":level": level, ":resets": resets_at},
            )
            is not None
        )

    def put_lockout(self, audit: Item) -> None:
        """L4: the audit record of one lockout (`at` with milliseconds, `id` unique), kept until `ttl`."""
        at = str(audit["at"])
        self.table.put({**lockout_audit_key(at[:10], at, str(audit["id"])), **audit}, condition=_not_exists())

    def reset_account(self, subject: str, *, now: int) -> None:
        """L5: after a successful login, forget the account's failures (unless a lock landed meanwhile)."""
        self.table.update(
            account_throttle_key(subject),
            "SET #failures = :zero, #locks = :zero, #until = :zero, #resets = :now, #ttl = :now",
            condition="attribute_exists(PK) AND #until <= :now",
            names={"#failures": "failures", **_COUNTER_NAMES},
            values={":zero": 0, ":now": now},
        )

    def get_login_decoy(self) -> Item | None:
        """L7: the decoy member an unknown username's attempt reads (GetItem, as a member is read)."""
        return self._get(LOGIN_DECOY_KEY)

    def put_login_decoy(self, decoy: Item) -> Item:
        """Store the decoy once per table (`attribute_not_exists`); the stored one."""
        item = {**decoy, **LOGIN_DECOY_KEY}
        try:
            self.table.put(item, condition=_not_exists())
        except Conflict:
            return self.get_login_decoy() or item
        return item

    def list_lockouts(self, day: str, limit: int, cursor: str | None) -> Page:
        """L6: a day's lockouts (`YYYY-MM-DD`, UTC), oldest first."""
        return self.table.query(f"AUDIT#LOGIN#{day}", limit=limit, cursor=cursor)

    def create_user(self, item: Item) -> None:
        index = (
            {"GSI1PK": f"CONTRACT#{item['contract_id']}#MEMBERS", "GSI1SK": item["username"].lower()}
            if item.get("contract_id")
            else {}
        )
        self.table.transact(
            [
                Write(
                    "Put",
                    item={**username_key(item["username"]), "user_id": item["id"]},
                    condition=_not_exists(),
                    conflict=f"the username '{item['username']}' is taken",
                ),
                Write("Put", item={**user_key(item["id"]), **item, **index}, condition=_not_exists()),
            ]
        )

    def update_user(self, current: Item, changes: Mapping[str, Any]) -> None:
        """Every change of a member (password, role, privileges, disabled) goes through here; a future
        removal of users must call `_user_changed` as well."""
        try:
            self.table.transact([versioned_update(user_key(current["id"]), changes, current["version"])])
        finally:
            self._user_changed(current["id"])

    def list_members(self, cid: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(f"CONTRACT#{cid}#MEMBERS", index="GSI1", limit=limit, cursor=cursor)

    # ---- workspaces ----
    def contract_exists(self, cid: str) -> Write:
        """A condition for another context's transaction: the contract still exists."""
        return Write(
            "ConditionCheck",
            key=contract_key(cid),
            condition="attribute_exists(PK)",
            conflict="the enterprise no longer exists",
        )

    def workspace_exists(self, wsid: str) -> Write:
        """A condition for another context's transaction: the workspace still exists."""
        return Write(
            "ConditionCheck",
            key=workspace_key(wsid),
            condition="attribute_exists(PK)",
            conflict="the workspace no longer exists",
        )

    def get_workspace(self, wsid: str) -> Item | None:
        return self._get(workspace_key(wsid))

    def create_workspace(self, item: Item, creator_grant: Item) -> None:
        cid, wsid = item["contract_id"], item["id"]
        self.table.transact(
            [
                Write(
                    "Put",
                    item={**workspace_name_key(cid, item["name"]), "workspace_id": wsid},
                    condition=_not_exists(),
                    conflict=f"a workspace named '{item['name']}' already exists in this contract",
                ),
                Write(
                    "Put",
                    item={
                        **workspace_key(wsid),
                        **item,
                        "GSI1PK": f"CONTRACT#{cid}#WORKSPACES",
                        "GSI1SK": item["name"].lower(),
                    },
                    condition=_not_exists(),
                ),
                Write("Put", item=self._grant_item(creator_grant)),
                # The contract may not vanish between the caller's check and this write.
                Write(
                    "ConditionCheck",
                    key=contract_key(cid),
                    condition="attribute_exists(PK)",
                    conflict="the contract no longer exists",
                ),
            ]
        )

    def update_workspace(self, current: Item, changes: Mapping[str, Any]) -> None:
        new_name = changes.get("name")
        indexed = dict(changes)
        writes: list[Write] = []
        if new_name is not None:
            indexed["GSI1SK"] = new_name.lower()
            if new_name.lower() != current["name"].lower():
                cid = current["contract_id"]
                writes += [
                    Write("Delete", key=workspace_name_key(cid, current["name"])),
                    Write(
                        "Put",
                        item={**workspace_name_key(cid, new_name), "workspace_id": current["id"]},
                        condition=_not_exists(),
                        conflict=f"a workspace named '{new_name}' already exists in this contract",
                    ),
                ]
        self.table.transact(
            [versioned_update(workspace_key(current["id"]), indexed, current["version"]), *writes]
        )

    def list_contract_workspaces(self, cid: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(f"CONTRACT#{cid}#WORKSPACES", index="GSI1", limit=limit, cursor=cursor)

    def list_user_grants(self, uid: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(f"USER#{uid}#ACCESS", index="GSI1", limit=limit, cursor=cursor)

    def get_workspaces(self, wsids: list[str]) -> list[Item]:
        return self.table.batch_get([(workspace_key(w)["PK"], META) for w in wsids])

    # ---- workspace access ----
    @staticmethod
    def _grant_item(grant: Item) -> Item:
        wsid, uid = grant["workspace_id"], grant["user_id"]
        return {**access_key(wsid, uid), **grant, "GSI1PK": f"USER#{uid}#ACCESS", "GSI1SK": f"WS#{wsid}"}

    def get_grant(self, wsid: str, uid: str) -> Item | None:
        return self._get(access_key(wsid, uid))

    def put_grant(self, grant: Item) -> None:
        self.table.transact(
            [
                Write("Put", item=self._grant_item(grant)),
                Write(
                    "ConditionCheck",
                    key=workspace_key(grant["workspace_id"]),
                    condition="attribute_exists(PK)",
                    conflict="the workspace no longer exists",
                ),
            ]
        )

    def delete_grant(self, wsid: str, uid: str) -> None:
        self.table.transact([Write("Delete", key=access_key(wsid, uid))])

    def list_grants(self, wsid: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(f"WS#{wsid}", sk_prefix="ACCESS#", limit=limit, cursor=cursor)

    # ---- tokens ----
    def put_token(self, token_hash: str, item: Item) -> None:
        self.table.put(
            {
                **token_key(token_hash),
                **item,
                "GSI1PK": f"USER#{item['user_id']}#TOKENS",
                "GSI1SK": f"{item['kind']}#{item['id']}",
            },
            condition=_not_exists(),
        )

    def get_token(self, token_hash: str) -> Item | None:
        return self._get(token_key(token_hash))

    def list_tokens(self, uid: str, kind: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(
            f"USER#{uid}#TOKENS", index="GSI1", sk_prefix=f"{kind}#", limit=limit, cursor=cursor
        )

    def find_token(self, uid: str, kind: str, token_id: str) -> Item | None:
        page = self.table.query(f"USER#{uid}#TOKENS", index="GSI1", sk_prefix=f"{kind}#{token_id}", limit=1)
        return page.items[0] if page.items else None

    def delete_token(self, item: Item) -> None:
        self.table.transact([Write("Delete", key={"PK": item["PK"], "SK": item["SK"]})])
