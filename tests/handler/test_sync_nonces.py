"""The sync nonce store on the table (moto): one acceptance per nonce, even under concurrent requests."""

from __future__ import annotations

import threading

import boto3

from flowgate.db import Table
from flowgate.sync.store import TableNonceStore, nonce_key


def test_a_nonce_is_accepted_once_and_expires_by_ttl(aws: str):
    store = TableNonceStore(Table(aws), clock=lambda: 1_000_000.0)
    assert store.remember("kid", "n-1", ttl_seconds=600) is True
    assert store.remember("kid", "n-1", ttl_seconds=600) is False
    assert store.remember("other-kid", "n-1", ttl_seconds=600) is True  # nonces are per signing key
    item = boto3.client("dynamodb").get_item(
        TableName=aws, Key={k: {"S": v} for k, v in nonce_key("kid", "n-1").items()}
    )
    assert item["Item"]["ttl"] == {"N": "1000600"}


def test_concurrent_requests_with_one_nonce_resolve_to_exactly_one(aws: str, atomic_writes: None):
    store = TableNonceStore(Table(aws))
    start = threading.Barrier(16)
    accepted: list[bool] = []
    lock = threading.Lock()

    def request() -> None:
        start.wait()
        outcome = store.remember("kid", "race", ttl_seconds=600)
        with lock:
            accepted.append(outcome)

    threads = [threading.Thread(target=request) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(accepted) == [False] * 15 + [True]
