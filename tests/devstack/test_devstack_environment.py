"""The handlers' process environment and the platform admin's credentials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devstack.admin import AdminCredentials, admin_banner, admin_from_environment
from devstack.environment import apply_environment, function_environment, local_aws_environment
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


def test_functions_share_one_environment() -> None:
    merged = function_environment(
        [
            _function("A", TABLE_NAME="t", POWERTOOLS_SERVICE_NAME="a", OUTBOUND_ALLOW_LIST=""),
            _function("B", TABLE_NAME="t", POWERTOOLS_SERVICE_NAME="b", ONLY_B="1"),
        ]
    )
    # POWERTOOLS_SERVICE_NAME differs by design and is left to the code; loopback is allowed locally.
    assert merged == {"TABLE_NAME": "t", "ONLY_B": "1", "OUTBOUND_ALLOW_LIST": "127.0.0.0/8,::1"}


def test_a_given_allow_list_is_kept() -> None:
    assert function_environment([_function("A", OUTBOUND_ALLOW_LIST="10.0.0.0/8")])[
        "OUTBOUND_ALLOW_LIST"
    ] == ("10.0.0.0/8")


def test_conflicting_values_fail_the_start() -> None:
    with pytest.raises(StartupError, match="TABLE_NAME is 't1' in A but 't2' in B"):
        function_environment([_function("A", TABLE_NAME="t1"), _function("B", TABLE_NAME="t2")])


def test_the_sdk_is_pointed_at_moto_only() -> None:
    environ = {
        "AWS_PROFILE": "prod",
        "AWS_ENDPOINT_URL_DYNAMODB": "https://real",
        "AWS_SESSION_TOKEN": "x",
        "HOME": "/h",
    }
    apply_environment(local_aws_environment("http://127.0.0.1:5000", "eu-west-1"), environ)
    assert environ == {
        "HOME": "/h",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_REGION": "eu-west-1",
        "FLOWGATE_LOCAL": "1",
    }


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
