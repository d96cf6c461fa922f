"""Use cases of the flows context: flows (versioned scripts) and executions, authorized per workspace."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from flowgate import sandbox
from flowgate.clock import iso, now
from flowgate.db import StaleVersion
from flowgate.documents import document_error
from flowgate.errors import BadRequest, Conflict, NotFound
from flowgate.flows.models import (
    FLOW_CONTENT,
    Execution,
    ExecutionStatus,
    ExecutionSummary,
    ExecutionType,
    Flow,
    FlowSummary,
    PutFlowRequest,
    StartExecutionRequest,
    capped_log,
    outputs_problem,
)
from flowgate.flows.ports import IsActive, KindOf, Links, Queue, Variables, WorkspaceAuthorizer
from flowgate.flows.store import (
    FLOW_CHANGED,
    NAME_TAKEN,
    FlowStore,
    execution_from,
    execution_summary,
    flow_from,
    flow_summary,
)
from flowgate.identity.ports import Principal
from flowgate.names import NAME
from flowgate.observability import count, logger

ACTIVE = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING, ExecutionStatus.WAITING)
# Flows may start flows this many levels deep (a guard against runaway recursion).
MAX_DEPTH = 5
UPDATE_ATTEMPTS = 3

# A run-time variable reference, `%NAME%`, as the variables context reads it (flowgate.variables.rules,
# which a context may not import; a handler test holds the two to the same answers).
_REFERENCE = re.compile(r"%([A-Za-z_][A-Za-z0-9_.]{0,127})%")


def flow_text(text: str) -> str:
    """`text` with every variable reference's periods turned into underscores (`%CONNECTION.LOCAL_IP%`
    -> `%CONNECTION_LOCAL_IP%`): variable names in flows cannot hold periods (seed 004)."""
    return _REFERENCE.sub(lambda m: "%" + m.group(1).replace(".", "_") + "%", text)


def _name_taken(name: str) -> str:
    return f"a flow named '{name}' already exists in this workspace"


def check_flow_id(flow_id: str) -> None:
    if not NAME.match(flow_id):
        raise BadRequest("a flow id is 1 to 128 letters, digits, '.', '_' or '-'", code="invalid_id")


def check_flow_name(name: str) -> None:
    if not NAME.match(name):
        raise BadRequest("a flow name is 1 to 128 letters, digits, '.', '_' or '-'", code="invalid_name")


def new_execution(
    workspace_id: str,
    type_: ExecutionType,
    started_by: str,
    *,
    parent: Mapping[str, Any] | None = None,
    id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The item of a new pending execution; a child inherits its parent's root, one level deeper."""
    return {
        "id": id or str(uuid.uuid4()),
        "workspace_id": workspace_id,
        "type": type_.value,
        "status": ExecutionStatus.PENDING.value,
        "started_by": started_by,
        "created_at": iso(now()),
        "parent": parent["id"] if parent else None,
        "root": (parent.get("root") or parent["id"]) if parent else None,
        **({"depth": int(parent.get("depth") or 0) + 1} if parent else {}),
        "version": 1,
        **fields,
    }


class Retention(Protocol):
    def expires_at(self, workspace_id: str, kind: str | None = None) -> int | None: ...
    def admit(self, workspace_id: str, kind: str | None = None) -> None: ...


