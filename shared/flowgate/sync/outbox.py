"""Use case: queue a message for a link's peer, and have it sent.

A message is stored in the config's outbox before anything else, and leaves it only when the peer has
acknowledged it (a verified answer), so no message is lost while the peer is unreachable. A config that
dials out has the sender triggered: at once without `sync_interval`, else once per interval (the first
message of a window claims the send, the others ride on it). A config that only listens keeps its
messages for the peer's next exchange, which is answered as soon as they are there (long polling).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from flowgate.sync.ports import Trigger
from flowgate.sync.protocol import Cancel, Mirror, Run, Status
from flowgate.sync.store import SyncStore

OUTBOX_TTL_SECONDS = 14 * 86400  # a message nobody collected in two weeks is dropped
MAX_DELAY_SECONDS = 900  # SQS DelaySeconds at most


class Outbox:
    def __init__(self, store: SyncStore, trigger: Trigger, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.trigger = trigger
        self.clock = clock

    def add(self, config: Mapping[str, Any], message: Run | Cancel | Status | Mirror) -> None:
        now = self.clock()
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S.%f")
        self.store.enqueue(
            config["id"], message.id, message.model_dump_json(), stamp, int(now) + OUTBOX_TTL_SECONDS
        )
        self.wake(config)

    def wake(self, config: Mapping[str, Any]) -> None:
        if not (config.get("enabled") and config.get("remote_url")):
            return  # a listening side: the peer's next exchange collects it
        interval = config.get("sync_interval")
        if not interval:
            self.trigger.exchange(config["name"])
            return
        now = int(self.clock())
        delay = min(int(interval), MAX_DELAY_SECONDS)
        if self.store.claim(config["name"], "next_send_at", now, now + delay):
            self.trigger.exchange(config["name"], delay)
