"""Run `python -m devstack` as a child process: how e2e tests start one or several stacks.

Each stack is a process of its own (with its moto and its functions' workers), so tests that link two
deployments start two. The child is in its own session, so stopping it signals its whole process group (the
stack and its moto) and nothing survives a test.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from devstack.errors import StartupError
from devstack.provision import DEFAULT_TEMPLATE

_LISTENING = re.compile(
    r"listening on (?P<url>https?://127\.0\.0\.1:(?P<port>\d+)) \(moto on :(?P<moto>\d+);"
)
# Read by `python -m devstack` as defaults of --tls-cert and --tls-key: a stack serves HTTPS only when asked.
_TLS_VARIABLES = ("TLS_CERT", "TLS_KEY")
_ADMIN = re.compile(r"^Platform admin: username=(?P<username>\S+)(?: password=(?P<password>\S+))?")


@dataclass
class StackProcess:
    """A started `python -m devstack` child."""

    process: subprocess.Popen[str]
    url: str = ""
    port: int = 0
    moto_port: int = 0
    admin_username: str | None = None
    admin_password: str | None = None  # only when the stack generated it
    output: deque[str] = field(default_factory=lambda: deque(maxlen=2000))  # recent stdout lines

    def __enter__(self) -> StackProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the process group (the stack and its moto), SIGKILL it after `timeout`; the exit code."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def start_stack(
    *,
    port: int = 0,
    template: str | Path | None = None,
    parameter_overrides: str = "",
    env: Mapping[str, str] | None = None,
    stderr: IO[str] | int | None = None,
    timeout: float = 120.0,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
) -> StackProcess:
    """Start a stack (port 0: a free one) and wait until it listens; raise StartupError if it exits.

    Use the result as a context manager, or call `stop()`.

    `env` is added to this process's environment (e.g. FLOWGATE_ADMIN_USERNAME/PASSWORD,
    FLOWGATE_LOCAL_SCHEDULE_SECONDS). The stack's stderr (its logs) goes to `stderr`, by default ours.

    With `tls_cert` and `tls_key` (PEM files) the stack serves HTTPS only, and `url` is https://. Without
    them it serves HTTP, whatever TLS_CERT and TLS_KEY this process has in its environment.
    """
    command = [sys.executable, "-m", "devstack", "--port", str(port)]
    if template is not None:
        command += ["--template", str(template)]
    if parameter_overrides:
        command += ["--parameter-overrides", parameter_overrides]
    if tls_cert is not None:
        command += ["--tls-cert", str(Path(tls_cert).resolve())]
    if tls_key is not None:
        command += ["--tls-key", str(Path(tls_key).resolve())]
    inherited = {name: value for name, value in os.environ.items() if name not in _TLS_VARIABLES}
    process = subprocess.Popen(
        command,
        cwd=DEFAULT_TEMPLATE.parent,  # the repository root, where `-m devstack` is found
        env={**inherited, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )
    stack = StackProcess(process)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(process, stack.output, lines), daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while not stack.url:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                raise StartupError(f"devstack exited with code {process.wait()} before listening")
            _read_banner(stack, line)
    except queue.Empty:
        stack.stop()
        raise StartupError(f"devstack did not listen within {timeout:g}s") from None
    except BaseException:
        stack.stop()
        raise
    return stack


def _read_banner(stack: StackProcess, line: str) -> None:
    if admin := _ADMIN.match(line):
        stack.admin_username, stack.admin_password = admin["username"], admin["password"]
    elif listening := _LISTENING.search(line):
        stack.url, stack.port, stack.moto_port = (
            listening["url"],
            int(listening["port"]),
            int(listening["moto"]),
        )


def _pump(process: subprocess.Popen[str], recent: deque[str], lines: queue.Queue[str | None]) -> None:
    """Read the child's stdout to the end, so that it never blocks on a full pipe."""
    assert process.stdout is not None
    for line in process.stdout:
        recent.append(line.rstrip("\n"))
        lines.put(line)
    lines.put(None)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pid, signum)
