"""`python -m devstack` as a user runs it: a child process, real HTTP, real moto, then a clean stop."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from devstack.errors import StartupError
from devstack.launcher import StackProcess, start_stack

pytestmark = pytest.mark.e2e


def _eventually(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def _status(stack: StackProcess, path: str) -> int:
    return requests.get(stack.url + path, timeout=10).status_code


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_two_stacks_side_by_side(fixture_template_path: Path) -> None:
    env = {"FLOWGATE_LOCAL_SCHEDULE_SECONDS": "0.2"}
    with (
        start_stack(template=fixture_template_path, env=env) as first,
        start_stack(
            template=fixture_template_path,
            env={"FLOWGATE_ADMIN_USERNAME": "me", "FLOWGATE_ADMIN_PASSWORD": "pw-1"},
        ) as second,
    ):
        # Each stack has its own ports and moto, and a ready admin
        assert len({first.port, second.port, first.moto_port, second.moto_port}) == 4
        assert first.admin_username == "fixture-admin"
        assert first.admin_password is not None
        assert len(first.admin_password) == 20
        assert (second.admin_username, second.admin_password) == ("me", None)
        assert not any("pw-1" in line for line in second.output)

        # The custom resource ran before the routes opened, with the secret it was given
        bootstrap = requests.get(f"{first.url}/items/bootstrap", timeout=10).json()
        assert (bootstrap["username"], bootstrap["count"]) == ("fixture-admin", "2")
        assert requests.get(f"{second.url}/items/bootstrap", timeout=10).json()["username"] == "me"

        # API Gateway's answers for a wrong route and a failing handler
        assert requests.get(f"{first.url}/nope", timeout=10).json() == {
            "message": "Missing Authentication Token"
        }
        assert _status(first, "/boom") == 502

        # A message goes through the queue to the worker, in the first stack only
        assert requests.post(f"{first.url}/messages", json={"id": "m1"}, timeout=10).status_code == 202
        assert _eventually(lambda: _status(first, "/items/m1") == 200)
        assert _status(second, "/items/m1") == 404

        # A state machine pauses on an SQS task token and resumes when the worker answers it
        execution = requests.post(f"{first.url}/approvals", timeout=10).json()["executionArn"]
        assert _eventually(
            lambda: (
                requests.get(f"{first.url}/approvals", params={"arn": execution}, timeout=10).json()["status"]
                == "SUCCEEDED"
            )
        )

        # The daily schedule fires at FLOWGATE_LOCAL_SCHEDULE_SECONDS
        assert _eventually(lambda: _status(first, "/items/schedule-fired") == 200)
        assert _status(second, "/items/schedule-fired") == 404

        echo = requests.get(f"{first.url}/echo/a/b?x=1", timeout=10).json()
        assert echo["env"]["GREETING"] == "hello from flowgate-local in us-east-1"
        assert echo["event"]["requestContext"]["path"] == "/dev/echo/a/b"

    # Stopping takes the stack and its moto down
    assert (first.process.returncode, second.process.returncode) == (0, 0)
    assert not _listening(first.port)
    assert not _listening(first.moto_port)


def test_a_failed_custom_resource_stops_the_start(fixture_template_path: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "stderr.log"
    with log_path.open("w") as log, pytest.raises(StartupError, match="exited with code 1"):
        start_stack(template=fixture_template_path, parameter_overrides="FailBootstrap=true", stderr=log)
    assert "custom resource Bootstrap failed: bootstrap refused by the fixture" in log_path.read_text()


def test_a_bad_override_is_reported(fixture_template_path: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "stderr.log"
    with log_path.open("w") as log, pytest.raises(StartupError, match="exited with code 1"):
        start_stack(template=fixture_template_path, parameter_overrides="Stage=qa", stderr=log)
    assert "parameter Stage='qa' is not one of the allowed values" in log_path.read_text()
