"""Schemathesis, from our own OpenAPI, against the local stack: no input gives a 5xx, every answer is one
the document lists, and every body matches its schema.

The stack is its own (not the e2e tier's), with a tenant seeded so that path parameters are mostly real
ids: without them every generated request would stop at a 404 before reaching the code under test. The
run is bounded (`MAX_EXAMPLES` per operation and mode) and deterministic (a fixed seed, no example
database), so a failure reproduces with the command it prints.

Two runs share the stack: the platform admin's routes with the admin's token, the tenant's routes with an
org admin's. Login failures the fuzzer makes are throttled per source like anyone's (a documented 429).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.launcher import StackProcess, start_stack
from flowgate.sync.keys import generate
from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("fuzz")]

OPENAPI = ROOT / "shared" / "flowgate" / "openapi.json"
SEED = 9421
MAX_EXAMPLES = 25
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance"
REAL_ID_PROBABILITY = 0.85  # the rest are generated, so unknown ids are fuzzed too
ADMIN = ("fuzz-admin", "fuzz-admin-password-1")
TENANT = ("fuzz-alice", "fuzz-alice-password-1")
ADMIN_ROUTES = r"^/api/(admin|config)/"
# The EFT-style logout would end the tenant's session, the run's token, for every later request.
NOT_FUZZED = r"^/admin/v2/logout$"
MINIMUM_CASES = {"admin": 200, "tenant": 1500}

FLOW = """\
import flow_api

def handler(system, this, inputs):
    this.set_output('echo', inputs)
    return this.success('done')
