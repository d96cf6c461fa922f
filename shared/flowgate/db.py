"""The single-table DynamoDB adapter. Every access pattern is a GetItem, a Query or a transaction:
nothing here scans (docs/access-patterns.md lists the keys)."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from flowgate import aws
from flowgate.errors import BadRequest, Conflict

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

Item = dict[str, Any]

# DynamoDB accepts at most this many items in one TransactWriteItems call.
MAX_TRANSACTION_ITEMS = 100


@functools.cache
def _codec() -> tuple[Any, Any]:
    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

    return TypeSerializer(), TypeDeserializer()


def _to_wire(item: Mapping[str, Any]) -> dict[str, Any]:
    serializer, _ = _codec()
    return {k: serializer.serialize(_storable(v)) for k, v in item.items() if v is not None}


def _storable(value: Any) -> Any:
    """DynamoDB has no float type: JSON numbers from users are stored as exact decimals."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    if isinstance(value, dict):
        return {k: _storable(v) for k, v in value.items()}
    return value


def _from_wire(raw: Mapping[str, Any]) -> Item:
    _, deserializer = _codec()
    return {k: _plain(deserializer.deserialize(v)) for k, v in raw.items()}


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; the domain works with int."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return sorted(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Write:
    """One write of a transaction: put, delete, update or a bare condition check."""

    kind: str  # "Put" | "Delete" | "Update" | "ConditionCheck"
    key: Mapping[str, str] = field(default_factory=dict)
    item: Mapping[str, Any] | None = None
    condition: str | None = None
    update: str | None = None
    names: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)
    # Message of the Conflict raised when this write's condition fails.
    conflict: str = "the resource was changed by another request"
    # A failed condition means the item moved on (optimistic lock), so a re-read may succeed.
    stale_version: bool = False


@dataclass(frozen=True)
class Page:
    items: list[Item]
    next: str | None


# ---- cursors -------------------------------------------------------------------------------------
# A cursor carries the table key a listing stopped at, so it is sealed with AES-GCM: the client can
# neither read it (the key layout stays ours) nor forge one (the tag fails), and it is bound, as
# associated data, to the collection it pages (partition, index and prefix): replayed on another
# listing, even of the same tenant, it is refused. The key is one per deployment, the same in every
# container: a Secrets Manager secret the template generates (CURSOR_KEY_SECRET_ID), read once per
# container, when a cursor is first made or read. Without the variable (unit tests, the functions that
# page only inside one invocation) a random key of this process is used.

CURSOR_KEY_ENV = "CURSOR_KEY_SECRET_ID"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_INVALID_CURSOR = "invalid cursor: pass back the `next` of the previous page of this same listing"


@functools.cache
def _cursor_cipher(secret_id: str) -> Any:
    """The AES-GCM cipher of the deployment's cursor key (cached per secret id: one read per container)."""
    import hashlib

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if secret_id:
        material = aws.secretsmanager().get_secret_value(SecretId=secret_id)["SecretString"].encode()
    else:
        material = secrets.token_bytes(32)
    return AESGCM(hashlib.sha256(b"flowgate listing cursor v1\0" + material).digest())


def _cipher() -> Any:
    return _cursor_cipher(os.environ.get(CURSOR_KEY_ENV, ""))


def cursor_scope(pk_value: str, *, index: str | None = None, sk_prefix: str | None = None) -> str:
    """What a cursor is bound to: the collection (partition, index, sort-key prefix) it pages."""
    return json.dumps([index or "", pk_value, sk_prefix or ""], separators=(",", ":"))


