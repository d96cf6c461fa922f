"""The pure rules of active flows: transitions, due-time arithmetic, seconds left, message size, ids,
and the settings read from the environment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flowgate import clock
from flowgate.activation import rules
from flowgate.activation.models import ActivationSettings, ActivationStatus, MessageStatus
from flowgate.errors import BadRequest, Conflict, PayloadTooLarge

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def test_iso_ms_is_fixed_width_and_sorts_as_time() -> None:
    a, b = clock.iso_ms(T0), clock.iso_ms(T0 + timedelta(milliseconds=1))
    assert a == "2024-05-01T10:00:00.000Z"
    assert len(a) == len(b)
    assert a < b
    assert clock.parse_iso(b) == T0 + timedelta(milliseconds=1)


def test_truncate_drops_below_milliseconds() -> None:
    assert clock.truncate_ms(T0 + timedelta(microseconds=1999)) == T0 + timedelta(milliseconds=1)


def test_stop_and_warning_times() -> None:
    stop = rules.stops_at(T0, 28800)
    assert stop == T0 + timedelta(hours=8)
    assert rules.warn_at(T0, stop, 900) == stop - timedelta(minutes=15)
    # A warning longer than the whole runtime warns at once, never before the start.
    assert rules.warn_at(T0, rules.stops_at(T0, 5), 900) == T0


@pytest.mark.parametrize(
    ("delta", "left"),
    [
        (timedelta(seconds=10), 10),
        (timedelta(milliseconds=200), 1),
        (timedelta(0), 0),
        (timedelta(seconds=-5), 0),
    ],
)
def test_seconds_left_rounds_up_and_never_goes_negative(delta: timedelta, left: int) -> None:
    assert rules.seconds_left(T0 + delta, T0) == left


def test_due_upper_bound_covers_every_entry_up_to_now_and_none_after() -> None:
    bound = rules.due_upper_bound(T0)
    at_now = rules.due_sort_key(clock.iso_ms(T0), "ws-zz", "flow.Z_z-9")
    later = rules.due_sort_key(clock.iso_ms(T0 + timedelta(milliseconds=1)), "a", "a")
    assert at_now <= bound < later


def test_retention_ttl_is_epoch_seconds_days_ahead() -> None:
    assert rules.retention_ttl(T0, 7) == int(T0.timestamp()) + 7 * 86400


def test_message_size_limits() -> None:
    assert rules.check_message({"a": 1}, 100) == {"a": 1}
    assert rules.message_bytes({"a": "é"}) == len('{"a":"é"}'.encode())
    with pytest.raises(PayloadTooLarge):
        rules.check_message({"x": "y" * 100}, 100)
    with pytest.raises(BadRequest):
        rules.check_message([1, 2], 100)


def test_message_ids_sort_in_order_of_arrival() -> None:
    ids = [rules.new_message_id(T0 + timedelta(milliseconds=i)) for i in range(50)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 50
    assert ids[0][14] == "7"  # the UUIDv7 layout


def test_status_transitions() -> None:
    rules.check_deactivate(ActivationStatus.ACTIVE, "f")
    with pytest.raises(Conflict, match="stopped"):
        rules.check_deactivate(ActivationStatus.STOPPED, "f")
    with pytest.raises(Conflict, match="not active"):
        rules.check_deactivate(ActivationStatus.INACTIVE, "f")
    rules.check_accepts_messages(ActivationStatus.ACTIVE, "f")
    for status in (ActivationStatus.INACTIVE, ActivationStatus.STOPPED):
        with pytest.raises(Conflict) as caught:
            rules.check_accepts_messages(status, "f")
        assert caught.value.status == 409
    assert rules.is_final(MessageStatus.DISCARDED)
    assert not rules.is_final(MessageStatus.QUEUED)


def test_settings_from_environment() -> None:
    settings = ActivationSettings.from_environ(
        {"LIMITED_MAX_RUNTIME_SECONDS": "5", "STOP_WARNING_SECONDS": "2", "MAX_ACTIVE_FLOWS_LIMITED": "1"}
    )
    assert (settings.max_runtime_seconds, settings.warning_seconds, settings.max_active_flows_limited) == (
        5,
        2,
        1,
    )
    defaults = ActivationSettings.from_environ({})
    assert defaults.max_runtime_seconds == 28800
    assert defaults.retention_days("limited") == 7
    assert defaults.retention_days("full") == 90