"""


@dataclass
class World:
    """The seeded ids, by the path parameter that names them."""

    admin_token: str
    tenant_token: str
    ids: dict[str, list[str]]  # path parameter -> ids
    bodies: dict[str, list[str]]  # body field (schemathesis's path syntax) -> values


class Client:
    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base
        self.token = token

    def __call__(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        answer = requests.request(method, self.base + path, json=body, headers=headers, timeout=60)
        assert answer.status_code == expect, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json() if answer.content else None


def login(base: str, username: str, password: str) -> str:
    return str(
        Client(base)("POST", "/api/latest/auth/login", {"username": username, "password": password})["token"]
    )


def seed(base: str) -> World:
    """A contract with an org admin, a workspace holding one of everything, and a held-free task."""
    admin = Client(base, login(base, *ADMIN))
    cid = admin("POST", "/api/latest/contracts", {"name": "fuzzed"}, 201)["id"]
    member = admin(
        "POST",
        f"/api/latest/contracts/{cid}/members",
        {"username": TENANT[0], "password": TENANT[1], "role": "org_admin", "privileges": []},
        201,
    )
    tenant = Client(base, login(base, *TENANT))
    spare_token = tenant("POST", "/api/latest/auth/tokens", {"name": "spare"}, 201)["id"]
    ws = tenant("POST", f"/api/latest/contracts/{cid}/workspaces", {"name": "fuzz", "kind": "limited"}, 201)[
        "id"
    ]
    w = f"/api/latest/workspaces/{ws}"
    flow_id = tenant("PUT", f"{w}/flows/echo", {"script": FLOW}, 201)["id"]
    tenant("PUT", f"{w}/secrets/key", {"value": {"headers": {"X-Key": "fuzz"}}})
    connector_id = tenant(
        "PUT",
        f"{w}/connectors/health",
        {"type": "REST", "value": f"url: {base}/api/latest/health\nmethod: get\n", "secrets": ["key"]},
        201,
    )["id"]
    command = {"data": {"type": "customCommand", "attributes": {"name": "backup", "executable": "/bin/b"}}}
    command_id = tenant("POST", f"/admin/v2/sites/{ws}/custom-commands", command, 201)["data"]["id"]
    eid = tenant("POST", f"{w}/executions", {"flow": "echo", "inputs": {"n": 1}}, 202)["id"]
    tenant("POST", f"{w}/flows/echo/activate", None)
    mid = tenant("POST", f"{w}/flows/echo/messages", {"n": 1}, 202)["id"]
    tenant("PUT", f"{w}/operations/deploy", {"flow": "echo"})
    vm = tenant(
        "POST", f"/api/cloud/workspaces/{ws}/virtualmachines", {"name": "web-1", "cpu": 1, "ram": 512}, 201
    )["id"]
    vapp = tenant(
        "POST", f"/api/cloud/workspaces/{ws}/virtualappliances", {"name": "app", "virtualmachines": [vm]}, 201
    )["id"]
    task = tenant("POST", f"/api/cloud/workspaces/{ws}/virtualmachines/{vm}/action/deploy", {}, 202)["taskId"]
    ours, theirs = generate(), generate()  # a workspace link, so the sync routes reach a stored config
    tenant(
        "PUT",
        f"{w}/sync_config/link",
        {"own_private_key": ours.private_pem, "remote_public_key": theirs.public_pem},
        201,
    )
    return World(
        admin_token=admin.token or "",
        tenant_token=tenant.token or "",
        ids={
            "cid": [cid],
            "uid": [member["id"]],
            "ws": [ws],
            "name": ["echo", "health", "key", "link"],
            "eid": [eid],
            "mid": [mid],
            "token_id": [spare_token],
            "vm": [vm],
            "vapp": [vapp],
            "uuid": [task],
            "site": [ws],
            "artifact_id": [command_id, flow_id, connector_id],
        },
        bodies={"flow": ["echo"], "virtualmachines[*]": [vm]},
    )


def config(world: World) -> str:
    """A schemathesis.toml that binds each id parameter (and body field naming one) to the seeded ids."""
    bindings = {f"path.{name}": values for name, values in world.ids.items()}
    bindings |= {f"body.{field}": values for field, values in world.bodies.items()}
    lines = []
    for n, values in enumerate(bindings.values()):
        lines += [f"[dictionaries.d{n}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    for n, key in enumerate(bindings):
        lines.append(f'"{key}" = {{ dictionary = "d{n}", probability = {REAL_ID_PROBABILITY} }}')
    return "\n".join(lines) + "\n"


def schemathesis(
    stack: StackProcess, config_file: Path, token: str, *selection: str
) -> subprocess.CompletedProcess[str]:
    """Run `st run` in the config's directory (where it keeps its cache), one request at a time."""
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(config_file),
        "run",
        str(OPENAPI),
        "--url",
        stack.url,
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-database",
        "none",
        "--workers",
        "1",  # one request at a time: the order, and so the run, is the same each time
        "--request-timeout",
        "30",
        "--max-redirects",
        "0",
        "--suppress-health-check",
        "all",
        "--no-color",
        *selection,
    ]
    return subprocess.run(
        command,
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "NO_COLOR": "1"},
        cwd=config_file.parent,
    )


@pytest.fixture(scope="module")
def fuzzed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    log = tmp_path_factory.mktemp("fuzz") / "stack.stderr.log"
    with (
        log.open("w") as stderr,
        start_stack(
            env={"FLOWGATE_ADMIN_USERNAME": ADMIN[0], "FLOWGATE_ADMIN_PASSWORD": ADMIN[1]}, stderr=stderr
        ) as stack,
    ):
        yield stack


@pytest.fixture(scope="module")
def world(fuzzed_stack: StackProcess) -> World:
    return seed(fuzzed_stack.url)


@pytest.mark.parametrize(
    ("who", "selection"),
    [
        ("admin", ("--include-path-regex", ADMIN_ROUTES)),
        ("tenant", ("--exclude-path-regex", f"{ADMIN_ROUTES}|{NOT_FUZZED}")),
    ],
)
def test_generated_requests_get_no_5xx_and_only_documented_answers(
    fuzzed_stack: StackProcess, world: World, tmp_path: Path, who: str, selection: tuple[str, ...]
) -> None:
    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text(config(world))
    token = world.admin_token if who == "admin" else world.tenant_token
    run = schemathesis(fuzzed_stack, config_file, token, *selection)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-20000:]
    counted = re.search(r"(\d+) generated, (\d+) passed", report)
    assert counted, report[-5000:]
    generated, passed = map(int, counted.groups())
    assert generated == passed >= MINIMUM_CASES[who], report[-5000:]  # the selection really ran
