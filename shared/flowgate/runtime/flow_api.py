"""The API of flow scripts: `import flow_api`, then `def handler(system, this)` or `(system, this, inputs)`.

A flow script runs in a sandboxed process that holds no credentials. Everything it does with platform data
(start a connection or a flow, wait for it, read the workspace's flows and connectors) is one request over
a transport to the parent process, which answers for the execution's own workspace only. Log lines, outputs
and the final status stay in this process until the runtime sends them with the result.

Standard library only: the sandboxed interpreter cannot reach site-packages.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn, Protocol

__all__ = [
    "ChildExecution",
    "DependencyFailedError",
    "Execution",
    "ExecutionError",
    "FlowApiError",
    "Success",
    "System",
]

_FAILED_STATUSES = ("error", "cancelled")


class FlowApiError(Exception):
    """A platform call failed (no such connector, a limit reached, ...); `code` is the platform's code."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class DependencyFailedError(FlowApiError):
    """A child execution that the script waited for ended in error or was cancelled."""


class ExecutionError(BaseException):
    """Raised by `this.error(message)` to end the execution with status error and that message.

    It derives from BaseException, like SystemExit, so that a script's `except Exception:` around the call
    cannot swallow the end the script asked for.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Transport(Protocol):
    """The runtime's channel to the parent process (implemented by the bootstrap, faked in tests)."""

    def call(self, op: str, args: dict[str, Any]) -> Any:
        """Send one request and return the parent's answer; raise FlowApiError when it answers an error."""
        ...

    def log(self, text: str) -> None:
        """Append one line to the execution's log."""
        ...


class Success:
    """What `this.success(message)` returns; the handler returns it to end with status success."""

    __slots__ = ("message",)

    def __init__(self, message: str | None) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"Success({self.message!r})"


def _json_copy(value: Any, what: str) -> Any:
    """A plain-JSON deep copy of `value`, so a later change by the script cannot alter what was recorded,
    and a value the platform cannot store fails at the script's own line rather than at the end."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise FlowApiError(
            f"{what} must be JSON data (str, int, float, bool, None, list, dict): {exc}"
        ) from None


def render(values: tuple[Any, ...]) -> str:
    """One log line from `this.log(*values)`: strings as they are, lists and dicts as JSON, others str()."""
    parts = []
    for value in values:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, dict | list | tuple):
            try:
                parts.append(json.dumps(value, default=str, ensure_ascii=False))
            except (TypeError, ValueError, RecursionError):
                parts.append(repr(value))
        else:
            parts.append(str(value))
    return " ".join(parts)


class ChildExecution:
    """A connection or flow execution started by this script with `this.connect()` or `this.flow()`."""

    def __init__(self, transport: Transport, execution_id: str) -> None:
        self._transport = transport
        self._id = execution_id
        self._started = False

    @property
    def id(self) -> str:
        """The child execution's id."""
        return self._id

    def run_async(self) -> ChildExecution:
        """Start the child and return at once; `wait()` collects its end."""
        self._transport.call("run_child", {"id": self._id})
        self._started = True
        return self

    def run(self) -> ChildExecution:
        """Start the child and wait for it to end."""
        return self.run_async().wait()

    def wait(self, timeout: float | None = None) -> ChildExecution:
        """Wait until the child ends (starting it first if `run_async()` was not called).

        Raises DependencyFailedError when the child ended in error or was cancelled, and FlowApiError when it
        did not end within `timeout` seconds.
        """
        if timeout is not None and (not isinstance(timeout, int | float) or timeout < 0):
            raise FlowApiError("timeout must be a non-negative number of seconds")
        if not self._started:
            self.run_async()
        answer = self._transport.call("wait_child", {"id": self._id, "timeout": timeout})
        status = answer.get("status") if isinstance(answer, dict) else None
        if status in _FAILED_STATUSES:
            message = answer.get("message") or "no message"
            raise DependencyFailedError(f"child execution {self._id} ended with status {status}: {message}")
        return self

    def get(self, field: str) -> Any:
        """A field of the child: 'output_value' (its outputs), 'status', 'inputs', 'message' or 'id'."""
        if field == "id":
            return self._id
        return self._transport.call("get_child", {"id": self._id, "field": field})

    def __repr__(self) -> str:
        return f"ChildExecution({self._id!r})"


