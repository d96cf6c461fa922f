"""Storage of the workflow's settings: the platform properties, each enterprise's workflow settings and
its resource usage (docs/access-patterns.md W4, W5). The rules that keep the properties consistent
(no enabling without an endpoint, no removing the endpoint while enabled) are conditions of the
writes here, so two admins cannot interleave past them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flowgate.db import Table, Write
from flowgate.workflow.models import EnterpriseSettings
from flowgate.workflow.rules import Usage
from flowgate.workflow.store.keys import NOT_EXISTS, PLATFORM_KEY, enterprise_key, usage_key
from flowgate.workflow.store.records import usage_from
from flowgate.workflow.store.writes import set_clause


@dataclass(frozen=True)
class PlatformRecord:
    endpoint: str | None = None
    enabled: str = "0"  # "0" or "1", as Abiquo's property is
    signing_secret_set: bool = False  # its value lives in Secrets Manager, never in the table

    @property
    def workflow_on(self) -> bool:
        return self.enabled == "1" and bool(self.endpoint)


@dataclass(frozen=True)
class EnterpriseRecord:
    settings: EnterpriseSettings
    version: int | None  # None: never written (the defaults apply)


class SettingsStore:
    def __init__(self, table: Table) -> None:
        self.table = table

    # ---- enterprise settings and usage ----
    def get_enterprise(self, cid: str) -> EnterpriseRecord:
        key = enterprise_key(cid)
        item = self.table.get(key["PK"], key["SK"])
        if item is None:
            return EnterpriseRecord(EnterpriseSettings(), None)
        return EnterpriseRecord(EnterpriseSettings.model_validate(item["settings"]), int(item["version"]))

    def put_enterprise(
        self,
        cid: str,
        settings: EnterpriseSettings,
        *,
        by: str,
        at: str,
        read_version: int | None,
        contract_exists: Write,
    ) -> None:
        """Replace the settings if nobody else did since they were read (optimistic lock), while the
        contract exists (`contract_exists`, a condition from identity)."""
        first = read_version is None
        item = {
            **enterprise_key(cid),
            "settings": settings.model_dump(mode="json"),
            "updated_by": by,
            "updated_at": at,
            "version": 1 if first else (read_version or 0) + 1,
        }
        self.table.transact(
            [
                Write(
                    "Put",
                    item=item,
                    condition=NOT_EXISTS if first else "version = :v",
                    values={} if first else {":v": read_version},
                    conflict="the enterprise's settings were changed by another request; reload and retry",
                ),
                contract_exists,
            ]
        )

    def get_usage(self, cid: str) -> Usage:
        key = usage_key(cid)
        return usage_from(self.table.get(key["PK"], key["SK"]))

    # ---- platform properties ----
    def get_platform(self) -> PlatformRecord:
        item = self.table.get(PLATFORM_KEY["PK"], PLATFORM_KEY["SK"]) or {}
        return PlatformRecord(
            endpoint=str(item["endpoint"]) if item.get("endpoint") else None,
            enabled=str(item.get("enabled", "0")),
            signing_secret_set=bool(item.get("signing_secret_set")),
        )

    def set_endpoint(self, url: str, *, by: str, at: str) -> None:
        self._update({"endpoint": url, **_stamp(by, at)}, [])

    def remove_endpoint(self, *, by: str, at: str) -> bool:
        """Remove the workflow endpoint; False (nothing changed) while workflow is enabled."""
        return self._update(
            _stamp(by, at),
            ["endpoint"],
            condition="attribute_not_exists(enabled) OR enabled = :zero",
            zero="0",
        )

    def set_enabled(self, on: bool, *, by: str, at: str) -> bool:
        """Switch workflow on or off; False (nothing changed) when switching on without an endpoint."""
        condition = "attribute_exists(endpoint)" if on else None
        return self._update({"enabled": "1" if on else "0", **_stamp(by, at)}, [], condition=condition)

    def mark_signing_secret(self, chosen: bool, *, by: str, at: str) -> None:
        """Whether the platform admin chose a webhook signing secret (kept in Secrets Manager); False
        goes back to the stack's own. A value an older release stored here is removed either way."""
        if chosen:
            self._update({"signing_secret_set": True, **_stamp(by, at)}, ["signing_secret"])
        else:
            self._update(_stamp(by, at), ["signing_secret_set", "signing_secret"])

    def _update(
        self, sets: Mapping[str, Any], removes: Iterable[str], *, condition: str | None = None, **values: Any
    ) -> bool:
        names: dict[str, str] = {}
        vals: dict[str, Any] = {f":{k}": v for k, v in values.items()}
        parts = []
        set_parts = set_clause(sets, names, vals)
        if set_parts:
            parts.append("SET " + ", ".join(set_parts))
        removed = list(removes)
        for i, attr in enumerate(removed):
            names[f"#r{i}"] = attr
        if removed:
            parts.append("REMOVE " + ", ".join(f"#r{i}" for i in range(len(removed))))
        updated = self.table.update(
            PLATFORM_KEY, " ".join(parts), condition=condition, names=names, values=vals
        )
        return updated is not None


def _stamp(by: str, at: str) -> dict[str, str]:
    return {"updated_at": at, "updated_by": by}
