"""Runs one flow script in a separate, confined process: the parent side (the child is `flowgate.runtime`).

Flow scripts are tenants' code, while the process running them holds AWS credentials that reach every
tenant's data. So a script never runs here: it runs in a child interpreter started with `-I -S -B` (no
site-packages, so no boto3), a minimal environment (no AWS_* or other inherited variables), a fresh working
directory that is removed afterwards, its own session (so the whole process group can be killed), resource
limits, PR_SET_NO_NEW_PRIVS and a seccomp filter that refuses sockets (the child applies these to itself
before it compiles the script). When this process is root the child also runs as uid/gid 65534, so it
cannot read this process's `/proc/<pid>/environ` or memory; where we are not root (Lambda),
`harden_current_process()` makes this process non-dumpable, which denies the same to a same-uid child.

The child reaches platform data only through requests on its stdin/stdout (newline-delimited JSON), which
this module passes to `on_call`; the caller scopes each one to the execution's workspace. Every message
from the child is untrusted: it is size-limited, validated, and a broken one ends the run. This module
enforces the wall-clock limit, polls for cancellation, caps the log and always kills and reaps the child.

Linux only (prctl, pidfd), like Lambda.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from flowgate.errors import BadRequest, FlowgateError
from flowgate.observability import logger

RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
RUNTIME_FILES = ("bootstrap.py", "flow_api.py")
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


@dataclass(frozen=True)
class Limits:
    """What one script may use; `wall_seconds` includes the time spent waiting on answers to its calls."""

    wall_seconds: float = 60.0
    cpu_seconds: int = 60
    memory_bytes: int = 256 * 2**20
    log_bytes: int = 64 * 1024


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
    """Make this process non-dumpable, once per container, before any script runs.

    A non-dumpable process's `/proc/<pid>/environ`, `mem` and `maps` are closed to other processes of the
    same uid, and it cannot be ptrace-attached. This is what keeps a script's process away from the
    credentials in this process's environment where both run as the same user (Lambda).
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


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
            },
            "log_bytes": limits.log_bytes,
            "max_message_bytes": MAX_MESSAGE_BYTES,
        }
    )
    with _run_directory() as (runtime, work):
        proc = _spawn(runtime, work)
        try:
            session = _Session(proc, on_call, limits, should_cancel, started + limits.wall_seconds)
        except BaseException:
            _kill(proc)
            raise
        try:
            end = session.run(start_message)
        finally:
            session.close()
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
        proc: subprocess.Popen[bytes],
        on_call: Callable[[str, dict[str, Any]], Any],
        limits: Limits,
        should_cancel: Callable[[], bool],
        deadline: float,
    ) -> None:
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        self._proc = proc
        self._on_call = on_call
        self._limits = limits
        self._should_cancel = should_cancel
        self._deadline = deadline
        self._next_cancel_check = 0.0
        self.log: list[str] = []
        self.log_truncated = False
        self._log_used = 0
        self._stdin = proc.stdin.fileno()
        self._stdout = proc.stdout.fileno()
        self._stderr_fd = proc.stderr.fileno()
        self._stderr = bytearray()
        self._to_child = bytearray()
        self._from_child = bytearray()
        self._pidfd = os.pidfd_open(proc.pid)
        for fd in (self._stdin, self._stdout, self._stderr_fd):
            os.set_blocking(fd, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stdout, selectors.EVENT_READ)
        self._selector.register(self._stderr_fd, selectors.EVENT_READ)
        self._selector.register(self._pidfd, selectors.EVENT_READ)

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
        # The pidfd: the child exited; what it wrote before is still in the pipe. A forked grandchild may
        # hold the pipe and keep writing, so the limits still apply while it is drained.
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
        if not chunk and self._stdout in self._selector.get_map():  # closed: the pidfd reports the exit
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
        info = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOWAIT)
        assert info is not None  # without WNOHANG, waitid waits for the exit the pidfd announced
        if info.si_code == os.CLD_EXITED and info.si_status == EXIT_OUT_OF_MEMORY:
            return _End("error", f"memory limit of {self._limits.memory_bytes / 2**20:g} MiB exceeded")
        if info.si_code != os.CLD_EXITED and info.si_status == signal.SIGXCPU:
            return _End("error", f"cpu time limit of {self._limits.cpu_seconds}s exceeded")
        for line in self._stderr.decode("utf-8", "replace").splitlines():
            self._add_log(line)
        if info.si_code == os.CLD_EXITED:
            return _End("error", f"the flow runtime exited without a result (exit code {info.si_status})")
        return _End("error", f"the flow runtime was ended by {signal.Signals(info.si_status).name}")

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
        except BrokenPipeError:  # the child is gone; the pidfd reports it
            written = len(self._to_child)
        del self._to_child[:written]
        if not self._to_child:
            self._selector.unregister(self._stdin)

    # ---- the end ----
    def close(self) -> None:
        _kill(self._proc)
        self._selector.close()
        os.close(self._pidfd)
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()


