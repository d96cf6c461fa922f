"""Runs one flow script in a separate, confined process: the parent side (the child is `flowgate.runtime`).

Flow scripts are tenants' code, while the process running them holds AWS credentials that reach every
tenant's data. So a script never runs here. A warm fork server per process (`runtime/forkserver.py`), started
once with `-I -S -B` (no site-packages, so no boto3) and a minimal environment (no AWS_* or other inherited
variables: it is exec'd fresh, so it never held a credential, in its environment or its memory), forks a
process per script. That process leads a fresh process group and session, runs in a fresh private working
directory (also its HOME and TMPDIR) that is removed afterwards, and confines itself before it compiles the
script: resource limits (CPU, memory, file size, and RLIMIT_NPROC: at most `Limits.tasks` more processes
and threads), non-dumpable, PR_SET_NO_NEW_PRIVS and the seccomp filter of `runtime/seccomp.py` (no sockets,
no signals outside its own group, no ptrace or other processes' memory, no setsid/setpgid, no exec, no
state that outlives it). When this process is root, the server and scripts run as uid/gid 65534; where we
are not root (Lambda), they share our uid, and the filter and non-dumpability are what keep them from this
process, from the server and from each other (`harden_current_process()` makes this process non-dumpable).

A *keeper* process per run (a child subreaper, outside the script's group) reports how the script process
ended and, when the run ends, kills the whole group and reaps every process of it: nothing a script started
survives its run. Then the run's directory is removed and, where every file of the script's uid in the
shared temporary directories (/tmp, /var/tmp, /dev/shm) is ours to judge (Lambda, or a script uid of 65534),
what the script left there is removed too. The platform's own directories sit in a directory that the
scripts can traverse but not list (and cannot chmod), under a name they cannot guess.

The child reaches platform data only through requests on its stdin/stdout (newline-delimited JSON), which
this module passes to `on_call`; the caller scopes each one to the execution's workspace. Every message
from the child is untrusted: it is size-limited, validated, and a broken one ends the run. This module
enforces the wall-clock limit, polls for cancellation, caps the log and always ends the run's processes.

Linux only (prctl, pidfd, seccomp), like Lambda.
"""

from __future__ import annotations

import ast
import atexit
import contextlib
import json
import os
import secrets
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from flowgate.errors import BadRequest, FlowgateError
from flowgate.observability import logger

RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
RUNTIME_FILES = ("bootstrap.py", "flow_api.py", "seccomp.py", "forkserver.py")
SCRIPT_FILENAME = "<flow script>"
# The unprivileged identity a root parent gives the child ("nobody" on Debian and Amazon Linux).
SANDBOX_UID = SANDBOX_GID = 65534
# Largest file a script may write in its working directory (RLIMIT_FSIZE).
FILE_BYTES = 16 * 2**20
# Largest single message from the child; a larger one ends the script with an error.
MAX_MESSAGE_BYTES = 2**20
# Longest result message kept; a script cannot make the execution's message arbitrarily long.
MAX_RESULT_MESSAGE_CHARS = 4096
# What is kept of the child's raw stderr, shown only when it ends without a result (a crash).
STDERR_BYTES = 8 * 1024
# Answers the child has not read yet. One request waits for its answer, so only a child that stops reading
# (on purpose) comes near this; past it the run ends rather than this process's memory.
MAX_UNREAD_BYTES = 16 * 2**20
POLL_SECONDS = 0.2
READ_CHUNK = 64 * 1024
RPC_OPS = frozenset({"start_child", "run_child", "wait_child", "get_child", "system_get"})
# bootstrap.py exits with this code when the script ran out of memory.
EXIT_OUT_OF_MEMORY = 3
PR_SET_DUMPABLE = 4
# Where any process of the uid can write, so a script could leave files there for the next execution.
_TMP = "/tmp"  # noqa: S108 - the platform's directory is made with mkdtemp inside
SHARED_TEMP_DIRS = (_TMP, "/var/tmp", "/dev/shm")  # noqa: S108 - swept, not used
# Longest wait for the keeper to report that every process of a run is reaped, after the kill.
REAP_SECONDS = 10.0


