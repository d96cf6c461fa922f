"""The handlers' process environment and the platform admin's credentials."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from devstack.admin import AdminCredentials, admin_banner, admin_from_environment
from devstack.environment import function_environment, local_aws_environment, merged_environment
from devstack.errors import StartupError
from devstack.model import FunctionSpec


def _function(logical_id: str, **environment: str) -> FunctionSpec:
    return FunctionSpec(
        logical_id=logical_id,
        name=logical_id,
        arn=f"arn:{logical_id}",
        code_uri=Path(),
        handler="app.handler",
        timeout_seconds=3,
        memory_mb=128,
        environment=environment,
        layer_paths=(),
    )


def test_each_function_gets_its_own_variables_the_runtimes_and_the_local_sdk_settings() -> None:
    aws = local_aws_environment("http://127.0.0.1:5000", "eu-west-1")
    inherited = {"PATH": "/bin", "HOME": "/h", "AWS_PROFILE": "prod", "SECRET": "x", "AWS_SESSION_TOKEN": "t"}
    a = _function("A", TABLE_NAME="t", POWERTOOLS_SERVICE_NAME="a", OUTBOUND_ALLOW_LIST="")
    b = _function("B", TABLE_NAME="t2", POWERTOOLS_SERVICE_NAME="b", ONLY_B="1")
    env_a = function_environment(a, aws, inherited)
    env_b = function_environment(b, aws, inherited)
    # Each has its own values (they may differ now that each function has processes of its own)
    assert (env_a["TABLE_NAME"], env_b["TABLE_NAME"]) == ("t", "t2")
    assert (env_a["POWERTOOLS_SERVICE_NAME"], env_b["POWERTOOLS_SERVICE_NAME"]) == ("a", "b")
    assert "ONLY_B" not in env_a
    # A declared but empty allow list is loopback locally; a function that declares none gets none
    assert env_a["OUTBOUND_ALLOW_LIST"] == "127.0.0.0/8,::1"
    assert "OUTBOUND_ALLOW_LIST" not in env_b
    # The SDK goes to moto only, with dummy credentials and no config files; nothing else is inherited
    assert {name: env_a[name] for name in aws} == aws
    assert env_a["AWS_CONFIG_FILE"] == env_a["AWS_SHARED_CREDENTIALS_FILE"] == os.devnull
    assert (env_a["PATH"], env_a["HOME"]) == ("/bin", "/h")
    assert not {"AWS_PROFILE", "SECRET", "AWS_SESSION_TOKEN"} & env_a.keys()
    # And the runtime's variables name the function
    assert env_a["AWS_LAMBDA_FUNCTION_NAME"] == "A"
    assert env_a["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert env_a["_HANDLER"] == "app.handler"


def test_a_given_allow_list_is_kept() -> None:
    spec = _function("A", OUTBOUND_ALLOW_LIST="10.0.0.0/8")
    assert function_environment(spec, {}, {})["OUTBOUND_ALLOW_LIST"] == "10.0.0.0/8"
    assert merged_environment([spec])["OUTBOUND_ALLOW_LIST"] == "10.0.0.0/8"


def test_in_process_tests_get_one_merged_environment() -> None:
    merged = merged_environment(
        [
            _function("A", TABLE_NAME="t", POWERTOOLS_SERVICE_NAME="a", OUTBOUND_ALLOW_LIST=""),
            _function("B", TABLE_NAME="t", POWERTOOLS_SERVICE_NAME="b", ONLY_B="1"),
        ]
    )
    # POWERTOOLS_SERVICE_NAME differs by design and is left to the code; loopback is allowed locally.
    assert merged == {"TABLE_NAME": "t", "ONLY_B": "1", "OUTBOUND_ALLOW_LIST": "127.0.0.0/8,::1"}
    with pytest.raises(StartupError, match="TABLE_NAME is 't1' in A but 't2' in B"):
        merged_environment([_function("A", TABLE_NAME="t1"), _function("B", TABLE_NAME="t2")])


def test_admin_credentials_from_the_environment() -> None:
    assert admin_from_environment({}) is None
    admin = admin_from_environment({"FLOWGATE_ADMIN_USERNAME": "root", "FLOWGATE_ADMIN_PASSWORD": "pw"})
    assert admin == AdminCredentials("root", "pw")
    assert json.loads(admin.secret_string()) == {"username": "root", "password": "pw"}
    with pytest.raises(StartupError, match="both"):
        admin_from_environment({"FLOWGATE_ADMIN_USERNAME": "root"})


def test_the_banner_shows_a_generated_password_only() -> None:
    secret = json.dumps({"username": "admin", "password": "s3cret"})
    assert (
        admin_banner(secret, given=False)
        == "Platform admin: username=admin password=s3cret (generated; shown once)"
    )
    given = admin_banner(secret, given=True)
    assert "s3cret" not in given
    assert given.startswith("Platform admin: username=admin ")
