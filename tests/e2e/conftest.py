"""End-to-end tier: start the local stack (`python -m devstack`, what `make run` runs) on free ports and
talk to it over HTTP with `requests`, the way users and remote workspaces do."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT

ADMIN = ("e2e-admin", "e2e-admin-password-1")
STARTUP_SECONDS = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    base: str
    process: subprocess.Popen[str]
    log: Path
    lines: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path

    def call(self, method: str, path: str, body: Any = None, token: str | None = None, **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.url(path), json=body, headers=headers, timeout=30, **kw)

    def login(self, username: str, password: str) -> str:
        answer = self.call("POST", "/api/latest/auth/login", {"username": username, "password": password})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["token"])

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(15)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def start_stack(tmp: Path, env: dict[str, str] | None = None) -> Stack:
    """Start `python -m devstack` on a free port and wait until /api/latest/health answers."""
    port = free_port()
    log = tmp / f"stack-{port}.log"
    full_env = {**os.environ, "PORT": str(port), **(env or {})}
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        full_env.pop(name, None)
    out = log.open("w")
    process = subprocess.Popen([sys.executable, "-m", "devstack"], cwd=ROOT, env=full_env, stdout=out,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    stack = Stack(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the stack exited with {process.returncode}:\n{log.read_text()}")
        try:
            if requests.get(stack.url("/api/latest/health"), timeout=2).status_code == 200:
                return stack
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    stack.stop()
    raise RuntimeError(f"the stack did not answer within {STARTUP_SECONDS}s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("stack"),
                          {"FLOWGATE_ADMIN_USERNAME": ADMIN[0], "FLOWGATE_ADMIN_PASSWORD": ADMIN[1]})
    yield running
    running.stop()


@pytest.fixture(scope="session")
def root_token(stack: Stack) -> str:
    return stack.login(*ADMIN)
