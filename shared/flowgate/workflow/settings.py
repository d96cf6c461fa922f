"""Use cases: the platform's workflow properties (seed 002's `POST /api/config/properties`) and an
enterprise's workflow settings (`GET`, modify, `PUT /api/admin/enterprises/{id}`).

An enterprise is a contract of the identity context: a caller outside it gets 404, one inside it
without an admin role 403 on changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowgate.clock import Clock, iso_ms
from flowgate.errors import BadRequest, Forbidden, NotFound
from flowgate.identity.ports import Contract, Directory, Principal
from flowgate.url_guard import OutboundPolicy, check_url
from flowgate.workflow import rules
from flowgate.workflow.common import one_of, validated
from flowgate.workflow.models import (
    Enterprise,
    EnterpriseSettings,
    Property,
    PropertyName,
    PutEnterpriseRequest,
)
from flowgate.workflow.ports import SecretValue
from flowgate.workflow.store.settings import SettingsStore


class WorkflowSettings:
    def __init__(
        self,
        store: SettingsStore,
        directory: Directory,
        outbound_policy: OutboundPolicy,
        clock: Clock,
        signing_secret: SecretValue,
    ) -> None:
        self.store = store
        self.chosen_signing_secret = signing_secret
        self.directory = directory
        self.outbound_policy = outbound_policy
        self.clock = clock

    # ---- platform properties ----
    def set_property(self, principal: Principal, name: str, value: str) -> Property:
        """Endpoint first, then enabled: enabling with no endpoint is refused, and so is removing the
        endpoint while enabled (both are conditions of the write, so two admins cannot interleave past
        them)."""
        if not principal.platform_admin:
            raise Forbidden("only the platform admin sets platform properties")
        prop = one_of(PropertyName, name, "the property", [p.value for p in PropertyName])
        text = value.strip()
        by, at = principal.user_id, iso_ms(self.clock())
        if prop == PropertyName.ENDPOINT:
            self._set_endpoint(text, by, at)
        elif prop == PropertyName.ENABLED:
            if text not in ("0", "1"):
                raise BadRequest(f"{prop.value} is 0 or 1", code="invalid_property")
            if not self.store.set_enabled(text == "1", by=by, at=at):
                raise BadRequest(
                    f"set {PropertyName.ENDPOINT.value} before enabling workflow",
                    code="workflow_endpoint_missing",
                )
        else:
            self._set_signing_secret(text, by, at)
        return next(p for p in self._properties() if p.name == prop)

    def _set_signing_secret(self, text: str, by: str, at: str) -> None:
        """The value goes to Secrets Manager first, then the table says one is chosen; clearing undoes it
        in the other order, so the notifier never signs with a secret that is not there."""
        if text:
            rules.check_signing_secret(text)
            self.chosen_signing_secret.put(text)
            self.store.mark_signing_secret(True, by=by, at=at)
        else:
            self.store.mark_signing_secret(False, by=by, at=at)
            self.chosen_signing_secret.delete()

    def _set_endpoint(self, url: str, by: str, at: str) -> None:
        if not url:
            if not self.store.remove_endpoint(by=by, at=at):
                raise BadRequest(
                    f"set {PropertyName.ENABLED.value} to 0 before removing the workflow endpoint",
                    code="workflow_enabled",
                )
            return
        check_url(url, self.outbound_policy)
        self.store.set_endpoint(url, by=by, at=at)

    def list_properties(self, principal: Principal) -> list[Property]:
        """The workflow properties; the signing secret only as set or not (it is write-only)."""
        del principal  # every authenticated caller may read them: the UI needs to know if workflow is on
        return self._properties()

    def _properties(self) -> list[Property]:
        platform = self.store.get_platform()
        return [
            Property(name=PropertyName.ENDPOINT, value=platform.endpoint, isSet=bool(platform.endpoint)),
            Property(name=PropertyName.ENABLED, value=platform.enabled, isSet=True),
            Property(
                name=PropertyName.SIGNING_SECRET,
                value=None,
                writeOnly=True,
                isSet=platform.signing_secret_set,
            ),
        ]

    def notification_target(self) -> str | None:
        """Where held tasks are announced (also after workflow was switched off: they still wait)."""
        return self.store.get_platform().endpoint

    def signing_secret(self) -> str | None:
        """The webhook signing secret the platform admin chose, for the notifier only."""
        if not self.store.get_platform().signing_secret_set:
            return None
        return self.chosen_signing_secret.get()

    # ---- enterprise settings ----
    def _contract(self, principal: Principal, cid: str) -> Contract:
        contract = self.directory.find_contract(cid)
        if contract is None or not (principal.platform_admin or principal.contract_id == cid):
            raise NotFound("enterprise not found")
        return contract

    def get_enterprise(self, principal: Principal, cid: str) -> Enterprise:
        contract = self._contract(principal, cid)
        return _enterprise(contract, self.store.get_enterprise(cid).settings)

    def put_enterprise(
        self, principal: Principal, cid: str, body: PutEnterpriseRequest | Mapping[str, Any]
    ) -> Enterprise:
        """Replace the enterprise's workflow settings with the full representation sent."""
        request = validated(PutEnterpriseRequest, body)
        contract = self._contract(principal, cid)
        if not principal.is_contract_admin:
            raise Forbidden("only the platform admin, the enterprise's owner or an org admin changes it")
        if request.id is not None and request.id != cid:
            raise BadRequest("the body's id is not this enterprise's", code="invalid_request")
        if request.name is not None and request.name != contract.name:
            raise BadRequest(
                "the enterprise's name is changed through the contract (/api/latest/contracts/{id})",
                code="read_only_field",
            )
        settings = EnterpriseSettings.model_validate(
            request.model_dump(include=set(EnterpriseSettings.model_fields))
        )
        version = self.store.get_enterprise(cid).version
        self.store.put_enterprise(
            cid,
            settings,
            by=principal.user_id,
            at=iso_ms(self.clock()),
            read_version=version,
            contract_exists=self.directory.contract_exists(cid),
        )
        return _enterprise(contract, settings)


def _enterprise(contract: Contract, settings: EnterpriseSettings) -> Enterprise:
    return Enterprise(id=contract.id, name=contract.name, **settings.model_dump())