def encode_cursor(last_key: Mapping[str, Any] | None, scope: str = "") -> str | None:
    """The sealed, URL-safe cursor of `last_key` (a DynamoDB wire key) for the collection `scope`."""
    if not last_key:
        return None
    plain = json.dumps(_from_wire(last_key), separators=(",", ":")).encode()
    nonce = secrets.token_bytes(_NONCE_BYTES)
    sealed = nonce + _cipher().encrypt(nonce, plain, scope.encode())
    return base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def decode_cursor(cursor: str | None, scope: str = "") -> dict[str, Any] | None:
    """The wire key of a cursor this deployment made for `scope`; a 400 (`invalid_cursor`) for any
    other string: malformed, forged, tampered with, from another deployment or another listing."""
    if not cursor:
        return None
    from cryptography.exceptions import InvalidTag

    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        sealed = base64.urlsafe_b64decode(padded.encode("ascii"))
        if len(sealed) <= _NONCE_BYTES + _TAG_BYTES:
            raise ValueError("too short")
        plain = _cipher().decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], scope.encode())
        raw = json.loads(plain)
    except (ValueError, binascii.Error, InvalidTag) as exc:
        raise BadRequest(_INVALID_CURSOR, code="invalid_cursor") from exc
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, str) for v in raw.values()):
        raise BadRequest(_INVALID_CURSOR, code="invalid_cursor")
    return _to_wire(raw)


def _sort_key_range(sk_from: str | None, sk_to: str | None) -> str:
    """The sort-key part of a key condition for inclusive bounds (`:sk_from`, `:sk_to`)."""
    if sk_from is not None and sk_to is not None:
        return " AND #sk BETWEEN :sk_from AND :sk_to"
    if sk_from is not None:
        return " AND #sk >= :sk_from"
    if sk_to is not None:
        return " AND #sk <= :sk_to"
    return ""


class StaleVersion(Conflict):
    """An optimistic-lock write found a newer version than the one it read."""