# ---- the process ----
def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child's whole process group, then reap the child. The group id is the child's pid, still
    unreaped when it is signalled, so no other process can be hit."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def dropping_privileges() -> bool:
    return os.geteuid() == 0


@cache
def _runtime_sources() -> dict[str, bytes]:
    return {name: (RUNTIME_DIR / name).read_bytes() for name in RUNTIME_FILES}


@contextlib.contextmanager
def _run_directory() -> Iterator[tuple[Path, Path]]:
    """A fresh directory per run: `runtime/` (read-only copies of the child's code) and `work/` (its cwd and
    HOME). The copies make the runtime readable by uid 65534 wherever this package is installed."""
    base = Path(tempfile.mkdtemp(prefix="flowgate-run-"))
    try:
        runtime, work = base / "runtime", base / "work"
        runtime.mkdir(mode=0o755)
        work.mkdir(mode=0o700)
        for name, source in _runtime_sources().items():
            (runtime / name).write_bytes(source)
            (runtime / name).chmod(0o644)
        if dropping_privileges():
            base.chmod(0o711)
            runtime.chmod(0o755)
            os.chown(work, SANDBOX_UID, SANDBOX_GID)
        yield runtime, work
    finally:
        _remove_tree(base)


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
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(home)}


@cache
def interpreter() -> str:
    """The Python the child runs: ours, unless uid 65534 cannot run it (say, under root's home directory);
    then a system Python of the same minor version. Never root: with no usable one, refuse to run."""
    if not dropping_privileges():
        return sys.executable
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, shutil.which(f"python{version}", path="/usr/local/bin:/usr/bin:/bin")]
    for candidate in candidates:
        if candidate and _runs_as_sandbox_user(candidate, version):
            return candidate
    raise RuntimeError(
        f"no Python {version} that uid {SANDBOX_UID} can run: flow scripts cannot be sandboxed"
    )


def _runs_as_sandbox_user(python: str, version: str) -> bool:
    check = f"import sys; sys.exit('%d.%d' % sys.version_info[:2] != {version!r})"
    try:
        probe = subprocess.run(  # noqa: S603 - a fixed command line, no user input
            [python, "-I", "-S", "-B", "-c", check],
            env=child_env(Path("/")),
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=SANDBOX_UID,
            group=SANDBOX_GID,
            extra_groups=[],
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _spawn(runtime: Path, work: Path) -> subprocess.Popen[bytes]:
    """Start the child. Privileges are dropped by subprocess itself (in C, safe with the runner's threads,
    unlike a preexec_fn); the child applies its resource limits and NO_NEW_PRIVS to itself before it
    compiles the script (bootstrap.confine)."""
    drop = dropping_privileges()
    return subprocess.Popen(  # noqa: S603 - a fixed command line; the script travels over stdin
        [interpreter(), "-I", "-S", "-B", str(runtime / "bootstrap.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(work),
        cwd=work,
        start_new_session=True,
        close_fds=True,
        user=SANDBOX_UID if drop else None,
        group=SANDBOX_GID if drop else None,
        extra_groups=[] if drop else None,
    )
