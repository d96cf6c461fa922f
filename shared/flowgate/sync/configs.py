"""Use case: sync configs, set and read by a contract's org admins (seed 000 "Configuration").

Keys are checked when set (flowgate.sync.keys), kept in Secrets Manager (KeyVault) and never shown:
the view has their fingerprints, and the public half of this side's key so the peer can be configured
from it. A remote URL is https unless its host is on the outbound allow-list (loopback in the local
stack), and a CA certificate must parse as one.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from flowgate.db import StaleVersion
from flowgate.errors import BadRequest, Conflict, Forbidden, NotFound
from flowgate.identity.ports import Directory
from flowgate.observability import logger
from flowgate.sync.keys import fingerprint, private_key, public_key
from flowgate.sync.models import LinkHealth, PutSyncConfigRequest, SyncConfig, SyncRole
from flowgate.sync.ports import KeyVault, Principal, WorkspaceAuthorizer
from flowgate.sync.store import SyncStore
from flowgate.url_guard import OutboundPolicy, UrlNotAllowed, check_url

INBOUND_PATH = "/api/latest/sync_config/{name}/sync"
Clock = Callable[[], datetime]


class SyncConfigs:
    def __init__(
        self,
        store: SyncStore,
        workspaces: WorkspaceAuthorizer,
        directory: Directory,
        *,
        vault: KeyVault,
        policy: OutboundPolicy,
        clock: Clock,
    ) -> None:
        self.store = store
        self.workspaces = workspaces
        self.directory = directory
        self.vault = vault
        self.policy = policy
        self.clock = clock

    def _authorize(self, principal: Principal, wsid: str) -> None:
        """404 outside the caller's contract (the workspace authorizer), 403 below org admin."""
        self.workspaces.authorize_workspace(principal, wsid)
        if not principal.is_contract_admin:
            raise Forbidden("only organization admins configure workspace links (sync configs)")

    def _own(self, wsid: str, name: str) -> dict[str, Any]:
        item = self.store.get(name)
        if item is None or item["workspace_id"] != wsid:
            raise NotFound(f"sync config '{name}' not found")
        return item

    # ---- the routes ----
    def put(
        self, principal: Principal, wsid: str, name: str, request: PutSyncConfigRequest
    ) -> tuple[SyncConfig, bool]:
        self._authorize(principal, wsid)
        current = self.store.get(name)
        if current is not None and current["workspace_id"] != wsid:
            raise Conflict(f"the sync config name '{name}' is taken in this deployment; choose another")
        self._check_url(request.remote_url)
        self._check_certificate(request.ca_certificate)
        rotation_ends_at = _timestamp(request.rotation_ends_at, "rotation_ends_at")
        config_id = current["id"] if current else str(uuid.uuid4())
        keys, key_fields = self._keys(request, current, config_id)
        stamp = self.clock().isoformat()
        fields: dict[str, Any] = {
            "description": request.description,
            "enabled": request.enabled,
            "remote_url": request.remote_url,
            "ca_certificate": request.ca_certificate,
            "verify_ssl": request.verify_ssl,
            "rotation_ends_at": rotation_ends_at,
            "send_all_executions": request.send_all_executions,
            "sync_interval": request.sync_interval,
            "role": (
                request.role or (SyncRole.CONTROLLING if request.remote_url else SyncRole.CONTROLLED)
            ).value,
            "allowed_flows": request.allowed_flows,
            "updated_at": stamp,
            "updated_by": principal.user_id,
            **key_fields,
        }
        if not request.verify_ssl:
            logger.warning(
                "sync config with TLS verification turned off",
                extra={"sync_config": name, "workspace_id": wsid},
            )
        # Each set of keys is its own secret, named on the item (`keys_ref`): a PUT that loses a race
        # deletes its own, and never overwrites the keys the winner's item names.
        if keys is not None:
            self.vault.put(config_id, fields["keys_ref"], keys)
        if current is None:
            item = {
                "id": config_id,
                "workspace_id": wsid,
                "name": name,
                "created_at": stamp,
                "version": 1,
                # The executions made before the link are mirrored too (seed: "including past executions").
                "backfill": "start" if request.send_all_executions else None,
                **fields,
            }
            try:
                self.store.create(
                    {k: v for k, v in item.items() if v is not None}, self.directory.workspace_exists(wsid)
                )
            except Conflict:
                self.vault.delete(config_id, fields["keys_ref"])
                raise
            return self.view(item), True
        if request.send_all_executions and not current.get("send_all_executions"):
            fields["backfill"] = "start"
        try:
            updated = self.store.replace(current, fields)
        except StaleVersion as exc:
            if keys is not None:
                self.vault.delete(config_id, fields["keys_ref"])
            raise Conflict("the sync config was changed by another request at the same time; retry") from exc
        if keys is not None:
            self.vault.delete(config_id, _keys_ref(current))  # the keys it replaced
        return self.view(updated), False

    def get(self, principal: Principal, wsid: str, name: str) -> SyncConfig:
        self._authorize(principal, wsid)
        return self.view(self._own(wsid, name))

    def list(
        self, principal: Principal, wsid: str, limit: int, cursor: str | None
    ) -> tuple[list[SyncConfig], str | None]:
        self._authorize(principal, wsid)
        page = self.store.list_for_workspace(wsid, limit, cursor)
        return [self.view(i) for i in page.items], page.next

    def delete(self, principal: Principal, wsid: str, name: str) -> None:
        self._authorize(principal, wsid)
        item = self._own(wsid, name)
        self.store.delete(item)
        self.vault.delete(item["id"], _keys_ref(item))

    # ---- checks ----
    def _check_url(self, url: str | None) -> None:
        if url is None:
            return
        try:
            target = check_url(url, self.policy, resolve=False)
        except UrlNotAllowed as exc:
            raise BadRequest(f"remote_url: {exc.message}", code="invalid_remote_url") from exc
        host = urlsplit(url).hostname or ""
        if target.scheme != "https" and not self.policy.allow_listed(host):
            raise BadRequest(
                "remote_url must be https (plain http only for hosts on the outbound allow-list)",
                code="invalid_remote_url",
            )

    @staticmethod
    def _check_certificate(pem: str | None) -> None:
        """One or more PEM certificates, and nothing else: the field is shown, so a private key pasted
        along with a certificate must not be stored in it."""
        if pem is None:
            return
        labels = set(re.findall(r"-----BEGIN ([A-Z0-9 ]+)-----", pem))
        if labels - {"CERTIFICATE"}:
            raise BadRequest(
                "ca_certificate takes PEM certificates only (-----BEGIN CERTIFICATE-----), no keys",
                code="invalid_certificate",
            )
        try:
            x509.load_pem_x509_certificates(pem.strip().encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise BadRequest(
                "ca_certificate is not a PEM certificate (-----BEGIN CERTIFICATE-----)",
                code="invalid_certificate",
            ) from exc

    def _keys(
        self, request: PutSyncConfigRequest, current: Mapping[str, Any] | None, config_id: str
    ) -> tuple[dict[str, str | None] | None, dict[str, Any]]:
        """The keys to store (None: keep the stored ones) and the fields that describe them."""
        given = {
            "own_private_key": request.own_private_key,
            "remote_public_key": request.remote_public_key,
            "remote_public_key_next": request.remote_public_key_next,
        }
        if current is None:
            missing = [f for f in ("own_private_key", "remote_public_key") if not given[f]]
            if missing:
                raise BadRequest(f"a new sync config needs {' and '.join(missing)}", code="missing_key")
        if (
            all(v is None for v in given.values())
            and "remote_public_key_next" not in request.model_fields_set
        ):
            return None, {}
        stored = self.vault.get(config_id, _keys_ref(current)) if current is not None else {}
        merged = {k: v if v is not None else stored.get(k) for k, v in given.items()}
        if "remote_public_key_next" in request.model_fields_set:  # null retires the next key by hand
            merged["remote_public_key_next"] = request.remote_public_key_next
        own = private_key(str(merged["own_private_key"]), "own_private_key")
        remote = public_key(str(merged["remote_public_key"]), "remote_public_key")
        nxt = merged.get("remote_public_key_next")
        nxt_key = public_key(nxt, "remote_public_key_next") if nxt else None
        own_fp = fingerprint(own.public_key())
        for field, key in (("remote_public_key", remote), ("remote_public_key_next", nxt_key)):
            if key is not None and fingerprint(key) == own_fp:
                raise BadRequest(
                    f"{field} is this side's own key: each side needs its own pair (make keys)",
                    code="invalid_key",
                )
        public_pem = own.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        fields = {
            "own_key_fingerprint": own_fp,
            "own_public_key": public_pem.decode(),
            "remote_key_fingerprint": fingerprint(remote),
            "remote_key_next_fingerprint": fingerprint(nxt_key) if nxt_key else None,
            "keys_ref": uuid.uuid4().hex,
        }
        return merged, fields

    def view(self, item: Mapping[str, Any]) -> SyncConfig:
        return SyncConfig(
            id=item["id"],
            workspace_id=item["workspace_id"],
            name=item["name"],
            description=item.get("description"),
            enabled=bool(item.get("enabled")),
            role=SyncRole(item["role"]),
            dials_out=bool(item.get("remote_url")),
            remote_url=item.get("remote_url"),
            inbound_path=INBOUND_PATH.format(name=item["name"]),
            ca_certificate=item.get("ca_certificate"),
            verify_ssl=bool(item.get("verify_ssl", True)),
            own_key_fingerprint=item["own_key_fingerprint"],
            own_public_key=item["own_public_key"],
            remote_key_fingerprint=item["remote_key_fingerprint"],
            remote_key_next_fingerprint=item.get("remote_key_next_fingerprint"),
            rotation_ends_at=item.get("rotation_ends_at"),
            send_all_executions=bool(item.get("send_all_executions")),
            sync_interval=item.get("sync_interval"),
            allowed_flows=item.get("allowed_flows"),
            health=LinkHealth(
                last_success_at=item.get("last_success_at"),
                last_error=item.get("last_error"),
                last_error_at=item.get("last_error_at"),
                backlog=self.store.backlog(item["id"]),
                peer_key_fingerprint=item.get("peer_key_fingerprint"),
            ),
            created_at=item["created_at"],
            updated_at=item["updated_at"],
            version=int(item["version"]),
        )


def _keys_ref(item: Mapping[str, Any]) -> str:
    return str(item["keys_ref"])


def _timestamp(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(f"{field} must be an ISO 8601 time, e.g. 2027-01-31T12:00:00Z") from exc
    if parsed.tzinfo is None:
        raise BadRequest(f"{field} must have a time zone, e.g. 2027-01-31T12:00:00Z")
    return parsed.isoformat()
