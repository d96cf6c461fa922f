"""What the sync context keeps in the table. So far: the nonces of verified requests (`NonceStore`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from flowgate.db import Table
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
