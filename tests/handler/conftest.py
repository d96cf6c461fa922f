"""Handler tier: the real handler modules, called with API Gateway proxy events, against moto (`mock_aws`).

The table is created from template.yaml, so the tests use the deployed schema.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from moto import mock_aws

from devstack.lambdas import LambdaContext
from devstack.provision import provision_account
from flowgate import aws as aws_clients  # "aws" is the moto fixture
from flowgate import db, wiring
from flowgate.wiring import container
from tests.conftest import ROOT
from tests.support.apigw import http_request, through_gateway
from tests.support.moto import serialized_dynamodb

ADMIN = ("platform-admin", "platform-admin-password")


def _fresh_process() -> None:
    """What a new Lambda container starts with: no AWS clients, no services built yet."""
    aws_clients.reset()
    db._codec.cache_clear()
    wiring.install(None)


@pytest.fixture
def aws(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto account holding every resource of template.yaml, with the functions' environment set
    as Lambda would set it; yields the table name."""
    _fresh_process()
    with mock_aws():
        physical, environment = provision_account(ROOT / "template.yaml")
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        yield physical["Table"].ref
    _fresh_process()


@pytest.fixture
def atomic_writes() -> Iterator[None]:
    """moto's DynamoDB item operations one at a time, as DynamoDB isolates them, for tests that race
    real threads (`tests.support.moto.serialized_dynamodb`)."""
    with serialized_dynamodb():
        yield


def load_function(name: str, module: str = "app") -> ModuleType:
    """Import functions/<name>/<module>.py as Lambda would, under a module name of its own (a new
    "container" each time)."""
    module_name = f"handler_under_test_{name}_{module}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "functions" / name / f"{module}.py")
    assert spec is not None
    assert spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


def lambda_context(function_name: str = "identity") -> LambdaContext:
    """A Lambda context for one invocation, as the local stack gives its handlers."""
    return LambdaContext.for_function(function_name)


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error_code(self) -> str:
        return str(self.body["error"]["code"])


class Api:
    """Calls one function's handler the way API Gateway does (REST proxy integration): the template's
    route table gives the event its resource and path parameters, and a path the template does not route
    answers API Gateway's 403 `{"message": "Missing Authentication Token"}` (`tests.support.apigw`)."""

    def __init__(self, module: ModuleType, function: str) -> None:
        self.module = module
        self.function = function

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        basic: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        raw: str | None = None,
    ) -> Answer:
        h: dict[str, str] = {}
        if body is not None:
            h["Content-Type"] = "application/json"
        if token:
            h["Authorization"] = f"Bearer {token}"
        if basic:
            h["Authorization"] = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        h.update(headers or {})
        request = http_request(
            method,
            path,
            headers=h,
            query=query,
            body=raw if raw is not None else (json.dumps(body) if body is not None else None),
        )
        response = through_gateway(
            self.module.handler, Path(str(self.module.__file__)), request, lambda_context(self.function)
        )
        text = response.body.decode()
        return Answer(response.status, json.loads(text) if text else None, dict(response.headers))

    # Shorthands for the common calls.
    def login(self, username: str, password: str) -> str:
        answer = self.call("POST", "/api/latest/auth/login", {"username": username, "password": password})
        assert answer.status == 200, answer.body
        return str(answer.body["token"])


@pytest.fixture
def api(aws: str) -> Api:
    container().identity.ensure_platform_admin(*ADMIN)
    return Api(load_function("identity"), "identity")


@dataclass
class Tenant:
    contract_id: str
    admin_token: str  # an org_admin of the contract
    admin_id: str
    member_token: str  # a plain member
    member_id: str
    workspace_id: str  # created by the org admin


def make_tenant(api: Api, root_token: str, tag: str) -> Tenant:
    contract = api.call("POST", "/api/latest/contracts", {"name": f"contract-{tag}"}, token=root_token)
    assert contract.status == 201, contract.body
    cid = contract.body["id"]
    ids = {}
    for who, role in (("admin", "org_admin"), ("member", "member")):
        made = api.call(
            "POST",
            f"/api/latest/contracts/{cid}/members",
            {"username": f"{who}-{tag}", "password": f"{who}-{tag}-password", "role": role},
            token=root_token,
        )
        assert made.status == 201, made.body
        ids[who] = made.body["id"]
    admin_token = api.login(f"admin-{tag}", f"admin-{tag}-password")
    ws = api.call("POST", f"/api/latest/contracts/{cid}/workspaces", {"name": f"ws-{tag}"}, token=admin_token)
    assert ws.status == 201, ws.body
    return Tenant(
        cid,
        admin_token,
        ids["admin"],
        api.login(f"member-{tag}", f"member-{tag}-password"),
        ids["member"],
        ws.body["id"],
    )


@pytest.fixture
def root_token(api: Api) -> str:
    return api.login(*ADMIN)


@pytest.fixture
def tenants(api: Api, root_token: str) -> tuple[Tenant, Tenant]:
    return make_tenant(api, root_token, "a"), make_tenant(api, root_token, "b")
