"""The `propagate` call (seed 004): copy one artifact to a site of another deployment, by id.

The source logs in to the target as the given administrator, finds the site by name and PUTs the
artifact's full representation there under the same id (create-or-replace). What is not propagated
(a command's user groups, a flow's folder, ACLs) is not sent: relationships stay the target's. An
artifact the target already holds unchanged is not written again (the answer says so), and `dryRun`
only compares. Both sides keep a record: the source here, the target in its admin audit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from flowgate.identity.ports import Principal
from flowgate.observability import logger
from flowgate.propagation import jsonrpc
from flowgate.propagation.artifacts import Artifacts, Audit, check_id
from flowgate.propagation.client import TargetClient
from flowgate.propagation.jsonrpc import Call, RpcError
from flowgate.propagation.models import PropagateParams
from flowgate.propagation.store import PropagationStore

RECORDS = "PROPAGATIONS"


def params_of(call: Call) -> PropagateParams:
    try:
        return PropagateParams.model_validate(call.params)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "params" for e in exc.errors()})
        problems = [
            f"{'.'.join(str(p) for p in e['loc'])}: "
            + ("unknown parameter" if e["type"] == "extra_forbidden" else e["msg"])
            for e in exc.errors()
        ]
        raise RpcError(
            jsonrpc.INVALID_PARAMS, "Invalid params: " + "; ".join(problems), {"fields": fields}, call.id
        ) from None


class Propagator:
    def __init__(
        self,
        artifacts: Artifacts,
        store: PropagationStore,
        audit: Audit,
        client: Callable[[str], TargetClient],
    ) -> None:
        self.artifacts = artifacts
        self.store = store
        self.audit = audit
        self.client = client

    def propagate(
        self, principal: Principal, site: str, path: str, artifact_id: str, call: Call
    ) -> dict[str, Any]:
        """The JSON-RPC answer of a successful call; RpcError (with the call's id) otherwise."""
        kind = self.artifacts.kind(path)
        self.artifacts.admin.site(principal, site)  # 404/403 before anything else, as for every route
        try:
            artifact_id = check_id(artifact_id, kind.label)
        except Exception:
            raise RpcError(
                jsonrpc.INVALID_PARAMS,
                f"Invalid params: the {kind.label} id must be a UUID",
                {"fields": ["id"]},
                call.id,
            ) from None
        params = params_of(call)
        found = kind.find(site, artifact_id)
        if found is None:
            raise RpcError(jsonrpc.NOT_FOUND, f"Not found: {kind.label} ({artifact_id})", None, call.id)
        outcome: dict[str, Any] = {"status": "failed"}
        try:
            outcome = self._send(kind, artifact_id, found, params)
        except RpcError as exc:
            exc.id = call.id
            outcome = {"status": "failed", "code": exc.code, "message": exc.message}
            raise
        finally:
            self._record(
                principal,
                site,
                type_=kind.type,
                artifact_id=artifact_id,
                name=found.get("name"),
                params=params,
                outcome=outcome,
            )
        if params.dryRun:
            return jsonrpc.success(
                call.id, {"dryRun": True, "status": outcome["status"], "fields": outcome["fields"]}
            )
        # "unchanged": the target already held this very artifact, so nothing was written (seed 004's
        # clients test for "success"; this one says the call was a no-op).
        return jsonrpc.success(call.id, "unchanged" if outcome["status"] == "unchanged" else "success")

    def _send(
        self, kind: Any, artifact_id: str, attributes: dict[str, Any], params: PropagateParams
    ) -> dict[str, Any]:
        target = self.client(params.targetEndpoint)
        target.check()
        target.login(params.targetAdminUsername, params.targetAdminPassword.get_secret_value())
        site_id = target.site_id(params.targetSiteName)
        path = target.artifact_path(site_id, kind.path, artifact_id)
        there = target.get(path)
        sent = kind.comparable(attributes)
        if there is not None:
            current = kind.comparable(dict(there.get("attributes") or {}))
            differs = sorted(k for k in set(sent) | set(current) if sent.get(k) != current.get(k))
            if not differs:
                return {"status": "unchanged", "site": site_id, "fields": []}
        else:
            differs = sorted(sent)
        if params.dryRun:
            return {
                "status": "would_replace" if there is not None else "would_create",
                "site": site_id,
                "fields": differs,
            }
        created = target.put(path, {"data": {"type": kind.type, "id": artifact_id, "attributes": attributes}})
        return {"status": "created" if created else "replaced", "site": site_id, "fields": differs}

    def _record(
        self,
        principal: Principal,
        site: str,
        *,
        type_: str,
        artifact_id: str,
        name: Any,
        params: PropagateParams,
        outcome: dict[str, Any],
    ) -> None:
        fields = {
            "user": principal.username,
            "user_id": principal.user_id,
            "type": type_,
            "artifact": artifact_id,
            "name": name,
            "target_endpoint": params.targetEndpoint,
            "target_site": params.targetSiteName,
            "target_user": params.targetAdminUsername,  # never the password
            "dry_run": params.dryRun,
            **{k: v for k, v in outcome.items() if k in ("status", "code", "message", "fields")},
        }
        # LogRecord owns "name" and "message": the artifact's name is logged as "artifact_name".
        logged = {k: v for k, v in fields.items() if k not in ("name", "message")}
        logger.info("propagation", extra={**logged, "artifact_name": fields["name"]})
        self.audit.write(site, RECORDS, **fields)
        if params.saveTarget:
            target_id = str(
                uuid.uuid5(
                    uuid.NAMESPACE_URL,
                    f"{params.targetEndpoint}#{params.targetSiteName}#{params.targetAdminUsername}",
                )
            )
            self.store.save_target(
                site,
                principal.user_id,
                target_id,
                {
                    "targetEndpoint": params.targetEndpoint,
                    "targetSiteName": params.targetSiteName,
                    "targetAdminUsername": params.targetAdminUsername,
                },
            )

    def records(
        self, principal: Principal, site: str, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        self.artifacts.admin.site(principal, site)
        page = self.store.records(site, RECORDS, limit, cursor)
        return [_public(i) for i in page.items], page.next

    def targets(
        self, principal: Principal, site: str, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        self.artifacts.admin.site(principal, site)
        page = self.store.targets(site, principal.user_id, limit, cursor)
        return [_public(i) for i in page.items], page.next


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in ("PK", "SK", "ttl", "GSI1PK", "GSI1SK")}
