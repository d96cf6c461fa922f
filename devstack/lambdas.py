"""Local Lambda "containers": one worker process per warm execution environment, pooled per function.

Lambda never runs two events in one process: each execution environment serves one invocation at a
time, and keeps its module state (powertools' current event on the router class, cached clients) to
itself. So does this module. Every warm container is a `devstack/worker.py` process with its own
interpreter, started lazily (or ahead of time by `FunctionRuntime.warm_up`) with its function's own
environment; an invocation borrows a free worker of that function, or starts one while the function has
fewer than `max_instances`, or waits for one to come free. Events and results cross the process boundary
as JSON, so nothing else does.

What Lambda does to a failing invocation happens here too, as a `FunctionError` carrying Lambda's error
payload: an exception in the handler (the worker stays warm), an import that fails (the worker is
discarded; the next invocation tries again), a worker that exits, and a run past the function's Timeout,
after which the worker and everything it started are killed and the next invocation starts a new one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from devstack.model import FunctionSpec
from devstack.worker import LambdaContext, error_payload, log_stream_name

__all__ = [
    "FunctionError",
    "FunctionPool",
    "FunctionRuntime",
    "Invoke",
    "LambdaContext",
    "Worker",
    "add_layer_paths",
    "load_handler_module",
]

log = logging.getLogger(__name__)

MAX_INSTANCES_PER_FUNCTION = 4
WORKER_SCRIPT = Path(__file__).with_name("worker.py")
# How long a worker may take to import its handler. Lambda allows 10 s, but this machine is shared with
# moto, the client and the other workers, and a spurious failure here would be worse than a slow start.
INIT_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 3.0  # how long stopping workers wait for them to exit before killing them
_READ_CHUNK = 1 << 16

Invoke = Callable[[str, Any], Any]  # invoke(function logical id, event) -> the handler's result


class FunctionError(Exception):
    """An invocation failed; `payload` is Lambda's error shape (errorMessage, errorType, stackTrace)."""

    def __init__(self, function_id: str, payload: Mapping[str, Any]) -> None:
        self.function_id = function_id
        self.payload = dict(payload)
        super().__init__(f"{function_id}: {self.error_type}: {self.payload.get('errorMessage', '')}")

    @property
    def error_type(self) -> str:
        """Lambda's errorType: the exception's class name, or Runtime.* / Sandbox.* for the runtime's own."""
        return str(self.payload.get("errorType") or "Unhandled")


