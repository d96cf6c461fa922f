"""One local Lambda execution environment: a Python process that serves one function, one event at a time.

devstack starts it as `python devstack/worker.py REQUEST_FD RESPONSE_FD` with that function's environment
only (devstack.environment.function_environment) and talks to it over two pipes in JSON lines:

    parent -> worker  {"code_uri": ..., "handler": "app.handler", "layer_paths": [...]}   (once)
    worker -> parent  {"type": "ready"} | {"type": "init_error", "error": ERROR}            (once)
    parent -> worker  {"event": ..., "context": {...}}                                      (per invocation)
    worker -> parent  {"type": "result", "result": ...} | {"type": "error", "error": ERROR}

ERROR is what Lambda's Invoke returns for a failed invocation: `errorMessage`, `errorType`, `stackTrace`.
The handler is imported as Lambda's runtime imports it (CodeUri first on sys.path, then the layers), and
its stdout and stderr are the function's log, inherited from devstack. The worker exits when the request
pipe closes (devstack stops or dies); devstack kills it when an invocation runs past the Timeout.

Standard library only, and no import of devstack: nothing is loaded before the handler but what
Lambda's own runtime loads, so each worker starts like a fresh container.
"""

from __future__ import annotations

# Running this file puts its own directory (devstack/) first on sys.path; no handler may import from it.
import sys

if sys.path and sys.path[0] and __name__ == "__main__":
    del sys.path[0]

import decimal
import importlib
import json
import os
import signal
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any


@dataclass
class LambdaContext:
    """The context object Lambda passes to a Python handler (the attributes powertools reads)."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    log_group_name: str
    log_stream_name: str
    aws_request_id: str
    deadline: float  # time.monotonic() at which Lambda would stop the invocation
    function_version: str = "$LATEST"
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's Timeout."""
        return max(0, int((self.deadline - time.monotonic()) * 1000))

    @classmethod
    def for_function(
        cls, name: str, *, timeout_seconds: float = 15, memory_mb: int = 512, region: str = "us-east-1"
    ) -> LambdaContext:
        """A fresh context for one invocation of the function `name`."""
        return cls(
            function_name=name,
            invoked_function_arn=f"arn:aws:lambda:{region}:123456789012:function:{name}",
            memory_limit_in_mb=memory_mb,
            log_group_name=f"/aws/lambda/{name}",
            log_stream_name=log_stream_name(),
            aws_request_id=str(uuid.uuid4()),
            deadline=time.monotonic() + timeout_seconds,
        )

    def to_message(self) -> dict[str, Any]:
        """The context as sent to a worker (the deadline as milliseconds left)."""
        return {
            "function_name": self.function_name,
            "invoked_function_arn": self.invoked_function_arn,
            "memory_limit_in_mb": self.memory_limit_in_mb,
            "log_group_name": self.log_group_name,
            "log_stream_name": self.log_stream_name,
            "aws_request_id": self.aws_request_id,
            "function_version": self.function_version,
            "remaining_ms": self.get_remaining_time_in_millis(),
        }

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> LambdaContext:
        """The context a worker gives its handler."""
        fields = {name: value for name, value in message.items() if name != "remaining_ms"}
        return cls(**fields, deadline=time.monotonic() + message["remaining_ms"] / 1000)


def log_stream_name() -> str:
    """A log stream name as Lambda makes them: date, version and one id per execution environment."""
    return f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"


def error_payload(error_type: str, message: str, stack: list[str] | None = None) -> dict[str, Any]:
    """Lambda's shape of a failed invocation."""
    return {"errorMessage": message, "errorType": error_type, "requestId": "", "stackTrace": stack or []}


def exception_payload(
    exc: BaseException, error_type: str | None = None, message: str | None = None
) -> dict[str, Any]:
    """Lambda's error shape for an exception the handler (or its import) raised."""
    frames = traceback.format_list(traceback.extract_tb(exc.__traceback__))
    return error_payload(error_type or type(exc).__name__, str(exc) if message is None else message, frames)


class _LambdaEncoder(json.JSONEncoder):
    """Lambda's Python runtime writes Decimal (what boto3's DynamoDB resource returns) as a number."""

    def default(self, o: Any) -> Any:
        if isinstance(o, decimal.Decimal):
            return int(o) if o == o.to_integral_value() else float(o)
        return super().default(o)


