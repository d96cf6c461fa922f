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
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from flowgate.identity.ports import Principal
from flowgate.observability import logger
from flowgate.propagation import jsonrpc
from flowgate.propagation.artifacts import Artifacts, Audit, Kind
from flowgate.propagation.client import TargetClient
from flowgate.propagation.jsonrpc import Call, RpcError
from flowgate.propagation.models import UUID_TEXT, PropagateManyParams, PropagateParams, Target
from flowgate.propagation.store import PropagationStore

RECORDS = "PROPAGATIONS"
P = TypeVar("P", bound=BaseModel)


def params_of(call: Call, model: type[P]) -> P:
    try:
        return model.model_validate(call.params)
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


@dataclass
class Session:
    """A target logged in to and its site found, or why not (every item sent there then fails with it)."""

    target: Target
    client: TargetClient | None = None
    site_id: str | None = None
    error: RpcError | None = None


def _compare_and_put(
    session: Session, kind: Kind, artifact_id: str, attributes: dict[str, Any], dry_run: bool
) -> dict[str, Any]:
    if session.error is not None:
        raise session.error
    client, site_id = session.client, session.site_id
    assert client is not None
    assert site_id is not None
    path = client.artifact_path(site_id, kind.path, artifact_id)
    there = client.get(path)
    sent = kind.comparable(attributes)
    if there is not None:
        current = kind.comparable(dict(there.get("attributes") or {}))
        differs = sorted(k for k in set(sent) | set(current) if sent.get(k) != current.get(k))
        if not differs:
            return {"status": "unchanged", "fields": []}
    else:
        differs = sorted(sent)
    if dry_run:
        return {"status": "would_replace" if there is not None else "would_create", "fields": differs}
    created = client.put(path, {"data": {"type": kind.type, "id": artifact_id, "attributes": attributes}})
    return {"status": "created" if created else "replaced", "fields": differs}


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
        """Seed 004's call on one artifact: the JSON-RPC answer, or RpcError (with the call's id)."""
        kind = self.artifacts.kind(path)
        self.artifacts.admin.site(principal, site)  # 404/403 before anything else, as for every route
        if not UUID_TEXT.match(artifact_id):
            message = f"Invalid params: the {kind.label} id must be a UUID"
            raise RpcError(jsonrpc.INVALID_PARAMS, message, {"fields": ["id"]}, call.id)
        if not kind.propagates:
            message = (
                f"Invalid Request: {kind.path} are not propagated (seed 004: commands, AWE tasks, profiles)"
            )
            raise RpcError(jsonrpc.INVALID_REQUEST, message, None, call.id)
        artifact_id = artifact_id.lower()
        params = params_of(call, PropagateParams)
        found = kind.find(site, artifact_id)
        if found is None:
            raise RpcError(jsonrpc.NOT_FOUND, f"Not found: {kind.label} ({artifact_id})", None, call.id)
        self.artifacts.require(principal, kind, site, artifact_id, "propagate")
        session = self._open(params)
        outcome = self._send(
            principal,
            site,
            session,
            kind=kind,
            artifact_id=artifact_id,
            attributes=found,
            dry_run=params.dryRun,
        )
        if params.saveTarget:
            self._save_target(principal, site, params)
        if outcome["status"] == "failed":
            raise RpcError(outcome["code"], outcome["message"], outcome.get("data"), call.id)
        if params.dryRun:
            return jsonrpc.success(
                call.id, {"dryRun": True, "status": outcome["status"], "fields": outcome["fields"]}
            )
        # "unchanged": the target already held this very artifact, so nothing was written (seed 004's
        # clients test for "success"; this one says the call was a no-op).
        return jsonrpc.success(call.id, "unchanged" if outcome["status"] == "unchanged" else "success")

    def propagate_many(self, principal: Principal, site: str, call: Call) -> dict[str, Any]:
        """Many artifacts to one or several targets: a result per (target, artifact). All done: the
        results; any failed: error -32009 with every item's result in `data.results`."""
        self.artifacts.admin.site(principal, site)
        params = params_of(call, PropagateManyParams)
        kinds = {k.type: k for k in self.artifacts.kinds.values()}
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for ref in params.artifacts:
            artifact_id = ref.id.lower()
            attributes = kinds[ref.type].find(site, artifact_id)
            if attributes is None:
                label = kinds[ref.type].label
                raise RpcError(jsonrpc.NOT_FOUND, f"Not found: {label} ({artifact_id})", None, call.id)
            self.artifacts.require(principal, kinds[ref.type], site, artifact_id, "propagate")
            found[(ref.type, artifact_id)] = attributes
        results = []
        for target in params.targets:
            session = self._open(target)
            for (type_, artifact_id), attributes in found.items():
                outcome = self._send(
                    principal,
                    site,
                    session,
                    kind=kinds[type_],
                    artifact_id=artifact_id,
                    attributes=attributes,
                    dry_run=params.dryRun,
                )
                results.append(
                    {
                        "type": type_,
                        "id": artifact_id,
                        "targetEndpoint": target.targetEndpoint,
                        "targetSiteName": target.targetSiteName,
                        **outcome,
                    }
                )
            if params.saveTarget:
                self._save_target(principal, site, target)
        failed = sum(1 for r in results if r["status"] == "failed")
        if failed:
            message = f"Partial failure: {failed} of {len(results)} items failed"
            raise RpcError(jsonrpc.PARTIAL_FAILURE, message, {"results": results}, call.id)
        return jsonrpc.success(call.id, {"dryRun": params.dryRun, "results": results})

    def _open(self, target: Target) -> Session:
        """Log in to the target and find its site once per call (not once per artifact)."""
        session = Session(target)
        try:
            client = self.client(target.targetEndpoint)
            client.check()
            client.login(target.targetAdminUsername, target.targetAdminPassword.get_secret_value())
            session.site_id = client.site_id(target.targetSiteName)
            session.client = client
        except RpcError as exc:
            session.error = exc
        return session

    def _send(
        self,
        principal: Principal,
        site: str,
        session: Session,
        *,
        kind: Kind,
        artifact_id: str,
        attributes: dict[str, Any],
        dry_run: bool,
    ) -> dict[str, Any]:
        """Compare with the target's copy and PUT it there (unless unchanged or a dry run), recorded."""
        try:
            outcome = _compare_and_put(session, kind, artifact_id, attributes, dry_run)
        except RpcError as exc:
            outcome = {"status": "failed", "code": exc.code, "message": exc.message}
            if exc.data is not None:
                outcome["data"] = exc.data
        fields = {
            "user": principal.username,
            "user_id": principal.user_id,
            "type": kind.type,
            "artifact": artifact_id,
            "name": attributes.get("name"),
            "target_endpoint": session.target.targetEndpoint,
            "target_site": session.target.targetSiteName,
            "target_user": session.target.targetAdminUsername,  # never the password
            "dry_run": dry_run,
            **{k: v for k, v in outcome.items() if k in ("status", "code", "message", "fields")},
        }
        # LogRecord owns "name" and "message": the artifact's name is logged as "artifact_name".
        logged = {k: v for k, v in fields.items() if k not in ("name", "message")}
        logger.info("propagation", extra={**logged, "artifact_name": fields["name"]})
        self.audit.write(site, RECORDS, **fields)
        return outcome

    def _save_target(self, principal: Principal, site: str, target: Target) -> None:
        """Seed 004's "save target parameters for future use": all but the password."""
        key = f"{target.targetEndpoint}#{target.targetSiteName}#{target.targetAdminUsername}"
        self.store.save_target(
            site,
            principal.user_id,
            str(uuid.uuid5(uuid.NAMESPACE_URL, key)),
            {
                "targetEndpoint": target.targetEndpoint,
                "targetSiteName": target.targetSiteName,
                "targetAdminUsername": target.targetAdminUsername,
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
