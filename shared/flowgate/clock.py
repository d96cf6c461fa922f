"""The platform's one clock and its time formats.

Services take a `Clock` (tests pass a fixed or stepping one); nothing else reads the system time.
Stored times are UTC; `iso` has seconds, `iso_ms` milliseconds (the precision sort keys compare).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ms(moment: datetime) -> str:
    """A sortable UTC timestamp with milliseconds."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def truncate_ms(moment: datetime) -> datetime:
    """The moment as stored: read the clock once and keep it at the precision of the keys."""
    return parse_iso(iso_ms(moment))


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def iso_of_ms(ms: int) -> str:
    return iso_ms(datetime.fromtimestamp(ms / 1000, tz=UTC))