def load_handler(code_uri: str, handler: str, layer_paths: list[str]) -> Callable[[Any, Any], Any]:
    """Import `module.function` the way Lambda's runtime does; raise _InitError with its error payload."""
    # Lambda: the function's code (/var/task) first, then the layers (/opt/python), then the runtime.
    for path in reversed([code_uri, *layer_paths]):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
    name, _, function_name = handler.rpartition(".")
    try:
        module = importlib.import_module(name.replace("/", "."))
    except ImportError as exc:
        message = f"Unable to import module '{name}': {exc}"
        raise _InitError(exception_payload(exc, "Runtime.ImportModuleError", message)) from exc
    except SyntaxError as exc:
        message = f"Syntax error in module '{name}': {exc}"
        raise _InitError(exception_payload(exc, "Runtime.UserCodeSyntaxError", message)) from exc
    except Exception as exc:
        raise _InitError(exception_payload(exc)) from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        message = f"Handler '{function_name}' missing on module '{name}'"
        raise _InitError(error_payload("Runtime.HandlerNotFound", message))
    return function  # type: ignore[no-any-return]


class _InitError(Exception):
    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(payload["errorMessage"])
        self.payload = payload


def invoke(function: Callable[[Any, Any], Any], request: dict[str, Any]) -> dict[str, Any]:
    """Run one event; the answer message (the result as JSON-ready data, or Lambda's error shape)."""
    context = LambdaContext.from_message(request["context"])
    try:
        result = function(request["event"], context)
    except Exception as exc:
        payload = exception_payload(exc)
        payload["requestId"] = context.aws_request_id
        # Lambda's runtime logs the failure to the function's log before it answers.
        sys.stderr.write(
            f"[ERROR] {payload['errorType']}: {payload['errorMessage']}\n"
            + "".join(traceback.format_exception(exc))
        )
        sys.stderr.flush()
        return {"type": "error", "error": payload}
    try:
        # Encoded here, once, so that what cannot be marshalled fails like on Lambda, in this worker.
        return {"type": "result", "result": _Encoded(json.dumps(result, cls=_LambdaEncoder))}
    except (TypeError, ValueError) as exc:
        payload = error_payload("Runtime.MarshalError", f"Unable to marshal response: {exc}")
        payload["requestId"] = context.aws_request_id
        return {"type": "error", "error": payload}


class _Encoded(str):
    """A result already encoded as JSON."""


def _send(stream: IO[bytes], message: dict[str, Any]) -> None:
    result = message.get("result")
    if isinstance(result, _Encoded):
        line = '{"type": "result", "result": ' + result + "}"
    else:
        line = json.dumps(message, cls=_LambdaEncoder)
    stream.write(line.encode() + b"\n")
    stream.flush()


def main(argv: list[str]) -> int:
    """Serve events until the request pipe closes."""
    # Ctrl-C and `kill -TERM` of the process group reach workers too; devstack stops its workers itself
    # (it closes the pipe, and kills what does not exit), so that an event in hand ends or fails cleanly.
    # A devstack that dies leaves the pipe closed, and the worker exits at the end of its event.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    request_fd, response_fd = int(argv[1]), int(argv[2])
    # The protocol's pipes are this process's own: no child the handler starts may inherit them.
    os.set_inheritable(request_fd, False)
    os.set_inheritable(response_fd, False)
    requests = os.fdopen(request_fd, "rb")
    responses = os.fdopen(response_fd, "wb")
    config_line = requests.readline()
    if not config_line:
        return 0
    config = json.loads(config_line)
    try:
        function = load_handler(config["code_uri"], config["handler"], config["layer_paths"])
    except _InitError as exc:
        sys.stderr.write(f"[ERROR] {exc.payload['errorType']}: {exc.payload['errorMessage']}\n")
        sys.stderr.flush()
        _send(responses, {"type": "init_error", "error": exc.payload})
        return 1
    _send(responses, {"type": "ready"})
    for line in requests:
        _send(responses, invoke(function, json.loads(line)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except BrokenPipeError:  # devstack went away mid-answer
        sys.exit(0)
