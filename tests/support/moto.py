"""moto's in-process DynamoDB patched where it differs from DynamoDB in a way a test or a benchmark sees.

* `serialized_dynamodb`: DynamoDB applies each item operation atomically; moto checks a condition and
  writes in steps that threads can interleave, and a read can see an item half updated. One lock around
  moto's item operations restores DynamoDB's semantics for tests that race real threads (the races
  themselves stay: between operations). `devstack.moto_main` does the same for moto's server.
* `item_level_transaction_rollback`: moto backs up every table a transaction names, DynamoDB's cost does
  not depend on the table. For benchmarks with tens of thousands of items.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

DYNAMODB_ITEM_OPERATIONS = (
    "get_item",
    "batch_get_item",
    "query",
    "put_item",
    "update_item",
    "delete_item",
    "transact_write_items",
)


@contextlib.contextmanager
def serialized_dynamodb() -> Iterator[None]:
    """Within this context, moto's DynamoDB item operations run one at a time, as DynamoDB isolates them.

    The lock is re-entrant: a transaction reads items through the same backend methods."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()

    def locked(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def under_lock(self: Any, *args: Any, **kwargs: Any) -> Any:
            with lock:
                return original(self, *args, **kwargs)

        return under_lock

    with contextlib.ExitStack() as patches:
        for name in DYNAMODB_ITEM_OPERATIONS:
            patches.enter_context(
                mock.patch.object(DynamoDBBackend, name, locked(getattr(DynamoDBBackend, name)))
            )
        yield


@contextlib.contextmanager
def item_level_transaction_rollback() -> Iterator[None]:
    """moto's TransactWriteItems deep-copies every table it names before each transaction, to roll back
    if one write fails: with 40,000 items, seconds per call, where DynamoDB's cost does not depend on the
    table. Within this context the backup is of the items the transaction names (restored, in reverse
    order, if it fails): the same outcome for a transaction on one table with a sort key, as ours are.
    No call is added or removed, only moto's time changes."""
    import moto.dynamodb.models as moto_models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table as MotoTable

    class NoTableCopy:  # the `copy` module as moto's transaction sees it: tables are not copied
        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, MotoTable) else copy.deepcopy(value, memo)

    original = DynamoDBBackend.transact_write_items

    def transact(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved: list[tuple[Any, Any, Any, Any]] = []
        for entry in transact_items:
            op = next(iter(entry.values()))
            table = self.tables.get(op.get("TableName"))
            key = op.get("Item") or op.get("Key") or {}
            if table is None or table.range_key_attr is None or table.range_key_attr not in key:
                return original(self, transact_items)  # not our kind of transaction: moto's own backup
            hash_key, range_key = DynamoType(key[table.hash_key_attr]), DynamoType(key[table.range_key_attr])
            saved.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
        try:
            with mock.patch.object(moto_models, "copy", NoTableCopy):
                original(self, transact_items)
        except Exception:
            for table, hash_key, range_key, item in reversed(saved):
                if item is None:
                    table.items[hash_key].pop(range_key, None)
                else:
                    table.items[hash_key][range_key] = item
            raise
        return None

    with mock.patch.object(DynamoDBBackend, "transact_write_items", transact):
        yield
