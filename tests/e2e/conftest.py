"""End-to-end tier: start the local stack (`python -m devstack`, what `make run` runs) on free ports and
talk to it over HTTP with `requests`, the way users and remote workspaces do."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.launcher import StackProcess, start_stack

ADMIN = ("e2e-admin", "e2e-admin-password-1")
# Short limits so that the limit tests end quickly: flows stop after MAX_RUNTIME seconds in limited
# workspaces, with a warning halfway, and every schedule fires each second.
MAX_RUNTIME = 8
OVERRIDES = (
    f"FlowTimeLimitSeconds=5 FlowMemoryLimitMb=256 LimitedWorkspaceMaxRuntime={MAX_RUNTIME} "
    f"LimitedWorkspaceStopWarning={MAX_RUNTIME // 2}"
)


@dataclass
class Stack:
    """A running local stack and a small HTTP client for it."""

    process: StackProcess
    log: Path  # the stack's stderr: devstack's own log lines
    verify: str | bool = True  # a CA bundle, for a stack serving HTTPS with a test CA's certificate

    @property
    def base(self) -> str:
        return self.process.url

    def url(self, path: str) -> str:
        return self.base + path

    def everything_logged(self) -> str:
        """stdout (the functions' JSON log lines) and stderr (devstack's log)."""
        return "\n".join(self.process.output) + "\n" + self.log.read_text()

    def call(
        self, method: str, path: str, body: Any = None, token: str | None = None, **kw: Any
    ) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        kw.setdefault("verify", self.verify)
        return requests.request(method, self.url(path), json=body, headers=headers, timeout=60, **kw)

    def login(self, username: str, password: str) -> str:
        answer = self.call("POST", "/api/latest/auth/login", {"username": username, "password": password})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["token"])

    def stop(self) -> None:
        self.process.stop()


def launch(tmp: Path, env: dict[str, str], *, extra_overrides: str = "", **options: Any) -> Stack:
    log = tmp / "stack.stderr.log"
    process = start_stack(
        env={"FLOWGATE_LOCAL_SCHEDULE_SECONDS": "1", **env},
        parameter_overrides=f"{OVERRIDES} {extra_overrides}".strip(),
        **options,
        stderr=log.open("w"),
    )
    return Stack(process, log)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = launch(
        tmp_path_factory.mktemp("stack"),
        {"FLOWGATE_ADMIN_USERNAME": ADMIN[0], "FLOWGATE_ADMIN_PASSWORD": ADMIN[1]},
    )
    yield running
    running.stop()


@pytest.fixture(scope="session")
def root_token(stack: Stack) -> str:
    return stack.login(*ADMIN)