@dataclass(frozen=True)
class Limits:
    """What one script may use; `wall_seconds` includes the time spent waiting on answers to its calls."""

    wall_seconds: float = 60.0
    cpu_seconds: int = 60
    memory_bytes: int = 256 * 2**20
    log_bytes: int = 64 * 1024
    # Processes and threads the script may add to those of its uid (RLIMIT_NPROC is per uid).
    tasks: int = 32


DEFAULT_LIMITS = Limits()


@dataclass
class ScriptResult:
    """How a script ended. `outputs` are empty when the run was stopped (time, memory, cancel)."""

    status: Literal["success", "error", "cancelled"]
    message: str | None
    outputs: dict[str, Any]
    log: list[str]
    log_truncated: bool
    error_line: int | None
    duration_ms: int


def check_syntax(script: str) -> None:
    """Refuse a script that does not compile or defines no top-level `handler`, before it is stored."""
    try:
        tree = ast.parse(script, filename=SCRIPT_FILENAME)
    except SyntaxError as exc:
        if exc.lineno is None:  # NUL bytes, for one
            raise BadRequest(f"the script cannot be parsed: {exc.msg}", code="script_syntax_error") from None
        raise BadRequest(
            f"syntax error at line {exc.lineno}: {exc.msg}", code="script_syntax_error"
        ) from None
    except ValueError as exc:  # NUL bytes, in Python releases that do not call that a SyntaxError
        raise BadRequest(f"the script cannot be parsed: {exc}", code="script_syntax_error") from None
    except (RecursionError, MemoryError):  # how the parser reports nesting deeper than it can follow
        raise BadRequest(
            "the script cannot be parsed: it is nested too deeply", code="script_syntax_error"
        ) from None
    if not any(isinstance(node, ast.FunctionDef) and node.name == "handler" for node in tree.body):
        raise BadRequest(
            "the script must define a top-level function handler(system, this)", code="script_syntax_error"
        )


