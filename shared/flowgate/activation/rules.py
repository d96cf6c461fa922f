"""Pure rules of active flows: status transitions, due-time arithmetic, message size and ids.

Kept free of I/O so the unit tests pin them down exactly; the service and the enforcer only apply them.
Times in keys are UTC ISO-8601 with milliseconds (`2024-05-01T10:00:00.123Z`): fixed width, so they sort
as time, which is what makes the due index a range query.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from flowgate.activation.models import ActivationStatus, MessageStatus
from flowgate.clock import iso_ms
from flowgate.errors import BadRequest, Conflict, PayloadTooLarge

# Greater than every character of a workspace id or a flow name, so `<now>#~` bounds every due entry
# whose time is <= now whatever follows the time.
_SORT_HIGH = "~"
FINAL_MESSAGE_STATUSES = frozenset({MessageStatus.DONE, MessageStatus.FAILED, MessageStatus.DISCARDED})


def stops_at(started: datetime, max_runtime_seconds: int) -> datetime:
    """When a limited workspace's flow that started (or began to count) at `started` must stop."""
    return started + timedelta(seconds=max_runtime_seconds)


def warn_at(started: datetime, stop: datetime, warning_seconds: int) -> datetime:
    """When to warn: `warning_seconds` before the stop, but never before the flow started."""
    return max(started, stop - timedelta(seconds=warning_seconds))


def seconds_left(stop: datetime, now: datetime) -> int:
    """Whole seconds until the stop, rounded up (a flow 0.2 s from its stop still has 1 s), never < 0."""
    return max(0, math.ceil((stop - now).total_seconds()))


def due_sort_key(at: str, workspace_id: str, flow: str) -> str:
    return f"{at}#{workspace_id}#{flow}"


def due_upper_bound(now: datetime) -> str:
    """The inclusive upper bound of a due-index Query: every entry whose time is <= now."""
    return f"{iso_ms(now)}#{_SORT_HIGH}"


def retention_ttl(now: datetime, days: int) -> int:
    """The `ttl` attribute (epoch seconds) of an item to keep for `days`."""
    return int(now.timestamp()) + days * 86400


def message_bytes(body: Any) -> int:
    """A message's size as compact UTF-8 JSON: what is stored and handed to the flow."""
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


def check_message(body: Any, max_bytes: int) -> dict[str, Any]:
    """A message is a JSON object of at most `max_bytes`: 400 for anything else, 413 when too large."""
    if not isinstance(body, Mapping):
        raise BadRequest("a message must be a JSON object", code="invalid_message")
    size = message_bytes(body)
    if size > max_bytes:
        raise PayloadTooLarge(f"the message is {size} bytes as JSON; at most {max_bytes} are accepted")
    return dict(body)


def new_message_id(now: datetime) -> str:
    """A UUID whose first 48 bits are the milliseconds since the epoch (UUIDv7 layout), so message ids
    sort in order of arrival within a flow's partition."""
    millis = int(now.timestamp() * 1000) & ((1 << 48) - 1)
    rand = uuid.uuid4().int & ((1 << 74) - 1)
    value = (millis << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def check_deactivate(status: ActivationStatus, flow: str) -> None:
    """Only an active flow can be deactivated; the 409 says what to do instead."""
    if status == ActivationStatus.STOPPED:
        raise Conflict(
            f"the flow '{flow}' was stopped and is not active; activate it to start it again",
            code="flow_not_active",
        )
    if status != ActivationStatus.ACTIVE:
        raise Conflict(f"the flow '{flow}' is not active", code="flow_not_active")


def check_accepts_messages(status: ActivationStatus, flow: str) -> None:
    """Messages are taken only while the flow is active: a 409, never a message quietly dropped."""
    if status != ActivationStatus.ACTIVE:
        raise Conflict(
            f"the flow '{flow}' is {status.value}; activate it before posting messages",
            code="flow_not_active",
        )


def is_final(status: MessageStatus) -> bool:
    return status in FINAL_MESSAGE_STATUSES
