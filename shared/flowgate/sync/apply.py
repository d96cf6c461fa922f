"""Use case: apply the messages of a verified envelope to this side's executions.

Every message of an envelope is checked before any is applied, so an envelope with one message this
link may not send (a run sent to a controlling config, a status naming an execution this link did not
start) is refused whole (403) and changes nothing. Applying is idempotent: a run's execution id here is
derived from the link and the peer's execution id, so a repeated run, cancel or mirror finds what the
first one made, and a status only moves an execution that is still active.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from flowgate.errors import FlowgateError, Forbidden
from flowgate.sync.links import Link
from flowgate.sync.models import SyncRole
from flowgate.sync.outbox import Outbox
from flowgate.sync.ports import Executions
from flowgate.sync.protocol import Cancel, Message, Mirror, Run, Status

_NAMESPACE = uuid.UUID("6f0c7d2e-4b7a-4d8e-9a61-1c2f3e4d5a6b")
ACTIVE = frozenset({"pending", "running", "waiting"})


def local_id(link: Link, peer_execution_id: str) -> str:
    """The id here of what the peer's execution `peer_execution_id` made through this link."""
    return execution_id_for(link.id, peer_execution_id)


def execution_id_for(config_id: str, peer_execution_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{config_id}:{peer_execution_id}"))


class Applier:
    def __init__(self, executions: Executions, outbox: Outbox) -> None:
        self.executions = executions
        self.outbox = outbox

    def apply(self, link: Link, key_id: str, messages: Sequence[Message]) -> list[str]:
        """Apply all of `messages` (signed with `key_id`) or, if one may not be, none; their ids."""
        for message in messages:
            self._check(link, message)
        for message in messages:
            if isinstance(message, Run):
                self._run(link, key_id, message)
            elif isinstance(message, Cancel):
                self.executions.cancel_run(
                    local_id(link, message.execution_id), "cancelled by the linked workspace"
                )
            elif isinstance(message, Status):
                self._status(link, message)
            else:
                self.executions.mirror(
                    link.workspace_id,
                    local_id(link, str(message.execution.get("id") or "")),
                    message.execution,
                    _origin(link, key_id, str(message.execution.get("id") or "")),
                )
        return [m.id for m in messages]

    def _check(self, link: Link, message: Message) -> None:
        if isinstance(message, Run | Cancel | Mirror):
            if link.role != SyncRole.CONTROLLED:
                raise Forbidden(
                    f"the sync config '{link.name}' is controlling: its peer may not run flows or mirror "
                    "executions here",
                    code="not_controlled",
                )
            return
        linked = self.executions.linked_execution(message.execution_id)
        remote = (linked or {}).get("remote") or {}
        if (
            link.role != SyncRole.CONTROLLING
            or linked is None
            or linked.get("workspace_id") != link.workspace_id
            or remote.get("sync_config") != link.name
        ):
            raise Forbidden(
                f"a status names an execution that the sync config '{link.name}' did not send",
                code="not_linked",
            )

    def _run(self, link: Link, key_id: str, message: Run) -> None:
        allowed = link.config.get("allowed_flows")
        here = local_id(link, message.execution_id)
        if allowed is not None and message.flow not in allowed:
            self._refuse(
                link, message, here, f"the linked workspace does not run '{message.flow}' (allowed_flows)"
            )
            return
        try:
            self.executions.receive_run(
                link.workspace_id,
                here,
                flow=message.flow,
                script=message.script,
                inputs=message.inputs,
                started_by=f"sync:{link.name}",
                origin=_origin(link, key_id, message.execution_id),
            )
        except FlowgateError as exc:  # refused here (the workspace's quota): the caller's child fails
            self._refuse(link, message, here, f"the linked workspace refused the run: {exc.message}")

    def _refuse(self, link: Link, message: Run, here: str, why: str) -> None:
        """The run is not made here; its caller's child ends in error saying why."""
        refusal = Status(
            id=f"status:{here}:refused",
            execution_id=message.execution_id,
            remote_execution_id=here,
            status="error",
            message=why,
        )
        self.outbox.add(link.config, refusal)

    def _status(self, link: Link, message: Status) -> None:
        fields: dict[str, object] = {
            "outputs": message.outputs,
            "log": message.log,
            "log_truncated": message.log_truncated,
            "remote": {"sync_config": link.name, "remote_execution_id": message.remote_execution_id},
        }
        if message.message is not None:
            fields["message"] = message.message
        if message.duration_ms is not None:
            fields["duration_ms"] = message.duration_ms
        self.executions.apply_remote_status(message.execution_id, message.status, fields)


def _origin(link: Link, key_id: str, peer_execution_id: str) -> dict[str, str]:
    return {"sync_config": link.name, "key_fingerprint": key_id, "execution_id": peer_execution_id}
