"""Entry point of the sandboxed flow-script process (the child side of `flowgate.sandbox`).

`forkserver.py` forks this process for each run, with a minimal environment (no credentials), a fresh
private working directory, its own session and, when the parent is root, uid/gid 65534, and calls `main()`.
This file is trusted code until it compiles the script: first it confines itself (resource limits, a cap
on new processes and threads, non-dumpable, PR_SET_NO_NEW_PRIVS, the seccomp filter of `seccomp.py`), then
it runs the script's `handler(system, this[, inputs])` and sends the result.

The channel is newline-delimited JSON over the original stdin/stdout, which this module keeps to itself: fd 0
becomes /dev/null, fd 1 the stderr pipe, and `sys.stdout`/`sys.stderr` turn `print()` into log lines, so
nothing a script prints can corrupt the channel. The script runs in this same process and could reach the
channel on purpose; that is why the parent validates every message and is the security boundary.

Standard library only: `-S` keeps site-packages (boto3 and the rest) out of reach.
"""

from __future__ import annotations

import builtins
import io
import json
import linecache
import os
import sys
import threading
import traceback
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

if TYPE_CHECKING:
    from flowgate.runtime import flow_api, seccomp
else:
    # `-I` leaves the script's own directory off sys.path; flow_api sits beside this file.
    _here = os.path.dirname(os.path.abspath(__file__))
    if _here not in sys.path:
        sys.path.insert(0, _here)
    import flow_api
    import seccomp

SCRIPT_FILENAME = "<flow script>"
# Exit codes the parent interprets; keep in step with flowgate/sandbox.py.
EXIT_OUT_OF_MEMORY = 3
EXIT_CHANNEL_LOST = 4
# How many of the script's innermost frames a traceback shows in the log.
TRACEBACK_FRAMES = 10
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38


def _channel_lost() -> NoReturn:
    """The parent closed the channel (it ended the run): nothing is left to report to."""
    os._exit(EXIT_CHANNEL_LOST)


