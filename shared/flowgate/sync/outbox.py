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
        dials = bool(config.get("enabled") and config.get("remote_url"))
        interval = config.get("sync_interval") if dials else None
        # The batch window is claimed before the message is stored, so a round that reads the config in
        # between sees the window and leaves the message to it.
        opened = self._open_window(config["name"], int(now), int(interval)) if interval else None
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S.%f")
        self.store.enqueue(
            config["id"], message.id, message.model_dump_json(), stamp, int(now) + OUTBOX_TTL_SECONDS
        )
        if not dials:
            return  # a listening side: the peer's next exchange collects it
        if not interval:
            self.trigger.exchange(config["name"])
        elif opened is not None:
            self.trigger.exchange(config["name"], opened)

    def _open_window(self, name: str, now: int, interval: int) -> int | None:
        """The delay of the batch window this message opens, or None when one is open already."""
        delay = min(interval, MAX_DELAY_SECONDS)
        return delay if self.store.claim(name, "next_send_at", now, now + delay) else None
