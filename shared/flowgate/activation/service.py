"""Use cases of active flows (seed 001, DESIGN §3.4): activate, deactivate, post and process messages,
read the state and the messages, react to a change of a workspace's kind.

Each use case with a principal is authorized here (404 outside the workspace's contract, 403 without
access); `state_of`, `process_message` and `kind_changed` are called by other parts of the platform
(the flows GET, the SQS handler, the identity hook) that have already decided who may act.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flowgate.activation import rules
from flowgate.activation.models import (
    ActivationSettings,
    ActivationStatus,
    AuditRecord,
    FlowActivation,
    MessageFailed,
    MessageRun,
    MessageStatus,
    QueuedMessage,
    StopReason,
)
from flowgate.activation.ports import FlowLookup, MessageQueue, MessageRunner
from flowgate.activation.store import QUOTA_CONFLICT, ActivationStore, audit_key, due_keys_of
from flowgate.clock import Clock, iso_ms, now, parse_iso, truncate_ms
from flowgate.db import Item, StaleVersion
from flowgate.errors import Conflict, NotFound
from flowgate.identity.ports import Principal, Workspace, WorkspaceAuthorizer, WorkspaceKind
from flowgate.observability import logger


def activation_from(item: Mapping[str, Any] | None, wsid: str, flow: str, now: datetime) -> FlowActivation:
    """The API's view of an activation item; a flow never activated is `inactive`."""
    if item is None:
        return FlowActivation(workspace_id=wsid, flow=flow)
    fields = {k: v for k, v in item.items() if k in FlowActivation.model_fields}
    activation = FlowActivation.model_validate(fields)
    if activation.status == ActivationStatus.ACTIVE and activation.stops_at:
        activation.seconds_left = rules.seconds_left(parse_iso(activation.stops_at), now)
    return activation


def message_from(item: Mapping[str, Any]) -> QueuedMessage:
    return QueuedMessage.model_validate({k: v for k, v in item.items() if k in QueuedMessage.model_fields})


def audit_from(item: Mapping[str, Any]) -> AuditRecord:
    return AuditRecord.model_validate({k: v for k, v in item.items() if k in AuditRecord.model_fields})


def audit_item(wsid: str, flow: str, at: str, event: str, **fields: Any) -> Item:
    return {
        **audit_key(wsid, flow, at, uuid.uuid4().hex),
        "workspace_id": wsid,
        "flow": flow,
        "at": at,
        "event": event,
        **fields,
    }


def discard_queued(store: ActivationStore, wsid: str, flow: str, *, reason: str, at: str, ttl: int) -> int:
    """Discard the messages still queued for a flow that stopped; each is discarded (and counted) by
    exactly one caller, because the change is conditioned on `queued`. A message being processed right
    now finishes; if it fails, its redelivery finds the flow stopped and is discarded then."""
    count = 0
    for message in store.queued_messages(wsid, flow):
        done = store.transition_message(
            wsid,
            flow,
            message["id"],
            MessageStatus.DISCARDED,
            allowed_from=[MessageStatus.QUEUED],
            final=True,
            discarded_at=at,
            discard_reason=reason,
            ttl=ttl,
        )
        count += done is not None
    return count