class Table:
    """Typed access to the platform table; one instance per container."""

    def __init__(self, name: str, client: DynamoDBClient | None = None) -> None:
        self.name = name
        self._injected = client

    @property
    def client(self) -> DynamoDBClient:
        return self._injected or aws.dynamodb()

    def get(self, pk: str, sk: str) -> Item | None:
        raw = self.client.get_item(
            TableName=self.name, Key=_to_wire({"PK": pk, "SK": sk}), ConsistentRead=True
        )
        return _from_wire(raw["Item"]) if "Item" in raw else None

    def batch_get(self, keys: Sequence[tuple[str, str]]) -> list[Item]:
        """Items for up to 100 keys (missing ones are left out); unprocessed keys are retried."""
        out: list[Item] = []
        pending = [_to_wire({"PK": pk, "SK": sk}) for pk, sk in dict.fromkeys(keys)]
        while pending:
            chunk, pending = pending[:100], pending[100:]
            request: Any = {self.name: {"Keys": chunk, "ConsistentRead": True}}
            while request:
                raw = self.client.batch_get_item(RequestItems=request)
                out.extend(_from_wire(i) for i in raw["Responses"].get(self.name, []))
                request = raw.get("UnprocessedKeys") or None
        return out

    def put(
        self,
        item: Mapping[str, Any],
        *,
        condition: str | None = None,
        conflict: str = "",
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"TableName": self.name, "Item": _to_wire(item)}
        if condition:
            kwargs["ConditionExpression"] = condition
        if names:
            kwargs["ExpressionAttributeNames"] = dict(names)
        if values:
            kwargs["ExpressionAttributeValues"] = _to_wire(values)
        client = self.client  # one client for the call and its exceptions (threads may race its creation)
        try:
            client.put_item(**kwargs)
        except client.exceptions.ConditionalCheckFailedException as exc:
            raise Conflict(conflict or "the resource already exists") from exc

    def update(
        self,
        key: Mapping[str, str],
        expression: str,
        *,
        condition: str | None = None,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> Item | None:
        """Apply an UpdateExpression; the item as it is afterwards, or None when the condition failed."""
        kwargs: dict[str, Any] = {
            "TableName": self.name,
            "Key": _to_wire(key),
            "UpdateExpression": expression,
            "ReturnValues": "ALL_NEW",
        }
        if condition:
            kwargs["ConditionExpression"] = condition
        if names:
            kwargs["ExpressionAttributeNames"] = dict(names)
        if values:
            kwargs["ExpressionAttributeValues"] = _to_wire(values)
        client = self.client
        try:
            raw = client.update_item(**kwargs)
        except client.exceptions.ConditionalCheckFailedException:
            return None
        return _from_wire(raw["Attributes"])

    def query(
        self,
        pk_value: str,
        *,
        index: str | None = None,
        sk_prefix: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> Page:
        pk_name, sk_name = (f"{index}PK", f"{index}SK") if index else ("PK", "SK")
        expression = "#pk = :pk"
        names = {"#pk": pk_name}
        values: dict[str, Any] = {":pk": pk_value}
        if sk_prefix:
            expression += " AND begins_with(#sk, :sk)"
            names["#sk"] = sk_name
            values[":sk"] = sk_prefix
        kwargs: dict[str, Any] = {
            "TableName": self.name,
            "KeyConditionExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": _to_wire(values),
            "Limit": limit,
            "ScanIndexForward": not newest_first,
        }
        if index:
            kwargs["IndexName"] = index
        scope = cursor_scope(pk_value, index=index, sk_prefix=sk_prefix)
        start = decode_cursor(cursor, scope)
        if start:
            kwargs["ExclusiveStartKey"] = start
        client = self.client
        try:
            raw = client.query(**kwargs)
        except client.exceptions.ClientError as exc:
            if start and exc.response.get("Error", {}).get("Code") == "ValidationException":
                raise BadRequest(_INVALID_CURSOR, code="invalid_cursor") from exc
            raise
        items = [_from_wire(i) for i in raw.get("Items", [])]
        return Page(items, encode_cursor(raw.get("LastEvaluatedKey"), scope))

    def query_range(
        self,
        pk_value: str,
        *,
        index: str | None = None,
        sk_from: str | None = None,
        sk_to: str | None = None,
        filter_expression: str | None = None,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = False,
        max_reads: int = 10,
    ) -> Page:
        """Query one partition with an optional sort-key range (inclusive bounds) and a filter.

        DynamoDB applies `Limit` before the filter, so one read may return fewer items than asked for
        while more match further on: this reads on (at most `max_reads` round trips) until `limit`
        items are found, and the cursor resumes right after the last item returned.
        """
        pk_name, sk_name = (f"{index}PK", f"{index}SK") if index else ("PK", "SK")
        all_names = {"#pk": pk_name, **(names or {})}
        all_values: dict[str, Any] = {":pk": pk_value, **(values or {})}
        bounds = {":sk_from": sk_from, ":sk_to": sk_to}
        all_values.update({k: v for k, v in bounds.items() if v is not None})
        if sk_from is not None or sk_to is not None:
            all_names["#sk"] = sk_name
        kwargs: dict[str, Any] = {
            "TableName": self.name,
            "KeyConditionExpression": "#pk = :pk" + _sort_key_range(sk_from, sk_to),
            "ExpressionAttributeNames": all_names,
            "ExpressionAttributeValues": _to_wire(all_values),
            "Limit": limit,
            "ScanIndexForward": not newest_first,
        }
        if index:
            kwargs["IndexName"] = index
        if filter_expression:
            kwargs["FilterExpression"] = filter_expression
        key_names = ["PK", "SK", *([pk_name, sk_name] if index else [])]
        scope = cursor_scope(pk_value, index=index)
        start = decode_cursor(cursor, scope)
        found: list[Item] = []
        for _ in range(max_reads):
            if start:
                kwargs["ExclusiveStartKey"] = start
            client = self.client
            try:
                raw = client.query(**kwargs)
            except client.exceptions.ClientError as exc:
                if cursor and exc.response.get("Error", {}).get("Code") == "ValidationException":
                    raise BadRequest(_INVALID_CURSOR, code="invalid_cursor") from exc
                raise
            items = [_from_wire(i) for i in raw.get("Items", [])]
            start = raw.get("LastEvaluatedKey")
            for position, item in enumerate(items, 1):
                found.append(item)
                if len(found) == limit:
                    more = position < len(items) or bool(start)
                    last = _to_wire({k: item[k] for k in key_names})
                    return Page(found, encode_cursor(last, scope) if more else None)
            if not start:
                return Page(found, None)
        return Page(found, encode_cursor(start, scope))

    def delete_many(self, keys: Sequence[tuple[str, str]]) -> None:
        """Delete items by key, 25 per BatchWriteItem (unprocessed ones retried); missing ones are fine."""
        pending = [
            {"DeleteRequest": {"Key": _to_wire({"PK": pk, "SK": sk})}} for pk, sk in dict.fromkeys(keys)
        ]
        while pending:
            chunk, pending = pending[:25], pending[25:]
            request: Any = {self.name: chunk}
            while request:
                raw = self.client.batch_write_item(RequestItems=request)
                request = raw.get("UnprocessedItems") or None

    def count(self, pk_value: str, *, sk_prefix: str | None = None) -> int:
        """How many items a partition holds (a Query with Select=COUNT, page by page)."""
        expression, names = "#pk = :pk", {"#pk": "PK"}
        values: dict[str, Any] = {":pk": pk_value}
        if sk_prefix:
            expression += " AND begins_with(#sk, :sk)"
            names["#sk"], values[":sk"] = "SK", sk_prefix
        kwargs: dict[str, Any] = {
            "TableName": self.name,
            "KeyConditionExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": _to_wire(values),
            "Select": "COUNT",
        }
        total = 0
        while True:
            raw = self.client.query(**kwargs)
            total += int(raw.get("Count", 0))
            if "LastEvaluatedKey" not in raw:
                return total
            kwargs["ExclusiveStartKey"] = raw["LastEvaluatedKey"]

    def transact(self, writes: Sequence[Write]) -> None:
        """All writes or none; a failed condition raises Conflict with that write's message."""
        if len(writes) > MAX_TRANSACTION_ITEMS:
            raise ValueError("too many writes for one transaction")
        request: list[Any] = []
        for w in writes:
            op: dict[str, Any] = {"TableName": self.name}
            if w.kind == "Put":
                assert w.item is not None
                op["Item"] = _to_wire(w.item)
            else:
                op["Key"] = _to_wire(w.key)
            if w.update:
                op["UpdateExpression"] = w.update
            if w.condition:
                op["ConditionExpression"] = w.condition
            if w.names:
                op["ExpressionAttributeNames"] = dict(w.names)
            if w.values:
                op["ExpressionAttributeValues"] = _to_wire(w.values)
            request.append({w.kind: op})
        client = self.client
        try:
            client.transact_write_items(TransactItems=request)
        except client.exceptions.TransactionCanceledException as exc:
            reasons = exc.response.get("CancellationReasons", [])
            for write, reason in zip(writes, reasons, strict=False):
                if reason.get("Code") == "ConditionalCheckFailed":
                    raise (StaleVersion if write.stale_version else Conflict)(write.conflict) from exc
            raise Conflict("the request conflicted with another one; retry it") from exc


def versioned_update(
    key: Mapping[str, str], changes: Mapping[str, Any], expected_version: int, *, conflict: str = ""
) -> Write:
    """An Update that applies `changes` only if the item is still at `expected_version` (optimistic lock).

    A value of None removes the attribute.
    """
    sets = ["#v = :next"]
    removes: list[str] = []
    names = {"#v": "version"}
    values: dict[str, Any] = {":expected": expected_version, ":next": expected_version + 1}
    for i, (attr, value) in enumerate(changes.items()):
        names[f"#a{i}"] = attr
        if value is None:
            removes.append(f"#a{i}")
        else:
            sets.append(f"#a{i} = :a{i}")
            values[f":a{i}"] = value
    expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
    return Write(
        "Update",
        key=key,
        update=expression,
        condition="#v = :expected",
        names=names,
        values=values,
        conflict=conflict or "the resource was changed by another request; reload it and retry",
        stale_version=True,
    )