class System:
    """Read access to the workspace's own resources; secret values are never readable, only their names."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def flow(self, name: str) -> Any:
        """The flow `name` of this workspace (id, name, version, description, script)."""
        return self._transport.call("system_get", {"kind": "flow", "name": name})

    def connector(self, name: str) -> Any:
        """The connector `name` of this workspace (type, value, names of its secrets)."""
        return self._transport.call("system_get", {"kind": "connector", "name": name})

    def secret_names(self) -> Any:
        """The names of this workspace's vault secrets."""
        return self._transport.call("system_get", {"kind": "secret_names"})

    def execution(self, execution_id: str) -> Any:
        """The execution `execution_id` of this workspace (status, outputs, message, ...)."""
        return self._transport.call("system_get", {"kind": "execution", "id": execution_id})


class Execution:
    """`this`: the running execution, its inputs and outputs, its log, and the children it starts."""

    def __init__(self, transport: Transport, execution_id: str | None, inputs: dict[str, Any]) -> None:
        self._transport = transport
        self._id = execution_id
        self._inputs = inputs
        self._outputs: dict[str, Any] = {}
        self._success_message: str | None = None

    @property
    def id(self) -> str | None:
        """This execution's id."""
        return self._id

    def get(self, field: str) -> Any:
        """A field of this execution: 'input_value', 'output_value' or 'id'."""
        if field == "input_value":
            return _json_copy(self._inputs, "inputs")
        if field == "output_value":
            return _json_copy(self._outputs, "outputs")
        if field == "id":
            return self._id
        raise FlowApiError(f"unknown field {field!r}; known: id, input_value, output_value")

    def log(self, *values: Any) -> None:
        """Append one line to the execution's log (dicts and lists as JSON, values joined by a space)."""
        self._transport.log(render(values))

    def set_output(self, key: str, value: Any) -> None:
        """Set one output of this execution."""
        if not isinstance(key, str):
            raise FlowApiError("output names must be strings")
        self._outputs[key] = _json_copy(value, f"output {key!r}")

    def save(self, *, output_value: dict[str, Any]) -> None:
        """Replace this execution's outputs with `output_value`."""
        if not isinstance(output_value, dict):
            raise FlowApiError("output_value must be a dict")
        self._outputs = _json_copy(output_value, "output_value")

    def success(self, message: str | None = None) -> Success:
        """End with status success: `return this.success('all done')`."""
        self._success_message = None if message is None else str(message)
        return Success(self._success_message)

    def error(self, message: str) -> NoReturn:
        """End the execution now, with status error and `message`."""
        raise ExecutionError(str(message))

    def connect(
        self,
        connector_name_or_type: str | None = None,
        /,
        *,
        connector_type: str | None = None,
        run: bool = True,
        **inputs: Any,
    ) -> ChildExecution:
        """Start a connection: `this.connect('stored-connector', ref='v2')` uses a stored connector by name,
        `this.connect(connector_type='REST', url=...)` a connector type with inputs only.

        With `run=False` the child is created but not started (`run_async()`, `wait()` do that); otherwise
        this waits for it to end, so `.get('output_value')` can follow at once.
        """
        name = connector_name_or_type
        if name is None and "connector_name_or_type" in inputs:
            name = inputs.pop("connector_name_or_type")
        args = {
            "kind": "connection",
            "connector": name,
            "connector_type": connector_type,
            "inputs": _json_copy(inputs, "connection inputs"),
        }
        return self._start(args, run)

    def flow(
        self,
        name: str,
        /,
        *,
        run: bool = True,
        remote_workspace_name: str | None = None,
        **inputs: Any,
    ) -> ChildExecution:
        """Start the flow `name` of this workspace (or, with `remote_workspace_name`, of a linked one) as a
        child execution with `inputs`; with `run=True` (the default) wait for it to end."""
        args = {
            "kind": "flow",
            "flow": name,
            "inputs": _json_copy(inputs, "flow inputs"),
            "remote_workspace_name": remote_workspace_name,
        }
        return self._start(args, run)

    def _start(self, args: dict[str, Any], run: bool) -> ChildExecution:
        answer = self._transport.call("start_child", args)
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
            raise FlowApiError("the platform did not return the child execution's id")
        child = ChildExecution(self._transport, answer["id"])
        return child.run() if run else child

    def _conclude(self, returned: object) -> tuple[str | None, dict[str, Any]]:
        """The success message and final outputs, once the handler returned `returned` (called by the
        runtime): a returned dict is merged into the outputs."""
        if isinstance(returned, Success):
            return returned.message, self._outputs
        if isinstance(returned, dict):
            self._outputs.update(_json_copy(returned, "the handler's returned outputs"))
        return self._success_message, self._outputs