class Channel:
    """This process's end of the JSON-lines channel: requests with answers, and one-way notes."""

    def __init__(self, reader: BinaryIO, writer: BinaryIO, *, log_bytes: int, max_message_bytes: int) -> None:
        self._reader = reader
        self._writer = writer
        self._max_message_bytes = max_message_bytes
        # Log bytes this side may still send. It stops one byte past the parent's cap, so the parent sees the
        # overflow (and marks the log truncated) without megabytes crossing the pipe.
        self._log_left = log_bytes
        self._max_partial = log_bytes
        self._partial = ""
        # Scripts may use threads: writes must not interleave, and one request is in flight at a time, since
        # an answer is simply the next message that arrives.
        self._write_lock = threading.Lock()
        self._call_lock = threading.Lock()
        self._last_id = 0

    def receive(self) -> Any:
        """The next message from the parent."""
        line = self._reader.readline()
        if not line:
            _channel_lost()
        return json.loads(line)

    def send(self, message: dict[str, Any]) -> None:
        """Send one message; a message over the size limit raises FlowApiError instead of breaking the run."""
        data = json.dumps(message, allow_nan=False).encode() + b"\n"
        if len(data) > self._max_message_bytes:
            raise flow_api.FlowApiError(f"message exceeds the limit of {self._max_message_bytes} bytes")
        with self._write_lock:
            try:
                self._writer.write(data)
                self._writer.flush()
            except BrokenPipeError:
                _channel_lost()

    def call(self, op: str, args: dict[str, Any]) -> Any:
        """Send a request and wait for its answer (flow_api.Transport)."""
        with self._call_lock:
            self._last_id += 1
            request_id = self._last_id
            self.send({"id": request_id, "op": op, "args": args})
            answer = self.receive()
        if not isinstance(answer, dict) or answer.get("id") != request_id:
            _channel_lost()
        if answer.get("ok"):
            return answer.get("value")
        raise flow_api.FlowApiError(str(answer.get("error")), answer.get("code"))

    def log(self, text: str) -> None:
        """Send one log line (flow_api.Transport), after any unfinished printed line, to keep the order."""
        self.flush_text()
        self._send_log(text)

    def write_text(self, text: str) -> None:
        """Printed text: each complete line is one log line; a line without end is held until it ends."""
        self._partial += text
        if "\n" in self._partial:
            *lines, self._partial = self._partial.split("\n")
            for line in lines:
                self._send_log(line)
        if len(self._partial) > self._max_partial:  # a line without end must not grow without bound
            self.flush_text()

    def flush_text(self) -> None:
        """Send an unfinished printed line as it is."""
        if self._partial:
            partial, self._partial = self._partial, ""
            self._send_log(partial)

    def _send_log(self, text: str) -> None:
        """Lines past the log cap are dropped here already."""
        if self._log_left < 0:
            return
        data = text.encode("utf-8", "replace")
        # JSON escaping grows a string at most 6-fold; an eighth of the message limit always fits.
        keep = min(len(data), self._log_left + 1, self._max_message_bytes // 8)
        self._log_left -= keep
        self.send({"op": "log", "text": data[:keep].decode("utf-8", "ignore")})


class LogStream(io.TextIOBase):
    """`sys.stdout` and `sys.stderr` of the script: what it prints goes to the log, line by line."""

    encoding = "utf-8"  # what code that inspects sys.stdout expects to find

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self._channel = channel

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._channel.write_text(text)
        return len(text)

    def flush(self) -> None:
        self._channel.flush_text()


def _lower_limit(which: int, value: int, *, hard_slack: int = 0) -> None:
    """Lower a resource limit to `value` (hard limit `value + hard_slack`), never above the inherited hard."""
    import resource

    soft, hard = value, value + hard_slack
    inherited = resource.getrlimit(which)[1]
    if inherited != resource.RLIM_INFINITY:
        soft, hard = min(soft, inherited), min(hard, inherited)
    resource.setrlimit(which, (soft, hard))


def count_tasks(uid: int) -> int:
    """The processes and threads of real uid `uid` now: what RLIMIT_NPROC counts (per uid, not per process).
    A process that ends while it is read is simply not counted."""
    tasks = 0
    owner = b"\nUid:\t%d\t" % uid
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/status", os.O_RDONLY)
        except OSError:
            continue
        try:
            status = os.read(fd, 4096)
        except OSError:
            continue
        finally:
            os.close(fd)
        if owner in status:
            start = status.find(b"\nThreads:")
            tasks += int(status[start + 9 : status.index(b"\n", start + 1)]) if start >= 0 else 1
    return tasks


def confine(limits: dict[str, int]) -> None:
    """Apply the limits to this process before any script code runs; any failure aborts the run.

    RLIMIT_CPU's hard limit is one second above the soft one: the soft limit's SIGXCPU ends the process
    with a signal the parent reports as the CPU limit, the hard one's SIGKILL catches a script that
    ignores SIGXCPU. RLIMIT_NPROC counts every process and thread of the uid (on Lambda: the runner's
    threads, the fork server and every script), so it is set to what exists now plus the script's
    allowance (`tasks`): the script can add that many and no more, and never starve the runner. Non-dumpable
    keeps this process's memory and /proc files from other processes of the uid. NO_NEW_PRIVS keeps setuid
    programs from giving a script back any privilege (and lets an unprivileged process install the filter).
    """
    import ctypes
    import resource

    libc = ctypes.CDLL(None, use_errno=True)
    _lower_limit(resource.RLIMIT_CORE, 0)
    _lower_limit(resource.RLIMIT_FSIZE, limits["file_bytes"])
    _lower_limit(resource.RLIMIT_CPU, limits["cpu_seconds"], hard_slack=1)
    _lower_limit(resource.RLIMIT_AS, limits["memory_bytes"])
    _lower_limit(resource.RLIMIT_NPROC, count_tasks(os.getuid()) + limits["tasks"])
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if os.getpgid(0) != os.getpid():
        raise OSError(0, "the flow script's process must lead its own process group")
    seccomp.install(libc, os.getpid())


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # a script's exception class may fail even at this
        text = "<the exception's message cannot be shown>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _script_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    return [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == SCRIPT_FILENAME]


def _error(message: str, line: int | None, this: flow_api.Execution | None = None) -> dict[str, Any]:
    outputs = this.get("output_value") if this is not None else {}
    return {"op": "result", "status": "error", "message": message, "outputs": outputs, "error_line": line}


def _takes_inputs(handler: Any) -> bool:
    """Whether the handler is `(system, this, inputs)` rather than `(system, this)`."""
    import inspect

    try:
        inspect.signature(handler).bind(None, None, None)
    except TypeError:
        return False
    except ValueError:  # a callable without a signature (a builtin): call it the documented way
        return True
    return True


def run(start: dict[str, Any], channel: Channel) -> dict[str, Any]:
    """Compile and run the script of the start message; the result message to send."""
    script: str = start["script"]
    inputs: dict[str, Any] = start["inputs"]
    try:
        code = compile(script, SCRIPT_FILENAME, "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = f" (line {exc.lineno})" if exc.lineno else ""
        return _error(f"SyntaxError: {exc.msg}{where}", exc.lineno)
    except ValueError as exc:  # NUL bytes, in Python releases that do not call that a SyntaxError
        return _error(f"SyntaxError: {exc}", None)
    except (RecursionError, MemoryError):  # how the compiler reports nesting deeper than it can follow
        return _error("SyntaxError: the script is nested too deeply", None)
    linecache.cache[SCRIPT_FILENAME] = (len(script), None, script.splitlines(keepends=True), SCRIPT_FILENAME)
    this = flow_api.Execution(channel, start.get("execution_id"), inputs)
    namespace: dict[str, Any] = {"__name__": "__flow_script__", "__builtins__": builtins}
    try:
        exec(code, namespace)  # noqa: S102 - running the user's script is what this process is for
        handler = namespace.get("handler")
        if not callable(handler):
            return _error("the flow script defines no handler(system, this) function", None, this)
        system = flow_api.System(channel)
        returned = handler(system, this, inputs) if _takes_inputs(handler) else handler(system, this)
        message, outputs = this._conclude(returned)
    except MemoryError:
        raise
    except flow_api.ExecutionError as exc:
        frames = _script_frames(exc)
        return _error(exc.message, frames[-1].lineno if frames else None, this)
    except BaseException as exc:  # whatever the script raises ends it with status error
        frames = _script_frames(exc)
        channel.log("Traceback (most recent call last, flow script frames only):")
        for frame in frames[-TRACEBACK_FRAMES:]:
            channel.log(f"  line {frame.lineno}, in {frame.name}")
            if frame.line:
                channel.log(f"    {frame.line}")
        channel.log(_describe(exc))
        return _error(_describe(exc), frames[-1].lineno if frames else None, this)
    return {"op": "result", "status": "success", "message": message, "outputs": outputs, "error_line": None}


def main() -> int:
    """Take the channel, confine this process, run the script, send the result."""
    reader = os.fdopen(os.dup(0), "rb")
    writer = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)  # C-level writes to stdout land in the stderr pipe, never in the channel
    os.close(null)

    first = reader.readline()
    if not first:
        _channel_lost()
    start = json.loads(first)
    channel = Channel(
        reader, writer, log_bytes=start["log_bytes"], max_message_bytes=start["max_message_bytes"]
    )
    try:
        confine(start["limits"])
    except (OSError, ValueError) as exc:
        channel.send(_error(f"the sandbox could not be set up: {exc}", None))
        return 1
    sys.stdout = sys.stderr = LogStream(channel)
    result = run(start, channel)
    channel.flush_text()
    try:
        channel.send(result)
    except flow_api.FlowApiError as exc:  # the outputs are too large to send
        channel.send(_error(f"the outputs cannot be returned: {exc}", None))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MemoryError:
        os._exit(EXIT_OUT_OF_MEMORY)