def harden_current_process() -> None:
    """Prepare this process to run scripts, once per container, before any script runs (and before any
    credential is read, though the fork server never sees them either way: it is a fresh exec).

    Makes this process non-dumpable: a non-dumpable process's `/proc/<pid>/environ`, `mem` and `maps` are
    closed to other processes of the same uid, and it cannot be ptrace-attached. This is what keeps a
    script's process away from the credentials in this process's environment where both run as the same
    user (Lambda). Then it creates the platform's unlistable directory, points `tempfile` at its private
    part (so this process's own temporary files are out of the scripts' sight and never taken for a
    script's leftovers) and starts the warm fork server while no script can be running, in a thread, so
    that the import this is called from does not wait for it (a first run waits if it must).
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
    tempfile.tempdir = str(_platform().scratch)
    _servers.warm_up_in_background()


def _never_cancelled() -> bool:
    return False


def run_script(
    script: str,
    inputs: dict[str, Any],
    on_call: Callable[[str, dict[str, Any]], Any],
    limits: Limits = DEFAULT_LIMITS,
    should_cancel: Callable[[], bool] = _never_cancelled,
    *,
    execution_id: str | None = None,
) -> ScriptResult:
    """Run `script`'s handler in a sandboxed child process and report how it ended.

    `on_call(op, args)` answers each request of the script (ops in RPC_OPS; `args` come from the script and
    must be validated) with JSON data, or raises: a FlowgateError's message reaches the script as
    `flow_api.FlowApiError`, any other exception as a generic "internal error" (and is logged here).
    The `timeout` of `wait_child` is always a number, at most the time left to the script, so no answer
    can keep the script past its wall-clock limit. `should_cancel()` is polled about every POLL_SECONDS
    and before each request; `execution_id` is what the script sees as `this.id`.

    `inputs` must be JSON data (TypeError otherwise). As root, RuntimeError when no Python can run as
    uid 65534: scripts never run as root.
    """
    started = time.monotonic()
    start_message = _encode(
        {
            "script": script,
            "inputs": inputs,
            "execution_id": execution_id,
            "limits": {
                "cpu_seconds": limits.cpu_seconds,
                "memory_bytes": limits.memory_bytes,
                "file_bytes": FILE_BYTES,
                "tasks": limits.tasks,
            },
            "log_bytes": limits.log_bytes,
            "max_message_bytes": MAX_MESSAGE_BYTES,
        }
    )
    with _run_directory() as work:
        child = _servers.spawn(work)
        try:
            try:
                session = _Session(child, on_call, limits, should_cancel, started + limits.wall_seconds)
            except BaseException:
                child.end()
                raise
            try:
                end = session.run(start_message)
            finally:
                session.close()
        finally:
            _servers.finished()
    return ScriptResult(
        status=end.status,
        message=end.message,
        outputs=end.outputs,
        log=session.log,
        log_truncated=session.log_truncated,
        error_line=end.error_line,
        duration_ms=int((time.monotonic() - started) * 1000),
    )


@dataclass
class _End:
    status: Literal["success", "error", "cancelled"]
    message: str | None
    outputs: dict[str, Any] = field(default_factory=dict)
    error_line: int | None = None


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, allow_nan=False).encode() + b"\n"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _malformed(what: str) -> _End:
    return _End("error", f"the flow runtime broke the protocol: {what}")


class _Session:
    """One child process and the event loop that serves it until it ends or is stopped."""

    def __init__(
        self,
        child: _Child,
        on_call: Callable[[str, dict[str, Any]], Any],
        limits: Limits,
        should_cancel: Callable[[], bool],
        deadline: float,
    ) -> None:
        self._child = child
        self._on_call = on_call
        self._limits = limits
        self._should_cancel = should_cancel
        self._deadline = deadline
        self._next_cancel_check = 0.0
        self.log: list[str] = []
        self.log_truncated = False
        self._log_used = 0
        self._stdin = child.stdin
        self._stdout = child.stdout
        self._stderr_fd = child.stderr
        self._status = child.status
        self._stderr = bytearray()
        self._to_child = bytearray()
        self._from_child = bytearray()
        for fd in (self._stdin, self._stdout, self._stderr_fd, self._status):
            os.set_blocking(fd, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stdout, selectors.EVENT_READ)
        self._selector.register(self._stderr_fd, selectors.EVENT_READ)
        self._selector.register(self._status, selectors.EVENT_READ)

    # ---- the loop ----
    def run(self, start_message: bytes) -> _End:
        self._send(start_message)
        while True:
            end = self._check_stop()
            if end is not None:
                return end
            timeout = min(POLL_SECONDS, self._deadline - time.monotonic())
            for key, _ in self._selector.select(max(timeout, 0.0)):
                end = self._on_ready(key.fd)
                if end is not None:
                    return end

    def _check_stop(self, *, poll_cancel_now: bool = False) -> _End | None:
        now = time.monotonic()
        if poll_cancel_now or now >= self._next_cancel_check:
            self._next_cancel_check = now + POLL_SECONDS
            if self._should_cancel():
                return _End("cancelled", None)
        if now >= self._deadline:
            return _End("error", f"time limit of {self._limits.wall_seconds:g}s exceeded")
        return None

    def _on_ready(self, fd: int) -> _End | None:
        if fd == self._stdin:
            self._flush_to_child()
            return None
        if fd == self._stderr_fd:
            self._read_stderr()
            return None
        if fd == self._stdout:
            return self._take(self._read_stdout())
        # The status pipe: the keeper reports the script process's pid, then its exit.
        if not self._child.read_status():
            self._selector.unregister(self._status)
        if self._child.exit is None and not self._child.keeper_gone:
            return None
        # The script process exited (or its keeper is gone); what it wrote before is still in the pipe. A
        # forked process of the script may hold the pipe and keep writing, so the limits still apply while
        # it is drained.
        while (end := self._check_stop()) is None:
            chunk = self._read_stdout()
            if not chunk:
                return self._exited()
            end = self._take(chunk)
            if end is not None:
                return end
        return end

    # ---- child -> parent ----
    def _read_stdout(self) -> bytes:
        """One chunk of what the child wrote; empty when there is nothing now or the pipe is closed. One
        chunk at a time, so a child that writes without pause cannot keep the loop from its checks."""
        try:
            chunk = os.read(self._stdout, READ_CHUNK)
        except BlockingIOError:
            return b""
        if not chunk and self._stdout in self._selector.get_map():  # closed: the keeper reports the exit
            self._selector.unregister(self._stdout)
        return chunk

    def _take(self, chunk: bytes) -> _End | None:
        """Handle each message completed by `chunk`; None while the child goes on."""
        self._from_child += chunk
        *lines, rest = self._from_child.split(b"\n")
        self._from_child = bytearray(rest)
        if len(rest) > MAX_MESSAGE_BYTES or any(len(line) > MAX_MESSAGE_BYTES for line in lines):
            return _End("error", f"a message from the flow script exceeded {MAX_MESSAGE_BYTES} bytes")
        for line in lines:
            end = self._handle(bytes(line))
            if end is not None:
                return end
        return None

    def _read_stderr(self) -> None:
        try:
            chunk = os.read(self._stderr_fd, READ_CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            self._selector.unregister(self._stderr_fd)
            return
        self._stderr += chunk[: max(0, STDERR_BYTES - len(self._stderr))]

    def _handle(self, line: bytes) -> _End | None:
        try:
            message = json.loads(line, parse_constant=_reject_constant)
        except ValueError:
            return _malformed("a message is not JSON")
        if not isinstance(message, dict):
            return _malformed("a message is not an object")
        op = message.get("op")
        if op == "log":
            text = message.get("text")
            if not isinstance(text, str):
                return _malformed("a log line is not text")
            self._add_log(text)
            return None
        if op == "result":
            return self._result(message)
        args = message.get("args")
        if op in RPC_OPS and "id" in message and isinstance(args, dict):
            end = self._check_stop(poll_cancel_now=True)
            return end if end is not None else self._answer(message["id"], str(op), args)
        return _malformed(f"unknown message {str(op)[:40]!r}")

    def _result(self, message: dict[str, Any]) -> _End:
        status, text = message.get("status"), message.get("message")
        outputs, line = message.get("outputs"), message.get("error_line")
        if (
            status not in ("success", "error")
            or not (text is None or isinstance(text, str))
            or not isinstance(outputs, dict)
            or not (line is None or (isinstance(line, int) and not isinstance(line, bool)))
        ):
            return _malformed("the result is not well-formed")
        clipped = None if text is None else text[:MAX_RESULT_MESSAGE_CHARS]
        return _End("success" if status == "success" else "error", clipped, outputs, line)

    def _add_log(self, text: str) -> None:
        """Keep log lines up to the byte cap; the first that does not fit is cut, the rest dropped."""
        if self.log_truncated:
            return
        data = text.encode("utf-8", "replace")  # lone surrogates cannot be stored: they become '?'
        room = self._limits.log_bytes - self._log_used
        if len(data) > room:
            self.log_truncated = True
            data = data[:room]
            if not data:
                return
        self._log_used += len(data)
        self.log.append(data.decode("utf-8", "ignore"))

    def _exited(self) -> _End:
        """The child ended without sending a result: say why, and show its raw stderr (a crash report)."""
        with contextlib.suppress(BlockingIOError):  # what the stderr pipe still holds
            self._stderr += os.read(self._stderr_fd, STDERR_BYTES)[: max(0, STDERR_BYTES - len(self._stderr))]
        if self._child.exit is None:
            if self._child.pid is None:
                return _End("error", "the flow runtime could not be started")
            return _End("error", "the flow runtime's keeper ended unexpectedly")
        code, status = self._child.exit
        if code == os.CLD_EXITED and status == EXIT_OUT_OF_MEMORY:
            return _End("error", f"memory limit of {self._limits.memory_bytes / 2**20:g} MiB exceeded")
        if code != os.CLD_EXITED and status == signal.SIGXCPU:
            return _End("error", f"cpu time limit of {self._limits.cpu_seconds}s exceeded")
        for line in self._stderr.decode("utf-8", "replace").splitlines():
            self._add_log(line)
        if code == os.CLD_EXITED:
            return _End("error", f"the flow runtime exited without a result (exit code {status})")
        return _End("error", f"the flow runtime was ended by {signal.Signals(status).name}")

    # ---- parent -> child ----
    def _answer(self, request_id: Any, op: str, args: dict[str, Any]) -> _End | None:
        if op == "wait_child":
            args = {**args, "timeout": self._bounded_timeout(args.get("timeout"))}
        try:
            answer = _encode({"id": request_id, "ok": True, "value": self._on_call(op, args)})
        except FlowgateError as exc:
            answer = _encode({"id": request_id, "ok": False, "error": exc.message, "code": exc.code})
        except Exception:  # the script must not learn platform internals from an unexpected error
            logger.exception("a flow script's platform call failed", extra={"op": op})
            answer = _encode(
                {"id": request_id, "ok": False, "error": "internal error", "code": "internal_error"}
            )
        self._send(answer)
        if len(self._to_child) > MAX_UNREAD_BYTES:
            return _malformed("it does not read the answers to its requests")
        return None

    def _bounded_timeout(self, requested: Any) -> float:
        left = max(0.0, self._deadline - time.monotonic())
        if isinstance(requested, int | float) and not isinstance(requested, bool) and requested >= 0:
            return min(float(requested), left)
        return left

    def _send(self, data: bytes) -> None:
        if not self._to_child:
            self._selector.register(self._stdin, selectors.EVENT_WRITE)
        self._to_child += data

    def _flush_to_child(self) -> None:
        """Write what the pipe takes now: a child that stops reading can never block this loop."""
        try:
            written = os.write(self._stdin, self._to_child)
        except BlockingIOError:
            return
        except BrokenPipeError:  # the child is gone; the keeper reports it
            written = len(self._to_child)
        del self._to_child[:written]
        if not self._to_child:
            self._selector.unregister(self._stdin)

    # ---- the end ----
    def close(self) -> None:
        self._selector.close()
        self._child.end()


# ---- the process ----
@dataclass
class _Child:
    """This process's ends of one run's pipes: the script's stdin, stdout, stderr, and the keeper's status
    (read) and release (write) pipes."""

    stdin: int
    stdout: int
    stderr: int
    status: int
    release: int
    pid: int | None = None
    exit: tuple[int, int] | None = None  # (si_code, si_status) of the script process
    killed: bool = False
    done: bool = False
    keeper_gone: bool = False
    _pending: bytes = b""

    def read_status(self) -> bool:
        """Take what the keeper reported; False once the status pipe is closed (the keeper has exited)."""
        while True:
            try:
                chunk = os.read(self.status, 4096)
            except BlockingIOError:
                return True
            if not chunk:
                self.keeper_gone = True
                return False
            self._pending += chunk
            *lines, self._pending = self._pending.split(b"\n")
            for line in lines:
                self._note(line.decode("ascii", "replace").split())

    def _note(self, words: list[str]) -> None:
        with contextlib.suppress(ValueError, IndexError):
            if words[0] == "pid":
                self.pid = int(words[1])
            elif words[0] == "exit":
                self.exit = (int(words[1]), int(words[2]))
            elif words[0] == "killed":
                self.killed = True
            elif words[0] == "done":
                self.done = True

    def end(self) -> None:
        """Have the keeper kill the script's whole group and reap it; wait until it reports so (bounded),
        then close our ends of the pipes. After this no process of the run can write to its directory."""
        with contextlib.suppress(OSError):
            os.write(self.release, b"x")
        os.close(self.release)
        for fd in (self.stdin, self.stdout, self.stderr):
            os.close(fd)
        os.set_blocking(self.status, False)
        deadline = time.monotonic() + REAP_SECONDS
        with selectors.DefaultSelector() as selector:
            selector.register(self.status, selectors.EVENT_READ)
            while not self.keeper_gone and (left := deadline - time.monotonic()) > 0:
                if selector.select(left):
                    self.read_status()
        os.close(self.status)
        if not self.done:
            logger.warning(
                "a flow script's processes were not all reaped in time",
                extra={"pid": self.pid, "killed": self.killed, "keeper_gone": self.keeper_gone},
            )


class _ForkServer:
    """One `runtime/forkserver.py` process and our end of its control socket."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        drop = dropping_privileges()
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - a fixed command line; requests travel over the socket
                [
                    interpreter(),
                    "-I",
                    "-S",
                    "-B",
                    str(_platform().runtime / "forkserver.py"),
                    str(theirs.fileno()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=child_env(Path("/")),
                cwd="/",
                start_new_session=True,
                close_fds=True,
                pass_fds=(theirs.fileno(),),
                user=SANDBOX_UID if drop else None,
                group=SANDBOX_GID if drop else None,
                extra_groups=[] if drop else None,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._socket = ours
        self._lock = threading.Lock()
        self.owner = os.getpid()

    def alive(self) -> bool:
        return self.owner == os.getpid() and self._proc.poll() is None

    def request(self, work: Path, fds: list[int]) -> None:
        """Ask for a run in `work` with the child's ends of its pipes; OSError when the server is gone."""
        header = json.dumps({"cwd": str(work), "env": child_env(work)}).encode()
        with self._lock:
            socket.send_fds(self._socket, [header], fds)

    def kill(self) -> None:
        self._socket.close()
        with contextlib.suppress(OSError):
            self._proc.kill()
        self._proc.wait()

    def close(self, *, wait: bool = False) -> None:
        """Close the control socket: the server exits (after forking the keepers it was asked for; those
        go on until their runs end)."""
        self._socket.close()
        if wait and self.owner == os.getpid():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=30)


class _Servers:
    """The warm fork server of this process and the runs in flight.

    The server starts only while no script of this process runs: it is dumpable for the moment before its
    first statement makes it non-dumpable, and no script may be there to open its memory then. If it dies
    while scripts run, each new run gets a server of its own, started for that run and closed at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._warm: _ForkServer | None = None
        self._active = 0
        self.warming: threading.Thread | None = None

    def warm_up(self) -> None:
        with self._lock:
            self._ensure_warm()

    def warm_up_in_background(self) -> threading.Thread:
        def start() -> None:
            try:
                self.warm_up()
            except Exception:  # the first run raises it again, where it can be reported
                logger.exception("the flow sandbox's fork server could not be started")

        self.warming = threading.Thread(target=start, name="flowgate-fork-server-start", daemon=True)
        self.warming.start()
        return self.warming

    def _ensure_warm(self) -> _ForkServer | None:
        if self._warm is not None and not self._warm.alive():
            if self._warm.owner == os.getpid():
                self._warm.close(wait=True)
            self._warm = None
        if self._warm is None and self._active == 0:
            self._warm = _ForkServer()
        return self._warm

    def spawn(self, work: Path) -> _Child:
        """Start a run in `work` (a fresh directory) and return our ends of its pipes."""
        with self._lock:
            warm = self._ensure_warm()
            self._active += 1
        try:
            return self._spawn(warm, work)
        except BaseException:
            self.finished()
            raise

    def finished(self) -> None:
        with self._lock:
            self._active -= 1

    def _spawn(self, warm: _ForkServer | None, work: Path) -> _Child:
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        stdout_r, stdout_w = os.pipe2(os.O_CLOEXEC)
        stderr_r, stderr_w = os.pipe2(os.O_CLOEXEC)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        release_r, release_w = os.pipe2(os.O_CLOEXEC)
        theirs = [stdin_r, stdout_w, stderr_w, status_w, release_r]
        child = _Child(stdin_w, stdout_r, stderr_r, status_r, release_w)
        try:
            try:
                if warm is None:
                    raise ConnectionError("no warm fork server")
                warm.request(work, theirs)
            except OSError:
                one_shot = _ForkServer()
                try:
                    one_shot.request(work, theirs)
                finally:
                    one_shot.close(wait=True)
        except BaseException:
            for fd in (stdin_w, stdout_r, stderr_r, status_r, release_w):
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        return child

    def shutdown(self) -> None:
        """At exit: end the warm server (it holds nothing; keepers of runs still in flight go on without
        it and end their runs when our ends of their pipes close)."""
        warm, self._warm = self._warm, None
        if warm is not None and warm.owner == os.getpid():
            warm.kill()

    def forget(self) -> None:
        """In a forked copy of this process: close the warm server's socket and start afresh (the parent's
        server belongs to the parent)."""
        self._lock = threading.Lock()
        if self._warm is not None:
            self._warm.close()
        self._warm = None
        self._active = 0


_servers = _Servers()
os.register_at_fork(after_in_child=_servers.forget)


def dropping_privileges() -> bool:
    return os.geteuid() == 0


def script_uid() -> int:
    """The uid scripts run as."""
    return SANDBOX_UID if dropping_privileges() else os.getuid()


@cache
def _runtime_sources() -> dict[str, bytes]:
    return {name: (RUNTIME_DIR / name).read_bytes() for name in RUNTIME_FILES}


@dataclass
class _PlatformDirs:
    """This process's own directory in /tmp.

    `base` can be traversed but not listed, nor written, by the scripts' uid. `private`, inside it under an
    unguessable name, holds the run directories and `scratch` (this process's own temporary files, once
    hardened); it cannot be listed either, so no script finds another run's directory. Where scripts share
    our uid they can still create entries in `private` (the parent of their working directory): those are
    removed after each run, through a descriptor opened while `private` was still listable. `runtime` is
    where the fork server's code is read from.
    """

    base: Path
    private: Path
    private_fd: int
    scratch: Path
    runtime: Path
    keep: frozenset[tuple[int, int]]  # entries of the shared temp dirs that are not a script's leftovers
    owner: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    live: set[str] = field(default_factory=set)  # names of the run directories in use


def _remove_stale_platforms(parent: str) -> None:
    """Remove the directories of platform processes of our uid that died without cleaning up (killed)."""
    with contextlib.suppress(OSError), os.scandir(parent) as entries:
        for entry in list(entries):
            owner = entry.name.split("-")
            if len(owner) != 3 or owner[0] != "flowgate" or not owner[1].isdigit():
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_uid != os.geteuid() or not entry.is_dir():
                    continue
                try:
                    os.kill(int(owner[1]), 0)
                    continue  # alive (or a pid in use again: left for later)
                except ProcessLookupError:
                    pass
                os.chmod(entry.path, 0o700)
                _remove_tree(Path(entry.path))


@cache
def _platform() -> _PlatformDirs:
    parent = _TMP if os.path.isdir(_TMP) else tempfile.gettempdir()
    _remove_stale_platforms(parent)
    base = Path(tempfile.mkdtemp(prefix=f"flowgate-{os.getpid()}-", dir=parent))
    private = base / secrets.token_hex(16)
    private.mkdir(mode=0o700)
    scratch = private / secrets.token_hex(16)
    scratch.mkdir(mode=0o700)
    private_fd = os.open(private, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    runtime = RUNTIME_DIR
    if dropping_privileges():
        # Root: the scripts (uid 65534) traverse to their own directories only; the runtime is a root-owned
        # read-only copy, readable wherever this package is installed.
        private.chmod(0o711)
        runtime = base / "runtime"
        runtime.mkdir(mode=0o755)
        for name, source in _runtime_sources().items():
            (runtime / name).write_bytes(source)
            (runtime / name).chmod(0o444)
        base.chmod(0o711)
    else:
        # Our uid is the scripts' uid: no read bit (and scripts cannot chmod: seccomp).
        private.chmod(0o300)
        base.chmod(0o100)
    keep = frozenset(_temp_entries(script_uid()))
    dirs = _PlatformDirs(base, private, private_fd, scratch, runtime, keep, os.getpid())
    atexit.register(_remove_platform, dirs)
    return dirs


def _remove_platform(dirs: _PlatformDirs) -> None:
    if os.getpid() == dirs.owner:
        _servers.shutdown()
        with contextlib.suppress(OSError):
            dirs.base.chmod(0o700)
            dirs.private.chmod(0o700)
        _remove_tree(dirs.base)


def _temp_entries(uid: int) -> Iterator[tuple[int, int]]:
    """(device, inode) of the entries of uid `uid` in the shared temp dirs."""
    for directory in SHARED_TEMP_DIRS:
        with contextlib.suppress(OSError), os.scandir(directory) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    info = entry.stat(follow_symlinks=False)
                    if info.st_uid == uid:
                        yield info.st_dev, info.st_ino


def sweeps_shared_temp() -> bool:
    """Whether every file of the scripts' uid in the shared temp dirs is a platform's or a script's: on
    Lambda (one function per machine), or when scripts run as 65534 (nobody: no person's files)."""
    return script_uid() == SANDBOX_UID or "AWS_LAMBDA_FUNCTION_NAME" in os.environ


def _remove_entry(path: str, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        _remove_tree(Path(path))
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _sweep_private(dirs: _PlatformDirs) -> None:
    """Remove what scripts created beside their working directories, in `private`."""
    with dirs.lock:
        names = set(os.listdir(dirs.private_fd)) - dirs.live - {dirs.scratch.name}
    for name in names:
        with contextlib.suppress(OSError):
            path = os.path.join(dirs.private, name)
            _remove_entry(path, os.lstat(path))


def _sweep_shared_temp(dirs: _PlatformDirs) -> None:
    """Remove what scripts left in the shared temp dirs: entries of their uid that were not there before
    the first script ran, other than the platform's directory."""
    uid = script_uid()
    base = dirs.base.lstat()
    keep = dirs.keep | {(base.st_dev, base.st_ino)}
    for directory in SHARED_TEMP_DIRS:
        with contextlib.suppress(OSError), os.scandir(directory) as entries:
            for entry in list(entries):
                with contextlib.suppress(OSError):
                    info = entry.stat(follow_symlinks=False)
                    if info.st_uid == uid and (info.st_dev, info.st_ino) not in keep:
                        _remove_entry(entry.path, info)


@contextlib.contextmanager
def _run_directory() -> Iterator[Path]:
    """A fresh private directory per run, the script's cwd, HOME and TMPDIR; removed with whatever the
    script left elsewhere once the run's processes are all gone (the caller ends them inside)."""
    dirs = _platform()
    with dirs.lock:
        work = Path(tempfile.mkdtemp(prefix="run-", dir=dirs.private))
        dirs.live.add(work.name)
    try:
        if dropping_privileges():
            os.chown(work, SANDBOX_UID, SANDBOX_GID)
        yield work
    finally:
        _remove_tree(work)
        with dirs.lock:
            dirs.live.discard(work.name)
        _sweep_private(dirs)
        if sweeps_shared_temp():
            _sweep_shared_temp(dirs)


def _remove_tree(path: Path) -> None:
    """Remove a run's directory, even where the script took the permissions away from its own files (where
    it runs with our uid); what still cannot go is logged, never raised."""

    def unlock(func: Callable[..., Any], target: str, _exc_info: Any) -> None:
        if not os.path.lexists(target):
            return
        os.chmod(os.path.dirname(target), 0o700)
        if os.path.isdir(target) and not os.path.islink(target):
            os.chmod(target, 0o700)
            shutil.rmtree(target, onerror=unlock)
        else:
            func(target)

    try:
        shutil.rmtree(path, onerror=unlock)
    except OSError:
        logger.warning("a flow script's run directory could not be removed", extra={"path": str(path)})


def child_env(home: Path) -> dict[str, str]:
    """The whole environment of a script's process: nothing inherited, so no credentials."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(home), "TMPDIR": str(home)}


@cache
def interpreter() -> str:
    """The Python the fork server runs: ours, unless the scripts' uid cannot run it (say, under root's home
    directory); then a system Python of the same minor version. Never root: with no usable one, refuse."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not dropping_privileges() and os.access(sys.executable, os.X_OK):
        return sys.executable
    candidates = [sys.executable, shutil.which(f"python{version}", path="/usr/local/bin:/usr/bin:/bin")]
    for candidate in candidates:
        if candidate and _runs_as_sandbox_user(candidate, version):
            return candidate
    raise RuntimeError(
        f"no Python {version} that uid {script_uid()} can run: flow scripts cannot be sandboxed"
    )


def _runs_as_sandbox_user(python: str, version: str) -> bool:
    check = f"import sys; sys.exit('%d.%d' % sys.version_info[:2] != {version!r})"
    drop = dropping_privileges()
    try:
        probe = subprocess.run(  # noqa: S603 - a fixed command line, no user input
            [python, "-I", "-S", "-B", "-c", check],
            env=child_env(Path("/")),
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=SANDBOX_UID if drop else None,
            group=SANDBOX_GID if drop else None,
            extra_groups=[] if drop else None,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0
