"""The stack's own moto server: a `python -m moto.server` subprocess on a free loopback port.

Each local stack gets its own moto so that several stacks (two linked deployments) keep separate
state. moto's Step Functions engine calls SQS back at `localhost:$MOTO_PORT`, so the port is chosen
before the process starts and passed in its environment.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from devstack.errors import StartupError

log = logging.getLogger(__name__)

_START_ATTEMPTS = 3  # a free port can be taken between choosing it and moto binding it
_READY_TIMEOUT_SECONDS = 60.0
_STOP_TIMEOUT_SECONDS = 10.0
_CONFIG = b'{"stepfunctions": {"execute_state_machine": true}}'


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MotoServer:
    """Start, configure and stop one moto server process."""

    def __init__(self, port: int | None = None) -> None:
        self._requested_port = port
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        """The URL boto3 clients use to reach this server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start moto, wait until it answers, and turn on state machine execution.

        Execution must be enabled before any state machine is created: moto decides per state
        machine whether it is executed.
        """
        attempts = 1 if self._requested_port else _START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            self.port = self._requested_port or free_port()
            self._spawn()
            if self._wait_until_ready():
                break
            output = self._output_tail()
            self.stop()
            if attempt == attempts:
                raise StartupError(f"moto server did not start on port {self.port}:\n{output}")
            log.warning("moto server failed to start on port %d, trying another port", self.port)
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/config", data=_CONFIG, method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass
        log.info("moto server ready on port %d (pid %d)", self.port, self.pid)

    @property
    def pid(self) -> int:
        """Process id of the server (0 when not running)."""
        return self._process.pid if self._process else 0

    def wait(self) -> int:
        """Block until the server exits; its exit code (0 when it was asked to stop by a signal)."""
        if self._process is None:
            raise RuntimeError("the moto server is not running")
        return self._process.wait()

    def stop(self) -> None:
        """Terminate the server (idempotent); its state is gone."""
        process, self._process = self._process, None
        if process is not None:
            atexit.unregister(self.stop)
            process.terminate()
            try:
                process.wait(_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_file is not None:
            self._log_file.close()
            Path(self._log_file.name).unlink(missing_ok=True)
            self._log_file = None

    def _spawn(self) -> None:
        # moto logs every request; keep that out of the terminal but at hand if moto fails to start.
        self._log_file = tempfile.NamedTemporaryFile(prefix="devstack-moto-", suffix=".log", delete=False)  # noqa: SIM115
        env = {**os.environ, "MOTO_PORT": str(self.port)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "devstack.moto_main", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            cwd=Path(__file__).resolve().parent.parent,  # so that `-m devstack.moto_main` resolves
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        atexit.register(self.stop)

    def _wait_until_ready(self) -> bool:
        deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/config", timeout=2):
                    return True
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        return False

    def _output_tail(self) -> str:
        if self._log_file is None:
            return ""
        self._log_file.flush()
        return Path(self._log_file.name).read_text(errors="replace")[-2000:]
