"""The enforcer (DESIGN §3.4): stops the active flows of limited workspaces when their runtime is up,
and warns before that.

It reads only what is due: the due index (`DUE#STOP`, `DUE#WARN`, sort key `<time>#<wsid>#<flow>`) is
queried up to now, so a run costs AWS calls in proportion to the flows due, not to all active flows.
Full workspaces never have due entries. Each stop is one conditional write on the activation it was
scheduled for (`status = active AND activated_at = :due's`): a duplicate or concurrent schedule event
loses that condition and does nothing, so a flow is stopped, and its messages counted, once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from flowgate.activation import rules
from flowgate.activation.models import (
    ActivationSettings,
    ActivationStatus,
    EnforcerReport,
    FailedEntry,
    StoppedFlow,
    StopReason,
    WarnedFlow,
)
from flowgate.activation.ports import EventPublisher
from flowgate.activation.service import audit_item, discard_queued
from flowgate.activation.store import STOP, WARN, ActivationStore, due_key
from flowgate.clock import Clock, iso_ms, now, parse_iso, truncate_ms
from flowgate.db import Item
from flowgate.observability import logger

R = TypeVar("R")

STOPPED_EVENT = "Flowgate Flow Stopped"
WARNING_EVENT = "Flowgate Flow Stop Warning"


class Enforcer:
    def __init__(
        self,
        store: ActivationStore,
        events: EventPublisher,
        settings: ActivationSettings,
        clock: Clock = now,
    ) -> None:
        self.store = store
        self.events = events
        self.settings = settings
        self.clock = clock

    def run(self, now: datetime | None = None) -> EnforcerReport:
        """Stop what is due, then warn what is due (a flow stopped in this run is not warned).

        Each entry is handled on its own: one that fails (a tenant's item that cannot be read or
        written) is logged and counted in `report.failed`, and the run goes on with the others, so one
        tenant's data never keeps another tenant's flow running past its limit. A failed entry stays
        due, so the next run tries it again."""
        moment = truncate_ms(now or self.clock())
        report = EnforcerReport()
        bound = rules.due_upper_bound(moment)
        for entry in list(self.store.due(STOP, bound)):
            stopped = self._isolated("stop", entry, self._stop, moment, report)
            if stopped is not None:
                report.stopped.append(stopped)
        for entry in list(self.store.due(WARN, bound)):
            warned = self._isolated("warn", entry, self._warn, moment, report)
            if warned is not None:
                report.warned.append(warned)
        if report.failed:
            logger.error(
                "enforcer entries failed; they are retried next run",
                extra={"failed": len(report.failed), "stopped": len(report.stopped)},
            )
        return report

    @staticmethod
    def _isolated(
        action: str,
        entry: Item,
        handle: Callable[[Item, datetime], R | None],
        now: datetime,
        report: EnforcerReport,
    ) -> R | None:
        try:
            return handle(entry, now)
        except Exception as exc:
            failed = FailedEntry(
                str(entry.get("workspace_id", "?")), str(entry.get("flow", "?")), action, type(exc).__name__
            )
            report.failed.append(failed)
            logger.exception(
                "an enforcer entry failed",
                extra={"workspace_id": failed.workspace_id, "flow": failed.flow, "action": action},
            )
            return None

    # ---- the stop ----
    def _stop(self, entry: Item, now: datetime) -> StoppedFlow | None:
        wsid, flow, activated_at = entry["workspace_id"], entry["flow"], entry["activated_at"]
        at = iso_ms(now)
        stop = {
            "at": at,
            "reason": StopReason.RUNTIME_LIMIT.value,
            "discarded": 0,
            "activated_at": activated_at,
        }
        if not self.store.begin_stop(wsid, flow, activated_at, stop):
            return self._after_lost_stop(entry, now)
        return self._finish(entry, at, now)

    def _finish(self, entry: Item, at: str, now: datetime) -> StoppedFlow | None:
        """Discard the queued messages, then record the count, the audit and remove the due entries."""
        wsid, flow, activated_at = entry["workspace_id"], entry["flow"], entry["activated_at"]
        ttl = rules.retention_ttl(now, self.settings.retention_days_limited)
        discarded = discard_queued(
            self.store, wsid, flow, reason=StopReason.RUNTIME_LIMIT.value, at=iso_ms(now), ttl=ttl
        )
        audit = audit_item(
            wsid,
            flow,
            at,
            "stopped",
            reason=StopReason.RUNTIME_LIMIT.value,
            discarded=discarded,
            activated_at=activated_at,
        )
        if not self.store.finish_stop(
            wsid, flow, activated_at, discarded=discarded, due=self._due_keys(entry), audit=audit
        ):
            # Another run finished this stop first: still count what this one discarded.
            if discarded:
                self.store.add_discarded(wsid, flow, activated_at, discarded)
            return None
        self._publish(
            STOPPED_EVENT,
            {
                "workspace_id": wsid,
                "flow": flow,
                "stopped_at": at,
                "reason": StopReason.RUNTIME_LIMIT.value,
                "discarded": discarded,
            },
        )
        return StoppedFlow(wsid, flow, at, discarded)

    def _after_lost_stop(self, entry: Item, now: datetime) -> StoppedFlow | None:
        """The stop write lost. Nothing to do when another run is stopping it right now; a stop left
        half done (its run died) is finished after the lease; an entry of an older activation goes."""
        current = self.store.get_activation(entry["workspace_id"], entry["flow"])
        stop: dict[str, Any] = (current or {}).get("stop") or {}
        if (
            current is not None
            and current["status"] == ActivationStatus.ACTIVE
            and (current["activated_at"] == entry["activated_at"])
        ):
            return None  # cannot happen for a due entry unless the write failed otherwise; retry next run
        if stop.get("activated_at") == entry["activated_at"] and stop.get("complete") is False:
            started = parse_iso(stop["at"])
            if now - started < timedelta(seconds=self.settings.stop_lease_seconds):
                return None
            logger.warning("finishing a stop left half done", extra={"flow": entry["flow"]})
            return self._finish(entry, stop["at"], now)
        for key in self._due_keys(entry):
            self.store.delete_due(key)  # stale: the activation it was scheduled for is over
        return None

    @staticmethod
    def _due_keys(entry: Item) -> list[dict[str, str]]:
        keys = [{"PK": entry["PK"], "SK": entry["SK"]}] if entry["PK"] == f"DUE#{STOP}" else []
        if entry.get("warn_at"):
            keys.append(due_key(WARN, entry["warn_at"], entry["workspace_id"], entry["flow"]))
        if entry["PK"] != f"DUE#{STOP}":
            keys.append(due_key(STOP, entry["stops_at"], entry["workspace_id"], entry["flow"]))
        return keys

    # ---- the warning ----
    def _warn(self, entry: Item, now: datetime) -> WarnedFlow | None:
        """Record `warned_at` once per activation and publish the warning event."""
        at = iso_ms(now)
        if not self.store.mark_warned(entry, at):
            current = self.store.get_activation(entry["workspace_id"], entry["flow"])
            if (
                current is None
                or current.get("activated_at") != entry["activated_at"]
                or (current["status"] != ActivationStatus.ACTIVE)
            ):
                self.store.delete_due({"PK": entry["PK"], "SK": entry["SK"]})  # stale entry
            return None
        left = rules.seconds_left(parse_iso(entry["stops_at"]), now)
        detail = {
            "workspace_id": entry["workspace_id"],
            "flow": entry["flow"],
            "stops_at": entry["stops_at"],
            "seconds_left": left,
        }
        try:
            self.events.publish(WARNING_EVENT, detail)
        except Exception:
            logger.exception("the stop warning could not be published; it is retried next run")
            self.store.unmark_warned(entry, at)
            return None
        return WarnedFlow(entry["workspace_id"], entry["flow"], entry["stops_at"], left)

    def _publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        """The stop event is informative: the stop is recorded whether or not it can be published."""
        try:
            self.events.publish(detail_type, detail)
        except Exception:
            logger.exception("an event could not be published", extra={"detail_type": detail_type})
