"""The runner: executes one execution, a flow script in the sandbox or a connection through its connector.

It is the parent end of the sandbox's RPC channel: every call a script makes (`this.connect`,
`this.flow`, `wait`, `system.*`) arrives here and is answered for the execution's own workspace only.
Child executions run inline in this runner (threads, each flow in its own sandboxed process), so a
parent waiting on its child never waits on a queue that it is itself blocking.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flowgate import sandbox
from flowgate.clock import iso, now
from flowgate.documents import check_document
from flowgate.errors import BadRequest, Conflict, NotFound
from flowgate.flows.models import ExecutionStatus, ExecutionType, outputs_problem
from flowgate.flows.ports import ConnectionRun, Connections, TaskDone
from flowgate.flows.service import ACTIVE, FlowService
from flowgate.flows.store import FlowStore
from flowgate.observability import count, logger

if TYPE_CHECKING:
    from flowgate.config import Settings

# A guard against runaway scripts: children per execution (their depth is the flow service's rule).
MAX_CHILDREN = 100
CANCEL_POLL_SECONDS = 1.0
REMOTE_POLL_SECONDS = 0.2  # how often a parent looks whether its remote child's report came ...
REMOTE_FAST_POLL_SECONDS = 10.0  # ... for this long, then each second
# Past its time limit plus this, a running execution's runner is taken to have died.
LEASE_MARGIN_SECONDS = 120.0


class StillRunning(Exception):
    """A duplicate queue delivery found the execution still running; the queue retries it later."""


@dataclass(frozen=True)
class RunnerConfig:
    limits: sandbox.Limits

    @classmethod
    def from_settings(cls, settings: Settings) -> RunnerConfig:
        seconds = settings.flow_time_limit_seconds
        limits = sandbox.Limits(
            wall_seconds=float(seconds), cpu_seconds=seconds, memory_bytes=settings.flow_memory_mb * 2**20
        )
        return cls(limits)


class Runner:
    def __init__(
        self,
        flows: FlowService,
        connections: Connections,
        config: RunnerConfig,
        on_task_done: TaskDone | None = None,
    ) -> None:
        self.flows = flows
        self.store: FlowStore = flows.store
        self.connections = connections
        self.config = config
        # Told when an execution that runs an operation task's jobs has ended (the workflow context).
        self.on_task_done = on_task_done

    def handle(self, execution_id: str) -> None:
        """Run a queued execution once, however often the queue delivers it."""
        item = self.store.get_execution(execution_id)
        if item is None:
            logger.warning("queued execution does not exist", extra={"execution_id": execution_id})
            return
        status = ExecutionStatus(item["status"])
        if status.final:
            self._report_task(item)  # e.g. cancelled before it ran: the task must still end
            return
        if status in (ExecutionStatus.RUNNING, ExecutionStatus.WAITING):
            if not self._runner_lost(item):
                # A duplicate delivery while the first run goes on: the queue brings it back later,
                # when it can tell whether that run ended or died.
                raise StillRunning(f"execution {execution_id} is still running")
            self._finish(
                execution_id, ExecutionStatus.ERROR, message="the runner stopped before the execution ended"
            )
            return
        self.run_claimed(execution_id)

    def _runner_lost(self, item: Mapping[str, Any]) -> bool:
        """No run lasts longer than its time limit (children included), so one older than that died."""
        started = item.get("started_at")
        if not started:
            return True
        age = (now() - datetime.fromisoformat(str(started).replace("Z", "+00:00"))).total_seconds()
        return age > self.config.limits.wall_seconds + LEASE_MARGIN_SECONDS

    def run_claimed(self, execution_id: str) -> None:
        """Claim a pending execution (pending -> running) and run it; a lost claim means someone else did."""
        claimed = self.store.transition(
            execution_id,
            ExecutionStatus.RUNNING,
            allowed_from=[ExecutionStatus.PENDING],
            started_at=iso(now()),
        )
        if claimed is None:
            return
        self.flows.notify(claimed)
        started = time.monotonic()
        try:
            if claimed["type"] == ExecutionType.CONNECTION:
                self._run_connection(claimed)
            else:
                self._run_flow(claimed)
        except Exception:  # the execution must end visibly whatever went wrong in the platform
            logger.exception("execution failed inside the runner", extra={"execution_id": execution_id})
            self._finish(
                execution_id,
                ExecutionStatus.ERROR,
                message="internal error while running the execution",
                duration_ms=int((time.monotonic() - started) * 1000),
            )

    # ---- connections ----
    def _run_connection(self, item: Mapping[str, Any]) -> None:
        started = time.monotonic()

        def merged(run: ConnectionRun) -> None:
            self.store.record(item["id"], inputs=run.inputs, input_sources=run.input_sources)

        run = self.connections.run(
            item["workspace_id"],
            item.get("connector"),
            item.get("connector_type"),
            item.get("inputs") or {},
            seconds=self.config.limits.wall_seconds,  # a connection may not outlive the flow time limit
            merged=merged,
            execution_id=item["id"],
        )
        duration_ms = int((time.monotonic() - started) * 1000)
        if run.error is not None or run.outputs is None:
            message = run.error or "the connection gave no outputs"
            self._finish(item["id"], ExecutionStatus.ERROR, message=message, duration_ms=duration_ms)
            return
        outputs = run.outputs
        problem = outputs_problem(outputs)  # e.g. a large answer, or a number DynamoDB cannot hold
        if problem is not None:
            self._finish(item["id"], ExecutionStatus.ERROR, message=problem, duration_ms=duration_ms)
            return
        self._finish(item["id"], ExecutionStatus.SUCCESS, outputs=outputs, duration_ms=duration_ms)

    # ---- flows ----
    def _run_flow(self, item: Mapping[str, Any]) -> None:
        calls = ScriptCalls(self, item)
        try:
            result = sandbox.run_script(
                item.get("script") or "",
                item.get("inputs") or {},
                calls.on_call,
                self.config.limits,
                should_cancel=calls.cancelled,
                execution_id=item["id"],
            )
        finally:
            calls.close()
        status = {
            "success": ExecutionStatus.SUCCESS,
            "error": ExecutionStatus.ERROR,
            "cancelled": ExecutionStatus.CANCELLED,
        }[result.status]
        fields: dict[str, Any] = {
            "outputs": result.outputs,
            "log": result.log,
            "log_truncated": result.log_truncated,
            "duration_ms": result.duration_ms,
        }
        note = outputs_problem(result.outputs)
        if note is not None:  # whatever the status: the item could not be written otherwise
            fields["outputs"] = {}
            if status == ExecutionStatus.SUCCESS:
                status, result.message = ExecutionStatus.ERROR, note
            else:
                result.message = f"{result.message} ({note})"
        if result.message is not None:
            fields["message"] = result.message
        if status == ExecutionStatus.CANCELLED:
            self.store.record(item["id"], **fields)  # the cancel itself already set the status
            ended = self.store.get_execution(item["id"]) or dict(item)
            self._report_task(ended)  # its task must end too
            self.flows.notify(ended)  # with the log and outputs it had when cancelled
            return
        self._finish(item["id"], status, **fields)

    def _finish(self, eid: str, status: ExecutionStatus, **fields: Any) -> None:
        done = self.store.transition(
            eid,
            status,
            allowed_from=[ExecutionStatus.RUNNING, ExecutionStatus.WAITING],
            ended_at=iso(now()),
            **fields,
        )
        if done is None:  # cancelled meanwhile: keep what it produced, not a different status
            self.store.record(eid, **{k: v for k, v in fields.items() if k != "message"})
            done = self.store.get_execution(eid)
        if done is not None:
            if done.get("status") == ExecutionStatus.ERROR:
                count("ExecutionsFailed")
            self._report_task(done)
            self.flows.notify(done)

    def _report_task(self, item: Mapping[str, Any]) -> None:
        if item.get("task_id") and self.on_task_done is not None:
            self.on_task_done(item["task_id"], item["status"] == ExecutionStatus.SUCCESS, item.get("message"))


class ScriptCalls:
    """Answers the RPC calls of one running flow script, scoped to its execution and workspace."""

    def __init__(self, runner: Runner, execution: Mapping[str, Any]) -> None:
        self.runner = runner
        self.execution = execution
        self.workspace_id: str = execution["workspace_id"]
        self.children: dict[str, Future[None] | None] = {}
        self.remote_children: set[str] = set()  # run in a linked workspace: sent, then awaited
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"exec-{execution['id'][:8]}")
        self.lock = threading.Lock()
        self._last_cancel_check = 0.0
        self._cancelled = False
        self._closing = threading.Event()

    # ---- the sandbox's hooks ----
    def on_call(self, op: str, args: dict[str, Any]) -> Any:
        handlers = {
            "start_child": self._start_child,
            "run_child": self._run_child,
            "wait_child": self._wait_child,
            "get_child": self._get_child,
            "system_get": self._system_get,
        }
        if op not in handlers:
            raise BadRequest(f"unknown operation '{op}'")
        return handlers[op](args)

    def cancelled(self) -> bool:
        if not self._cancelled and time.monotonic() - self._last_cancel_check >= CANCEL_POLL_SECONDS:
            self._last_cancel_check = time.monotonic()
            current = self.runner.store.get_execution(self.execution["id"])
            self._cancelled = current is None or current["status"] == ExecutionStatus.CANCELLED
        return self._cancelled

    def close(self) -> None:
        """Cancel the children that never ran or still run (on the linked side too, for remote ones),
        then wait for their threads."""
        self._closing.set()
        flows = self.runner.flows
        for child_id in list(self.children):
            done = self.runner.store.transition(
                child_id,
                ExecutionStatus.CANCELLED,
                allowed_from=ACTIVE,
                ended_at=iso(now()),
                message="cancelled: the parent execution ended",
            )
            sent = child_id in self.remote_children and self.children[child_id] is not None
            if done is not None and sent and flows.links is not None:
                try:
                    flows.links.send_cancel(done)
                except Exception:  # the child is cancelled here; the peer's run ends at its own limit
                    logger.exception(
                        "could not send a remote child's cancel", extra={"execution_id": child_id}
                    )
            flows.notify(done)
        self.pool.shutdown(wait=True)

    # ---- operations ----
    def _start_child(self, args: dict[str, Any]) -> dict[str, Any]:
        """A pending child, made by the flow service like every execution (quota, retention)."""
        if len(self.children) >= MAX_CHILDREN:
            raise Conflict(f"an execution may start at most {MAX_CHILDREN} children")
        inputs = args.get("inputs") or {}
        if not isinstance(inputs, dict):
            raise BadRequest("inputs must be a mapping")
        check_document(inputs, "inputs")  # as the API checks the inputs it is given
        starter = self.execution["started_by"]
        flows = self.runner.flows
        if args.get("kind") == "connection":
            name, type_ = args.get("connector"), args.get("connector_type")
            if bool(name) == bool(type_):
                raise BadRequest("name a connector or a connector_type, not both")
            if name:
                type_ = self.runner.connections.connector_type(self.workspace_id, str(name))
            item = flows.create_connection_execution(
                self.workspace_id, name, type_, inputs, starter, parent=self.execution
            )
        elif args.get("kind") == "flow":
            link = args.get("remote_workspace_name")
            if link is not None and not isinstance(link, str):
                raise BadRequest("remote_workspace_name must be the name of a sync config")
            remote = flows.remote_target(self.workspace_id, link or None)
            name = str(args.get("flow") or "")
            try:
                item = flows.create_flow_execution(
                    self.workspace_id, name, inputs, starter, parent=self.execution, **remote
                )
            except NotFound as exc:
                raise NotFound(f"flow '{name}' not found in this workspace") from exc
        else:
            raise BadRequest("kind must be 'connection' or 'flow'")
        with self.lock:
            self.children[item["id"]] = None
            if item.get("remote"):
                self.remote_children.add(item["id"])
        return {"id": item["id"]}

    def _own_child(self, args: dict[str, Any]) -> str:
        child_id = str(args.get("id") or "")
        if child_id not in self.children:
            raise NotFound("no such child execution of this execution")
        return child_id

    def _run_child(self, args: dict[str, Any]) -> dict[str, Any]:
        child_id = self._own_child(args)
        with self.lock:
            if self.children[child_id] is None:
                if child_id in self.remote_children:
                    self.runner.flows.dispatch(self.runner.store.get_execution(child_id) or {"id": child_id})
                    self.children[child_id] = self.pool.submit(self._await_remote, child_id)
                else:
                    self.children[child_id] = self.pool.submit(self.runner.run_claimed, child_id)
        return {"id": child_id}

    def _await_remote(self, child_id: str) -> None:
        """A remote child ends when its link brings the peer's report; this parent's time limit bounds
        the wait (the sandbox stops the script), and its end cancels the child (close)."""
        started = time.monotonic()
        while not self._closing.is_set():
            item = self.runner.store.get_execution(child_id)
            if item is None or ExecutionStatus(item["status"]).final:
                return
            # often while a quick remote run is likely to end, then once a second
            slow = time.monotonic() - started > REMOTE_FAST_POLL_SECONDS
            self._closing.wait(1.0 if slow else REMOTE_POLL_SECONDS)

    def _wait_child(self, args: dict[str, Any]) -> dict[str, Any]:
        child_id = self._own_child(args)
        self._run_child(args)
        future = self.children[child_id]
        assert future is not None
        timeout = args.get("timeout")
        eid = self.execution["id"]
        self.runner.store.transition(eid, ExecutionStatus.WAITING, allowed_from=[ExecutionStatus.RUNNING])
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        try:
            # in slices, so that a cancel of this execution ends the wait (and then the children)
            while not future.done():
                if self.cancelled():
                    raise Conflict("this execution was cancelled while it waited for its child")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise Conflict(f"the child execution did not end within {timeout} s")
                try:
                    future.result(
                        timeout=CANCEL_POLL_SECONDS if left is None else min(left, CANCEL_POLL_SECONDS)
                    )
                except FutureTimeout:
                    continue
            future.result()
        finally:
            self.runner.store.transition(eid, ExecutionStatus.RUNNING, allowed_from=[ExecutionStatus.WAITING])
        return self._child_view(child_id)

    def _get_child(self, args: dict[str, Any]) -> Any:
        view = self._child_view(self._own_child(args))
        field = args.get("field", "output_value")
        if field not in view:
            raise BadRequest(f"unknown field '{field}'; known: {', '.join(sorted(view))}")
        return view[field]

    def _child_view(self, child_id: str) -> dict[str, Any]:
        item = self.runner.store.get_execution(child_id) or {}
        return {
            "id": child_id,
            "status": item.get("status"),
            "outputs": item.get("outputs") or {},
            "output_value": item.get("outputs") or {},
            "inputs": item.get("inputs") or {},
            "message": item.get("message"),
            "type": item.get("type"),
        }

    def _system_get(self, args: dict[str, Any]) -> Any:
        kind = args.get("kind")
        store = self.runner.store
        if kind == "flow":
            flow = store.get_flow(self.workspace_id, str(args.get("name") or ""))
            if flow is None:
                raise NotFound("flow not found in this workspace")
            return {k: flow.get(k) for k in ("id", "name", "version", "description", "script", "updated_at")}
        if kind == "connector":
            return self.runner.connections.describe(self.workspace_id, str(args.get("name") or ""))
        if kind == "secret_names":
            return self.runner.connections.secret_names(self.workspace_id)
        if kind == "execution":
            found = store.get_execution(str(args.get("id") or ""))
            if found is None or found["workspace_id"] != self.workspace_id:
                raise NotFound("execution not found in this workspace")
            return {
                k: found.get(k)
                for k in (
                    "id",
                    "type",
                    "status",
                    "flow",
                    "connector",
                    "outputs",
                    "message",
                    "parent",
                    "created_at",
                    "ended_at",
                )
            }
        raise BadRequest("kind must be flow, connector, secret_names or execution")