class ActivationService:
    def __init__(
        self,
        store: ActivationStore,
        flows: FlowLookup,
        workspaces: WorkspaceAuthorizer,
        *,
        queue: MessageQueue,
        runner: MessageRunner,
        settings: ActivationSettings,
        clock: Clock = now,
    ) -> None:
        self.store = store
        self.flows = flows
        self.workspaces = workspaces
        self.queue = queue
        self.runner = runner
        self.settings = settings
        self.clock = clock

    def _now(self) -> datetime:
        return truncate_ms(self.clock())

    def _authorized_flow(self, principal: Principal, wsid: str, flow: str) -> Workspace:
        workspace = self.workspaces.authorize_workspace(principal, wsid)
        if not self.flows.flow_exists(wsid, flow):
            raise NotFound(f"flow '{flow}' not found")
        return workspace

    # ---- state ----
    def state(self, principal: Principal, wsid: str, flow: str) -> FlowActivation:
        self._authorized_flow(principal, wsid, flow)
        return self.state_of(wsid, flow)

    def state_of(self, wsid: str, flow: str) -> FlowActivation:
        """For the flows GET, which has authorized the caller and found the flow already."""
        return activation_from(self.store.get_activation(wsid, flow), wsid, flow, self._now())

    def audit(
        self, principal: Principal, wsid: str, flow: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[AuditRecord], str | None]:
        """The flow's activation history, oldest first: activations, deactivations, stops."""
        self.workspaces.authorize_workspace(principal, wsid)
        page = self.store.list_audit(wsid, flow, limit, cursor)
        return [audit_from(i) for i in page.items], page.next

    # ---- activate / deactivate ----
    def activate(self, principal: Principal, wsid: str, flow: str) -> FlowActivation:
        """Activate a flow; activating an active one returns it unchanged (its clock keeps running).

        In a limited workspace the flow gets `stops_at` = now + the runtime limit and two due-index
        entries (the stop and the warning); the active-flow quota is enforced by a conditional counter
        in the same transaction, so concurrent activations cannot together exceed it.
        """
        workspace = self._authorized_flow(principal, wsid, flow)
        limited = workspace.kind == WorkspaceKind.LIMITED
        for _ in range(3):
            current = self.store.get_activation(wsid, flow)
            now = self._now()
            if current is not None and current["status"] == ActivationStatus.ACTIVE:
                return activation_from(current, wsid, flow, now)
            stamp = iso_ms(now)
            item: Item = {
                "workspace_id": wsid,
                "flow": flow,
                "status": ActivationStatus.ACTIVE.value,
                "activated_at": stamp,
                "activated_by": principal.user_id,
                "stop": current.get("stop") if current else None,
                "version": (current["version"] + 1) if current else 1,
            }
            if limited:
                stop = rules.stops_at(now, self.settings.max_runtime_seconds)
                item["stops_at"] = iso_ms(stop)
                item["warn_at"] = iso_ms(rules.warn_at(now, stop, self.settings.warning_seconds))
            audit = audit_item(wsid, flow, stamp, "activated", activated_at=stamp, actor=principal.user_id)
            try:
                self.store.activate(
                    current,
                    item,
                    max_active=self.settings.max_active_flows_limited if limited else None,
                    audit=audit,
                )
            except StaleVersion:
                continue  # someone else changed it: re-read (it may be active now)
            except Conflict as exc:
                if exc.message == QUOTA_CONFLICT:
                    raise Conflict(
                        f"a limited workspace may have at most {self.settings.max_active_flows_limited} "
                        "active flows; deactivate one first",
                        code="quota_exceeded",
                    ) from exc
                raise
            return activation_from(item, wsid, flow, now)
        raise Conflict("the flow was changed by other requests at the same time; retry")

    def deactivate(self, principal: Principal, wsid: str, flow: str) -> FlowActivation:
        """Deactivate by hand: active → inactive, due entries removed, queued messages discarded and
        counted on the stop record (reason `deactivated`) and in the audit."""
        workspace = self._authorized_flow(principal, wsid, flow)
        current = self.store.get_activation(wsid, flow)
        status = ActivationStatus(current["status"]) if current else ActivationStatus.INACTIVE
        rules.check_deactivate(status, flow)
        assert current is not None
        now = self._now()
        at = iso_ms(now)
        activated_at = current["activated_at"]
        stop = {
            "at": at,
            "reason": StopReason.DEACTIVATED.value,
            "discarded": 0,
            "activated_at": activated_at,
            "by": principal.user_id,
        }
        if not self.store.begin_stop(wsid, flow, activated_at, stop):
            latest = self.store.get_activation(wsid, flow)
            rules.check_deactivate(
                ActivationStatus(latest["status"]) if latest else ActivationStatus.INACTIVE, flow
            )
            raise Conflict("the flow was changed by another request at the same time; retry")
        ttl = rules.retention_ttl(now, self.settings.retention_days(workspace.kind.value))
        discarded = discard_queued(
            self.store, wsid, flow, reason=StopReason.DEACTIVATED.value, at=at, ttl=ttl
        )
        audit = audit_item(
            wsid,
            flow,
            at,
            "deactivated",
            reason=StopReason.DEACTIVATED.value,
            discarded=discarded,
            activated_at=activated_at,
            actor=principal.user_id,
        )
        if not self.store.finish_stop(
            wsid, flow, activated_at, discarded=discarded, due=due_keys_of(current), audit=audit
        ):
            self.store.add_discarded(wsid, flow, activated_at, discarded)
        return self.state_of(wsid, flow)

    # ---- messages ----
    def post_message(
        self, principal: Principal, wsid: str, flow: str, body: Mapping[str, Any]
    ) -> QueuedMessage:
        """Queue a message for an active flow: stored first (conditioned on the activation still being
        active), then sent; if the send fails the stored message is removed, so nothing is lost silently."""
        workspace = self._authorized_flow(principal, wsid, flow)
        checked = rules.check_message(body, self.settings.max_message_bytes)
        current = self.store.get_activation(wsid, flow)
        status = ActivationStatus(current["status"]) if current else ActivationStatus.INACTIVE
        rules.check_accepts_messages(status, flow)
        assert current is not None
        now = self._now()
        item: Item = {
            "id": rules.new_message_id(now),
            "workspace_id": wsid,
            "flow": flow,
            "received_at": iso_ms(now),
            "status": MessageStatus.QUEUED.value,
            "body": checked,
            "attempts": 0,
            "posted_by": principal.user_id,
            "activated_at": current["activated_at"],
            "retention_days": self.settings.retention_days(workspace.kind.value),
        }
        self.store.put_message(item, current["activated_at"])
        try:
            self.queue.send(wsid, flow, item["id"])
        except Exception:
            logger.exception("the message could not be queued", extra={"workspace_id": wsid, "flow": flow})
            self.store.delete_message(wsid, flow, item["id"])
            raise
        return message_from(item)

    def get_message(self, principal: Principal, wsid: str, flow: str, message_id: str) -> QueuedMessage:
        self.workspaces.authorize_workspace(principal, wsid)
        item = self.store.get_message(wsid, flow, message_id)
        if item is None:
            raise NotFound("message not found")
        return message_from(item)

    def list_messages(  # noqa: PLR0917 - the order the handlers call it in
        self,
        principal: Principal,
        wsid: str,
        flow: str,
        status: MessageStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[QueuedMessage], str | None]:
        """A flow's messages in order of arrival; discarded ones stay until their `ttl`."""
        self.workspaces.authorize_workspace(principal, wsid)
        page = self.store.list_messages(wsid, flow, status, limit, cursor)
        return [message_from(i) for i in page.items], page.next

    def process_message(self, wsid: str, flow: str, message_id: str, receive_count: int) -> None:
        """Run one queued message through its flow (called by the SQS handler, in order per flow).

        Returns normally when the message is done or must be dropped (gone, already final, or its flow
        no longer active: then it is discarded and counted on the stop). Raises MessageFailed when the
        run failed, so SQS delivers it again; at `max_attempts` it is marked `failed` first (and SQS
        moves it to the dead-letter queue).
        """
        message = self.store.get_message(wsid, flow, message_id)
        if message is None:
            logger.warning("a queued message is not in the table", extra={"message_id": message_id})
            return
        if rules.is_final(MessageStatus(message["status"])):
            return
        activation = self.store.get_activation(wsid, flow)
        if (
            activation is None
            or activation["status"] != ActivationStatus.ACTIVE
            or activation["activated_at"] != message.get("activated_at")
        ):
            self._drop(message, activation)
            return
        earlier = message.get("attempt_execution")
        if message["status"] == MessageStatus.PROCESSING and earlier:
            # Delivered again while marked processing: the processor that ran it may have died after
            # the run but before recording it. A run that succeeded is not run a second time.
            ran = self.runner.outcome(str(earlier))
            if ran is not None and ran.succeeded:
                self._finish_message(message, ran)
                return
        now = self._now()
        attempt = int(message.get("attempts") or 0) + 1
        execution_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"flowgate:message:{message_id}:{attempt}"))
        claimed = self.store.transition_message(
            wsid,
            flow,
            message_id,
            MessageStatus.PROCESSING,
            allowed_from=[MessageStatus.QUEUED, MessageStatus.PROCESSING],
            add_attempt=True,
            started_at=iso_ms(now),
            attempt_execution=execution_id,
        )
        if claimed is None:
            return  # discarded (or finished) in the meantime
        inputs = {"message": message["body"], "message_id": message_id}
        ran_id: str | None
        try:
            run = self.runner.run(wsid, flow, inputs, message.get("posted_by") or "system", execution_id)
            ran_id, succeeded, error = run.execution_id, run.succeeded, run.error
        except Exception as exc:  # the platform failed, not the flow: the same retry path
            logger.exception("running a message failed", extra={"message_id": message_id})
            ran_id, succeeded, error = None, False, f"internal error: {type(exc).__name__}"
        if succeeded:
            self._finish_message(message, MessageRun(ran_id, True))
            return
        ended = self._now()
        ttl = rules.retention_ttl(ended, int(message.get("retention_days") or 1))
        last = receive_count >= self.settings.max_attempts
        self.store.transition_message(
            wsid,
            flow,
            message_id,
            MessageStatus.FAILED if last else MessageStatus.QUEUED,
            allowed_from=[MessageStatus.PROCESSING],
            final=last,
            execution_id=ran_id,
            error=error or "the flow failed",
            ended_at=iso_ms(ended) if last else None,
            ttl=ttl if last else None,
        )
        raise MessageFailed(f"message {message_id} failed (attempt {receive_count}): {error}")

    def _finish_message(self, message: Item, run: MessageRun) -> None:
        ended = self._now()
        self.store.transition_message(
            message["workspace_id"],
            message["flow"],
            message["id"],
            MessageStatus.DONE,
            allowed_from=[MessageStatus.PROCESSING],
            final=True,
            execution_id=run.execution_id,
            ended_at=iso_ms(ended),
            error=None,
            ttl=rules.retention_ttl(ended, int(message.get("retention_days") or 1)),
        )

    def _drop(self, message: Item, activation: Item | None) -> None:
        """A message whose activation ended: discard it and count it on that activation's stop."""
        now = self._now()
        stop = (activation or {}).get("stop") or {}
        reason = stop.get("reason") or "not_active"
        done = self.store.transition_message(
            message["workspace_id"],
            message["flow"],
            message["id"],
            MessageStatus.DISCARDED,
            allowed_from=[MessageStatus.QUEUED, MessageStatus.PROCESSING],
            final=True,
            discarded_at=iso_ms(now),
            discard_reason=reason,
            ttl=rules.retention_ttl(now, int(message.get("retention_days") or 1)),
        )
        if done is not None and stop.get("activated_at") == message.get("activated_at"):
            self.store.add_discarded(message["workspace_id"], message["flow"], message["activated_at"], 1)

    # ---- kind of the workspace ----
    def kind_changed(self, wsid: str, new_kind: str | WorkspaceKind) -> None:
        """limited → full: pending stops and warnings of the active flows go. full → limited: each active
        flow gets a stop `max_runtime` from now (the clock starts at the change). Safe to repeat."""
        kind = WorkspaceKind(new_kind)
        now = self._now()
        for item in self.store.active_flows(wsid):
            if kind == WorkspaceKind.FULL:
                self.store.clear_clock(item)
            elif not item.get("stops_at"):
                stop = rules.stops_at(now, self.settings.max_runtime_seconds)
                self.store.start_clock(
                    item,
                    iso_ms(stop),
                    iso_ms(rules.warn_at(now, stop, self.settings.warning_seconds)),
                )