class FlowService:
    def __init__(
        self,
        store: FlowStore,
        workspaces: WorkspaceAuthorizer,
        queue: Queue,
        retention: Retention | None = None,
        is_active: IsActive | None = None,
        *,
        links: Links | None = None,
        variables: Variables | None = None,
    ) -> None:
        self.store = store
        self.workspaces = workspaces
        self.queue = queue
        # Limited (sandbox) workspaces keep executions for a shorter time: their items carry an earlier TTL.
        self.retention = retention
        # Whether a flow is active (the activation context): an active flow is not deleted under it.
        self.is_active = is_active
        # Workspace links (the sync context): remote runs, and the changes they and mirrors follow.
        self.links = links
        # Run-time variables (the variables context): the names a flow's log_directory may use.
        self.variables = variables

    # ---- flows ----
    def _content(self, wsid: str, request: PutFlowRequest) -> dict[str, Any]:
        """What a flow stores of a request (its full representation: what it leaves out takes its
        default): the script checked, the log directory's variable references with underscores for
        periods, then checked against the workspace's variables."""
        sandbox.check_syntax(request.script)
        content = request.model_dump(mode="json", include=set(FLOW_CONTENT))
        if request.log_directory is not None:
            content["log_directory"] = flow_text(request.log_directory)
            if self.variables is not None:
                self.variables.check(wsid, {"log_directory": content["log_directory"]})
        return content

    @staticmethod
    def _same(current: Mapping[str, Any], content: Mapping[str, Any]) -> bool:
        """Whether a stored flow already has this content (fields it lacks read as their defaults)."""
        stored = flow_from(dict(current)).model_dump(mode="json", include=set(FLOW_CONTENT))
        return stored == dict(content)

    def _new_flow(
        self, wsid: str, flow_id: str, name: str, content: Mapping[str, Any], actor_id: str
    ) -> dict[str, Any]:
        stamp = iso(now())
        return {
            "id": flow_id,
            "workspace_id": wsid,
            "name": name,
            **content,
            "version": 1,
            "created_at": stamp,
            "updated_at": stamp,
            "updated_by": actor_id,
        }

    def put_flow(
        self, principal: Principal, wsid: str, name: str, request: PutFlowRequest
    ) -> tuple[Flow, bool]:
        """Create or change a flow; each change is a new version. True when it was created."""
        self.workspaces.authorize_workspace(principal, wsid)
        content = self._content(wsid, request)
        current = self.store.get_flow(wsid, name)
        if current is None:
            item = self._new_flow(wsid, str(uuid.uuid4()), name, content, principal.user_id)
            self.store.create_flow(item)
            return flow_from(item), True
        if self._same(current, content):
            return flow_from(current), False  # an identical PUT is not a new version
        changes = {**content, "updated_at": iso(now()), "updated_by": principal.user_id}
        try:
            return flow_from(self.store.replace_flow(current, changes)), False
        except StaleVersion as exc:
            raise Conflict(
                "the flow was changed by another request at the same time; retry", code=FLOW_CHANGED
            ) from exc

    def get_flow(self, principal: Principal, wsid: str, name: str) -> Flow:
        self.workspaces.authorize_workspace(principal, wsid)
        item = self.store.get_flow(wsid, name)
        if item is None:
            raise NotFound(f"flow '{name}' not found")
        return flow_from(item)

    def list_flows(
        self, principal: Principal, wsid: str, limit: int, cursor: str | None
    ) -> tuple[list[FlowSummary], str | None]:
        self.workspaces.authorize_workspace(principal, wsid)
        page = self.store.list_flows(wsid, limit, cursor)
        return [flow_summary(i) for i in page.items], page.next

    def delete_flow(self, principal: Principal, wsid: str, name: str) -> None:
        self.workspaces.authorize_workspace(principal, wsid)
        current = self.store.get_flow(wsid, name)
        if current is None:
            raise NotFound(f"flow '{name}' not found")
        self._delete(current)

    def _delete(self, current: Mapping[str, Any]) -> None:
        name = current["name"]
        if self.is_active is not None and self.is_active(current["workspace_id"], name):
            raise Conflict(f"the flow '{name}' is active: deactivate it first", code="flow_active")
        self.store.delete_flow(dict(current))

    # ---- flows by id, for other contexts (artifact propagation), which have authorized the workspace ----
    def flow_by_id(self, wsid: str, flow_id: str) -> Flow | None:
        """The workspace's flow of that id, or None (consistent: a save just answered is seen)."""
        check_flow_id(flow_id)
        item = self.store.flow_by_id(wsid, flow_id)
        return flow_from(item) if item else None

    def put_flow_by_id(
        self, wsid: str, flow_id: str, name: str, request: PutFlowRequest, actor_id: str
    ) -> tuple[Flow, bool]:
        """Create the flow `flow_id` named `name`, or replace it (the request is its full representation:
        what it leaves out takes its default) and rename it when `name` differs; whether it was created.
        A replace that changes nothing is no new version; a rename is the next version, same id.

        409 `name_taken` when another flow has the name (on create or rename), `flow_active` for a
        rename of an active flow (activation is kept by name), `flow_changed` when a concurrent request
        created the same id first or kept changing the flow. The same 400s as `put_flow` otherwise.
        """
        check_flow_id(flow_id)
        check_flow_name(name)
        content = self._content(wsid, request)
        for _ in range(UPDATE_ATTEMPTS):
            current = self.store.flow_by_id(wsid, flow_id)
            if current is None:
                item = self._new_flow(wsid, flow_id, name, content, actor_id)
                self.store.create_flow(item)
                return flow_from(item), True
            renamed = current["name"] != name
            if not renamed and self._same(current, content):
                return flow_from(current), False
            changes = {**content, "updated_at": iso(now()), "updated_by": actor_id}
            try:
                if not renamed:
                    return flow_from(self.store.replace_flow(current, changes)), False
                if self.store.get_flow(wsid, name) is not None:
                    raise Conflict(_name_taken(name), code=NAME_TAKEN)
                if self.is_active is not None and self.is_active(wsid, current["name"]):
                    raise Conflict(
                        f"the flow '{current['name']}' is active: deactivate it before renaming it",
                        code="flow_active",
                    )
                item = {**current, **changes, "name": name}  # None values are not stored
                return flow_from(self.store.rename_flow(current, item)), False
            except StaleVersion:
                continue
        raise Conflict("the flow kept changing while it was saved; retry", code=FLOW_CHANGED)

    def delete_flow_by_id(self, wsid: str, flow_id: str) -> None:
        """Delete the flow of that id (404 when the workspace has none; 409 `flow_active` while active)."""
        check_flow_id(flow_id)
        current = self.store.flow_by_id(wsid, flow_id)
        if current is None:
            raise NotFound(f"flow with id '{flow_id}' not found")
        self._delete(current)

    def flows_page(self, wsid: str, limit: int, cursor: str | None) -> tuple[list[Flow], str | None]:
        """A page of the workspace's flows, whole (scripts and settings), by name."""
        page = self.store.list_flows(wsid, limit, cursor)
        return [flow_from(i) for i in page.items], page.next

    # ---- executions ----
    def start_execution(self, principal: Principal, wsid: str, request: StartExecutionRequest) -> Execution:
        """A pending execution of the flow's current script, handed to the runner."""
        workspace = self.workspaces.authorize_workspace(principal, wsid)
        remote = self.remote_target(wsid, request.remote_workspace_name)
        item = self.create_flow_execution(
            wsid, request.flow, request.inputs, principal.user_id, kind=workspace.kind.value, **remote
        )
        self.dispatch(item)
        return execution_from(item)

    # ---- workspace links ----
    def remote_target(self, wsid: str, sync_config: str | None) -> dict[str, Any]:
        """The fields that send an execution to the workspace linked by `sync_config` (none without)."""
        if sync_config is None:
            return {}
        if self.links is None:
            raise BadRequest("workspace linking is not available in this deployment")
        self.links.check_link(wsid, sync_config)
        return {"remote": {"sync_config": sync_config}}

    def dispatch(self, item: dict[str, Any]) -> None:
        """Hand a stored pending execution on: to the runner, or to the link it runs through."""
        if item.get("remote") and self.links is not None:
            self.links.send_run(item)
        else:
            self.queue.send(item["id"], item["workspace_id"])
        self.notify(item)

    def notify(self, item: Mapping[str, Any] | None) -> None:
        """Tell the links an execution was made or changed status; their failure never fails a run (the
        change is stored; the link's health shows the error)."""
        if item is None or self.links is None:
            return
        try:
            self.links.changed(item)
        except Exception:
            logger.exception(
                "a workspace link could not take an execution's change",
                extra={"execution_id": item.get("id")},
            )

    def receive_run(
        self,
        workspace_id: str,
        execution_id: str,
        *,
        flow: str,
        script: str,
        inputs: Mapping[str, Any],
        started_by: str,
        origin: Mapping[str, Any],
    ) -> None:
        """A run a linked workspace sent: an execution of the script it sent, made and queued once (a
        repeated message finds it and counts nothing), with no flow of that name here. Inputs this
        table cannot hold end it in error at once, visibly on both sides; a refusal (the workspace's
        quota) is raised for the link to report."""
        if self.store.get_execution(execution_id) is not None:
            return  # made by an earlier delivery of the same message
        problem = document_error(dict(inputs))
        item = new_execution(
            workspace_id,
            ExecutionType.FLOW,
            started_by,
            id=execution_id,
            flow=flow,
            script=script,
            inputs={} if problem else dict(inputs),
            input_sources=dict.fromkeys(() if problem else inputs, "call"),
            origin=dict(origin),
        )
        if problem is not None:
            item.update(
                status=ExecutionStatus.ERROR.value,
                ended_at=item["created_at"],
                message=f"the inputs cannot be stored: {problem.under('inputs')}",
            )
        try:
            self._store(item)
        except Conflict:
            if self.store.get_execution(execution_id) is None:
                raise  # not a concurrent delivery: a refusal, e.g. quota_exceeded
            return
        if problem is None:
            self.queue.send(execution_id, workspace_id)
        self.notify(item)

    def cancel_run(self, execution_id: str, message: str) -> None:
        done = self.store.transition(
            execution_id, ExecutionStatus.CANCELLED, allowed_from=ACTIVE, ended_at=iso(now()), message=message
        )
        self.notify(done)

    def apply_remote_status(self, execution_id: str, status: str, fields: Mapping[str, Any]) -> None:
        """The peer's report on a remote execution: running, or its end, applied once."""
        to = ExecutionStatus(status)
        fields = dict(fields)
        # The same rules as for the runner's own results: the outputs' share of the item, the log's
        log, cut = capped_log([str(line) for line in fields.get("log") or []])
        fields.update(log=log, log_truncated=bool(fields.get("log_truncated")) or cut)
        problem = outputs_problem(fields.get("outputs") or {})
        other = document_error({k: v for k, v in fields.items() if k != "outputs"})
        if problem is not None or other is not None:  # the child fails, visibly
            why = problem or f"the linked workspace's report cannot be stored: {other}"
            fields = {"remote": fields.get("remote"), "outputs": {}, "log": log, "message": why}
            to = ExecutionStatus.ERROR if to.final else to
        if to.final:
            done = self.store.transition(execution_id, to, allowed_from=ACTIVE, ended_at=iso(now()), **fields)
        elif to == ExecutionStatus.RUNNING:
            done = self.store.transition(
                execution_id, to, allowed_from=[ExecutionStatus.PENDING], started_at=iso(now()), **fields
            )
        else:
            return
        self.notify(done)

    def linked_execution(self, execution_id: str) -> dict[str, Any] | None:
        """Which workspace an execution is in, its status and the link it runs through (if any)."""
        item = self.store.get_execution(execution_id)
        return None if item is None else {k: item.get(k) for k in ("workspace_id", "status", "remote")}

    def executions_page(
        self, workspace_id: str, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of a workspace's stored executions, newest first (for mirroring the past ones)."""
        page = self.store.list_executions(workspace_id, 100, cursor)
        return list(page.items), page.next

    def mirror(
        self, workspace_id: str, execution_id: str, snapshot: Mapping[str, Any], origin: Mapping[str, Any]
    ) -> None:
        """A read-only copy of a linked workspace's execution; an older copy never replaces a newer one."""
        version = int(snapshot.get("version") or 0)
        item = {
            **{k: v for k, v in snapshot.items() if v is not None},
            "id": execution_id,
            "workspace_id": workspace_id,
            "origin": {**origin, "mirrored": True},
            "origin_version": version,
            "version": 1,
            "parent": None,
            "root": None,
        }
        problem = document_error(item)
        if problem is not None:
            raise BadRequest(f"the mirrored execution cannot be stored: {problem}")
        try:
            execution_from(item)
        except ValidationError as exc:
            raise BadRequest(f"the mirrored execution is not an execution: {exc.errors()[0]['msg']}") from exc
        if self.retention is not None:
            item["ttl"] = self.retention.expires_at(workspace_id)
        try:
            self.store.put_mirror(item)
        except Conflict:
            return  # this copy or a newer one is stored

    def start_connection(
        self, principal: Principal, wsid: str, connector: Mapping[str, Any], inputs: Mapping[str, Any]
    ) -> Execution:
        """A pending connection execution of a stored connector (the connectors context checked it exists).

        Only the call's inputs are stored now; the runner adds the connector's value and vault secrets
        (redacted) when it runs.
        """
        workspace = self.workspaces.authorize_workspace(principal, wsid)
        item = self.create_connection_execution(
            wsid, connector["name"], connector["type"], inputs, principal.user_id, kind=workspace.kind.value
        )
        self.queue.send(item["id"], wsid)
        return execution_from(item)

    def start_for_task(
        self,
        *,
        workspace_id: str,
        flow: str,
        inputs: Mapping[str, Any],
        started_by: str,
        task_id: str,
        execution_id: str,
    ) -> str:
        """Queue the bound flow for an approved (or unheld) operation task as the execution
        `execution_id`; the runner reports its end. A repeat with the same id creates nothing: the
        execution an earlier attempt made is queued again, and the runner runs it once."""
        try:
            self.create_flow_execution(
                workspace_id, flow, inputs, started_by, task_id=task_id, id=execution_id
            )
        except Conflict:
            if self.store.get_execution(execution_id) is None:
                raise  # not a repeat: a refusal (the workspace's quota)
        self.queue.send(execution_id, workspace_id)
        return execution_id

    def create_flow_execution(
        self,
        workspace_id: str,
        flow: str,
        inputs: Mapping[str, Any],
        started_by: str,
        *,
        source: str = "call",
        kind: str | None = None,
        parent: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Store a pending execution of the flow's current script (not yet queued); its item.

        Every flow execution is made here, whatever starts it (the API, a message, a task, a parent
        script), so each one counts against the workspace's quota and gets its retention. `source`
        names where the inputs came from (shown per key); `kind` saves a workspace lookup.
        """
        if parent is not None and int(parent.get("depth") or 0) + 1 > MAX_DEPTH:
            raise Conflict(f"flows may start flows at most {MAX_DEPTH} levels deep")
        found = self.store.get_flow(workspace_id, flow)
        if found is None:
            raise NotFound(f"flow '{flow}' not found")
        item = new_execution(
            workspace_id,
            ExecutionType.FLOW,
            started_by,
            parent=parent,
            flow=found["name"],
            flow_id=found["id"],
            flow_version=found["version"],
            script=found["script"],
            inputs=dict(inputs),
            input_sources=dict.fromkeys(inputs, source),
            **fields,
        )
        return self._store(item, kind)

    def create_connection_execution(
        self,
        workspace_id: str,
        connector: str | None,
        connector_type: str | None,
        inputs: Mapping[str, Any],
        started_by: str,
        *,
        kind: str | None = None,
        parent: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store a pending connection execution (not yet queued): a stored connector or a bare type."""
        item = new_execution(
            workspace_id,
            ExecutionType.CONNECTION,
            started_by,
            parent=parent,
            connector=connector,
            connector_type=connector_type,
            inputs=dict(inputs),
            input_sources=dict.fromkeys(inputs, "call"),
        )
        return self._store(item, kind)

    def _store(self, item: dict[str, Any], kind: str | None = None) -> dict[str, Any]:
        if self.retention is not None:
            self.retention.admit(item["workspace_id"], kind)
            item["ttl"] = self.retention.expires_at(item["workspace_id"], kind)
        self.store.create_execution(item)
        count("ExecutionsStarted")
        return item

    # ---- for other contexts, which have decided who may act ----
    def flow_exists(self, wsid: str, name: str) -> bool:
        return self.store.get_flow(wsid, name) is not None

    def find_execution(self, eid: str) -> Execution | None:
        item = self.store.get_execution(eid)
        return execution_from(item) if item else None

    def _execution_item(self, principal: Principal, wsid: str, eid: str) -> dict[str, Any]:
        self.workspaces.authorize_workspace(principal, wsid)
        item = self.store.get_execution(eid)
        if item is None or item["workspace_id"] != wsid:
            raise NotFound("execution not found")
        return item

    def get_execution(self, principal: Principal, wsid: str, eid: str) -> Execution:
        return execution_from(self._execution_item(principal, wsid, eid))

    def list_executions(
        self, principal: Principal, wsid: str, limit: int, cursor: str | None
    ) -> tuple[list[ExecutionSummary], str | None]:
        self.workspaces.authorize_workspace(principal, wsid)
        page = self.store.list_executions(wsid, limit, cursor)
        return [execution_summary(i) for i in page.items], page.next

    def cancel_execution(self, principal: Principal, wsid: str, eid: str) -> Execution:
        """Cancel a pending or running execution; cancelling a cancelled one again answers it as it is.
        A remote run is cancelled on the linked side too; a mirror is read-only."""
        item = self._execution_item(principal, wsid, eid)
        if (item.get("origin") or {}).get("mirrored"):
            raise Conflict("this execution is a read-only copy from a linked workspace", code="read_only")
        done = self.store.transition(
            eid,
            ExecutionStatus.CANCELLED,
            allowed_from=ACTIVE,
            ended_at=iso(now()),
            message=f"cancelled by {principal.username}",
        )
        if done is not None:
            if done.get("remote") and self.links is not None:
                self.links.send_cancel(done)
            self.notify(done)
            return execution_from(done)
        current = self.store.get_execution(eid) or item
        if current["status"] == ExecutionStatus.CANCELLED:
            return execution_from(current)
        raise Conflict(f"the execution already ended with status {current['status']}")


class KindRetention:
    """Execution TTLs by workspace kind (template parameters ExecutionRetentionDaysLimited/Full), and
    the quota of stored executions of limited workspaces (MaxStoredExecutionsLimited).

    Executions expire `days` after they start, so the executions a workspace stores are those started
    in its last `days` days: one counter item per day (with the same TTL) counts them, and a start is
    admitted only while the window's total stays under the quota.
    """

    def __init__(
        self,
        days_by_kind: Mapping[str, int],
        kind_of: KindOf,
        store: FlowStore | None = None,
        quota_by_kind: Mapping[str, int] | None = None,
    ) -> None:
        self.days_by_kind = days_by_kind
        self.kind_of = kind_of
        self.store = store
        self.quota_by_kind = quota_by_kind or {}

    def _kind(self, workspace_id: str, kind: str | None) -> str:
        if kind:
            return kind
        found = self.kind_of(workspace_id)
        return found.value if found else "limited"

    def expires_at(self, workspace_id: str, kind: str | None = None) -> int | None:
        days = self.days_by_kind.get(self._kind(workspace_id, kind))
        return int(now().timestamp()) + days * 86400 if days else None

    def admit(self, workspace_id: str, kind: str | None = None) -> None:
        kind = self._kind(workspace_id, kind)
        quota = self.quota_by_kind.get(kind)
        if quota is None or self.store is None:
            return
        days = self.days_by_kind.get(kind, 1)
        today = now().date()
        window = [(today - timedelta(days=d)).isoformat() for d in range(days)]
        earlier = self.store.executions_started(workspace_id, window[1:])
        expires = int(now().timestamp()) + (days + 1) * 86400
        if not self.store.count_execution(workspace_id, window[0], quota - earlier, expires):
            raise Conflict(
                f"this {kind} workspace stores at most {quota} executions ({days} days); wait until "
                "older ones expire, or ask for a full workspace",
                code="quota_exceeded",
            )