class _WorkerGone(Exception):
    """The worker exited or timed out; the message says which, as Lambda would."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(payload["errorMessage"])
        self.payload = payload


class Worker:
    """One worker process: the handler of one function, loaded once, serving one event at a time."""

    def __init__(self, spec: FunctionSpec, environment: Mapping[str, str]) -> None:
        self.spec = spec
        self.log_stream_name = log_stream_name()
        request_read, request_write = os.pipe()
        response_read, response_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKER_SCRIPT), str(request_read), str(response_write)],
                env={**environment, "AWS_LAMBDA_LOG_STREAM_NAME": self.log_stream_name},
                cwd=spec.code_uri,  # Lambda's working directory is the function's code
                stdin=subprocess.DEVNULL,
                pass_fds=(request_read, response_write),
            )
        except BaseException:
            for fd in (request_read, request_write, response_read, response_write):
                os.close(fd)
            raise
        os.close(request_read)
        os.close(response_write)
        self._requests = os.fdopen(request_write, "wb")
        self._responses = response_read
        self._buffer = bytearray()
        self._alive = True
        self._busy = False  # an invocation's thread is reading the response pipe

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.process.pid

    @property
    def alive(self) -> bool:
        """False once it exited, was killed, or broke the protocol."""
        return self._alive and self.process.poll() is None

    def initialize(self, timeout: float = INIT_TIMEOUT_SECONDS) -> None:
        """Send the handler's location and wait until it is imported; raise FunctionError if it is not."""
        config = {
            "code_uri": str(self.spec.code_uri),
            "handler": self.spec.handler,
            "layer_paths": [str(path) for path in self.spec.layer_paths],
        }
        try:
            self._send(config)
            answer = self._receive(time.monotonic() + timeout, None, timeout)
        except _WorkerGone as gone:
            self.kill()
            raise FunctionError(self.spec.logical_id, gone.payload) from None
        if answer.get("type") != "ready":
            self.kill()
            raise FunctionError(self.spec.logical_id, answer.get("error") or _unexpected(answer))

    def invoke(self, event: Any, context: LambdaContext) -> Any:
        """Run `event`; the handler's result, or FunctionError (after which a gone worker is not alive)."""
        self._busy = True
        try:
            self._send({"event": event, "context": context.to_message()})
            answer = self._receive(context.deadline, context.aws_request_id, self.spec.timeout_seconds)
        except _WorkerGone as gone:
            self.kill()
            raise FunctionError(self.spec.logical_id, gone.payload) from None
        finally:
            self._busy = False
        if answer.get("type") == "result":
            return answer.get("result")
        if answer.get("type") != "error":
            self.kill()
        raise FunctionError(self.spec.logical_id, answer.get("error") or _unexpected(answer))

    def stop(self) -> None:
        """Ask the worker to exit (it does once it has no event in hand); see `wait_or_kill`."""
        self._alive = False
        with contextlib.suppress(OSError):
            self._requests.close()

    def wait_or_kill(self, deadline: float) -> None:
        """Wait until `deadline` (time.monotonic()) for the worker to exit, then kill it."""
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
        if not self._busy:  # else the invocation's thread sees the pipe end and closes it
            self._close()

    def kill(self) -> None:
        """Kill the worker and every process it started (a flow script's sandbox, say), as Lambda does."""
        self._alive = False
        if self.process.poll() is None:  # never signal a pid that was reaped (it may be reused)
            for pid in _descendants(self.process.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            self.process.kill()
        self.process.wait()
        if not self._busy:
            self._close()

    def _close(self) -> None:
        with contextlib.suppress(OSError):
            self._requests.close()
        if self._responses >= 0:
            with contextlib.suppress(OSError):
                os.close(self._responses)
            self._responses = -1

    def _send(self, message: Mapping[str, Any]) -> None:
        try:
            self._requests.write(json.dumps(message).encode() + b"\n")
            self._requests.flush()
        except (BrokenPipeError, ValueError):  # ValueError: the pipe was closed by stop()
            raise _WorkerGone(self._exit_payload()) from None

    def _receive(self, deadline: float, request_id: str | None, timeout: float) -> dict[str, Any]:
        """The next message, or _WorkerGone on exit or past `deadline` (request_id None: the init)."""
        poller = select.poll()  # one system call per wait (no fd limit, unlike select.select)
        poller.register(self._responses, select.POLLIN)
        end = self._buffer.find(b"\n")
        while end < 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                self.kill()
                if request_id is None:
                    text = f"Error: Init timed out after {timeout:.2f} seconds"
                    raise _WorkerGone(error_payload("Runtime.InitTimeout", text))
                text = f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds"
                raise _WorkerGone(error_payload("Sandbox.Timedout", text))
            chunk = os.read(self._responses, _READ_CHUNK)
            if not chunk:
                raise _WorkerGone(self._exit_payload())
            searched = len(self._buffer)
            self._buffer += chunk
            end = self._buffer.find(b"\n", searched)
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self.kill()
            raise _WorkerGone(error_payload("Runtime.InvalidResponse", "the worker sent something not JSON"))
        return message

    def _exit_payload(self) -> dict[str, Any]:
        try:
            code = self.process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and code < 0:
            status = f"signal: {signal.Signals(-code).name}"
        else:
            status = f"exit status {code}"
        return error_payload("Runtime.ExitError", f"Error: Runtime exited with error: {status}")


def _unexpected(answer: Mapping[str, Any]) -> dict[str, Any]:
    return error_payload("Runtime.InvalidResponse", f"unexpected message from a worker: {str(answer)[:200]}")


def _descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (Linux /proc; empty elsewhere), deepest last."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after it
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(children.get(child, []))
    return found


class FunctionPool:
    """The warm workers of one function: at most `max_instances`, each serving one event at a time."""

    def __init__(
        self,
        spec: FunctionSpec,
        environment: Mapping[str, str],
        max_instances: int = MAX_INSTANCES_PER_FUNCTION,
    ) -> None:
        self.spec = spec
        self.environment = dict(environment)
        self._max_instances = max_instances
        self._idle: list[Worker] = []
        self._workers: set[Worker] = set()  # started and not discarded, idle or busy
        self._count = 0  # workers alive or being started (at most max_instances)
        self._warming = 0  # workers being started ahead of time, not yet idle
        self._waiting = 0  # invocations waiting for a worker
        self._stopped = False
        self._changed = threading.Condition()

    @property
    def instance_count(self) -> int:
        """Workers alive or being started."""
        with self._changed:
            return self._count

    @property
    def pids(self) -> set[int]:
        """Process ids of the live workers."""
        with self._changed:
            return {worker.pid for worker in self._workers}

    def context(self) -> LambdaContext:
        """A fresh Lambda context for one invocation."""
        context = LambdaContext.for_function(
            self.spec.name, timeout_seconds=self.spec.timeout_seconds, memory_mb=self.spec.memory_mb
        )
        context.invoked_function_arn = self.spec.arn
        return context

    def invoke(self, event: Any) -> Any:
        """Run the handler on `event` in a worker of its own, as Lambda would; FunctionError if it fails."""
        worker = self._acquire()
        try:
            context = self.context()
            context.log_stream_name = worker.log_stream_name
            return worker.invoke(event, context)
        finally:
            self._release(worker)

    def warm(self) -> None:
        """Start one worker ahead of time (in this thread) unless one is already alive or starting."""
        with self._changed:
            if self._stopped or self._count:
                return
            self._count += 1
            self._warming += 1
        worker = None
        try:
            worker = self._start()
        except FunctionError as exc:
            if not self._stopped:  # else the stack is stopping, and took the worker with it
                log.error("%s: the handler cannot be loaded: %s", self.spec.logical_id, exc)
            raise
        finally:
            with self._changed:
                self._warming -= 1
                if worker is None:
                    self._count -= 1
                else:
                    self._idle.append(worker)
                self._changed.notify()

    def stop(self) -> None:
        """Stop every worker: idle ones at once, busy ones once their event ends or the grace period does."""
        with self._changed:
            self._stopped = True
            workers = list(self._workers)
            self._idle.clear()
            self._changed.notify_all()
        for worker in workers:
            worker.stop()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for worker in workers:
            worker.wait_or_kill(deadline)

    def _acquire(self) -> Worker:
        with self._changed:
            self._waiting += 1
            try:
                while True:
                    if self._stopped:
                        stopping = error_payload("Runtime.Stopped", "the local stack is stopping")
                        raise FunctionError(self.spec.logical_id, stopping)
                    while self._idle:
                        worker = self._idle.pop()
                        if worker.alive:
                            return worker
                        self._discard(worker)
                        worker.kill()  # reaps it and closes its pipes
                    # A worker started ahead of time is nearer than a new one: wait for it.
                    if self._warming < self._waiting and self._count < self._max_instances:
                        self._count += 1
                        break
                    self._changed.wait()
            finally:
                self._waiting -= 1
        try:
            return self._start()
        except BaseException:
            with self._changed:
                self._count -= 1
                self._changed.notify()
            raise

    def _start(self) -> Worker:
        started = time.monotonic()
        worker = Worker(self.spec, self.environment)
        with self._changed:
            self._workers.add(worker)
        try:
            worker.initialize()
        except BaseException:
            with self._changed:
                self._workers.discard(worker)
            worker.kill()
            raise
        elapsed_ms = (time.monotonic() - started) * 1000
        log.info("%s: worker %d started (%.0f ms)", self.spec.logical_id, worker.pid, elapsed_ms)
        return worker

    def _release(self, worker: Worker) -> None:
        with self._changed:
            if worker.alive and not self._stopped:
                self._idle.append(worker)
            else:
                self._discard(worker)
            # One worker (or the room for one) came free: one waiter can have it. Waking them all would
            # have dozens of threads race for the lock on every answer.
            self._changed.notify()
        if not worker.alive:
            worker.kill()  # reaps it; a no-op for one killed already

    def _discard(self, worker: Worker) -> None:
        """Forget a worker that is gone (called with the lock held)."""
        if worker in self._workers:
            self._workers.discard(worker)
            self._count -= 1


class FunctionRuntime:
    """The worker pools of every function of the stack, by logical id."""

    def __init__(
        self,
        functions: Mapping[str, FunctionSpec],
        environments: Mapping[str, Mapping[str, str]],
        max_instances: int = MAX_INSTANCES_PER_FUNCTION,
    ) -> None:
        """`environments`: each function's whole environment (devstack.environment.function_environment)."""
        self.pools = {
            logical_id: FunctionPool(spec, environments[logical_id], max_instances)
            for logical_id, spec in functions.items()
        }
        self._warmer: threading.Thread | None = None

    def invoke(self, function_id: str, event: Any) -> Any:
        """Invoke a function's handler with `event`: its result, or FunctionError."""
        return self.pools[function_id].invoke(event)

    def warm_up(self, function_ids: Iterable[str] | None = None) -> list[str]:
        """Start one worker of each function (default: all) now; the ids of those whose handler fails to load.

        A function that cannot be imported is logged and left broken (its invocations fail), as a
        deployed function with an import error would be; the other functions still serve.
        """
        failed = []
        for function_id in self.pools if function_ids is None else function_ids:
            try:
                self.pools[function_id].warm()
            except FunctionError:
                failed.append(function_id)
        return failed

    def warm_up_in_background(self, function_ids: Iterable[str] | None = None) -> threading.Thread:
        """`warm_up` in a daemon thread, one function after the other (so it leaves a core to requests)."""
        ids = list(self.pools if function_ids is None else function_ids)
        self._warmer = threading.Thread(
            target=self.warm_up, args=(ids,), name="devstack-warm-up", daemon=True
        )
        self._warmer.start()
        return self._warmer

    def stop(self) -> None:
        """Stop every function's workers."""
        threads = [
            threading.Thread(target=pool.stop, name=f"devstack-stop-{function_id}")
            for function_id, pool in self.pools.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self._warmer is not None:
            self._warmer.join(STOP_GRACE_SECONDS)


# ---- in-process loading, for tools that read the handlers' modules (devstack.openapi) --------------


def load_handler_module(spec: FunctionSpec, module_name: str) -> ModuleType:
    """Import a function's handler module from its CodeUri by file path, under `module_name`, in this
    process. The local stack never does this (its handlers run in workers); tools that inspect a
    handler's module do."""
    module_path = spec.handler.rpartition(".")[0]
    path = spec.code_uri.joinpath(*module_path.split(".")).with_suffix(".py")
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None or not path.is_file():
        raise ImportError(f"{spec.logical_id}: handler module {path} not found")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before running so that dataclasses/pydantic can find the module by name.
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def add_layer_paths(functions: Iterable[FunctionSpec]) -> list[Path]:
    """Put the functions' layer directories on this process's sys.path (for `load_handler_module`).

    Returns the directories that were added.
    """
    added: list[Path] = []
    for spec in functions:
        for path in spec.layer_paths:
            if str(path) not in sys.path:
                sys.path.insert(0, str(path))
                added.append(path)
    return added
