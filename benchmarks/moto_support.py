"""What the benchmarks that run under `moto.mock_aws` in a child interpreter share (workflow_decisions,
pending_tasks, enforcer_calls): the child's start and its result, a moto account with the template's
resources, a world built through the domain services, items written straight into moto's in-process
tables, and the AWS calls counted and timed.

What the tests share with the benchmarks lives in `tests/support/` (plain modules, no pytest): moto's
DynamoDB made to behave like DynamoDB (`tests.support.moto`), events as AWS delivers them
(`tests.support.events`), API Gateway in front of a handler (`tests.support.apigw`). Benchmarks import
from there; tests never import benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.run import Options

ROOT_DIR = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT_SECONDS = 120.0
ENDPOINT = "http://127.0.0.1:8999/workflow"
PASSWORD_SUFFIX = "-bench-password-1"  # noqa: S105 - users of a throwaway moto account
FLOW_SCRIPT = "def handler(system, this, inputs):\n    return this.success('ok')\n"


# ---- the child interpreter --------------------------------------------------------------------------


def run_child(
    options: Options, module: str, *args: str, timeout: float = CHILD_TIMEOUT_SECONDS
) -> dict[str, Any]:
    """Run `benchmarks/<module>.py --child <result file> [args]` in a fresh interpreter; its result."""
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "result.json"
        done = subprocess.run(
            [
                options.python,
                str(options.root / "benchmarks" / f"{module}.py"),
                "--child",
                str(result),
                *args,
            ],
            cwd=options.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0 or not result.exists():
            tail = (done.stderr or done.stdout)[-3000:]
            raise RuntimeError(f"the {module} child failed (exit {done.returncode}):\n{tail}")
        loaded: dict[str, Any] = json.loads(result.read_text())
        return loaded


def run_rounds_child(options: Options, module: str, timeout: float) -> dict[str, Any]:
    """`run_child` with the options' `--rounds` and `--warmup`."""
    return run_child(
        options, module, "--rounds", str(options.rounds), "--warmup", str(options.warmup), timeout=timeout
    )


def script_main(module: str, child: Callable[[Path, int, int], None]) -> int:
    """`benchmarks/<module>.py` run as a script: `--child <result file> [--rounds N] [--warmup N]` runs
    `child(result file, rounds, warmup)`; anything else runs the benchmark through benchmarks/run.py."""
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        arguments = dict(zip(sys.argv[3::2], sys.argv[4::2], strict=False))
        child(Path(sys.argv[2]), int(arguments.get("--rounds", "15")), int(arguments.get("--warmup", "2")))
        return 0
    from benchmarks.run import main

    return main(["--only", module, *sys.argv[1:]])


# ---- a moto account with the template's resources ---------------------------------------------------


def isolated_aws_environment() -> None:
    """Fake credentials and region in this (child) process, so nothing can reach a real AWS account."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"  # noqa: S105 - moto's dummy credentials
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    shared = str(ROOT_DIR / "shared")
    if shared not in sys.path:
        sys.path.insert(0, shared)


def provision_template() -> dict[str, str]:
    """Inside `mock_aws`: every resource of template.yaml, the functions' environment set as Lambda sets
    it (loopback allowed outbound); what `Ref` gives for each resource, by logical id."""
    from devstack.provision import provision_account

    physical, environment = provision_account(ROOT_DIR / "template.yaml")
    os.environ.update(environment)
    return {logical: str(resource.ref) for logical, resource in physical.items()}


# ---- a world built through the domain services ------------------------------------------------------


@dataclass
class Tenant:
    cid: str
    ws: str
    admin: Any  # Principal: an org admin, who requests the operations
    approver: Any  # Principal: a member holding WORKFLOW_OVERRIDE
    approver_credentials: tuple[str, str]


def root_principal() -> Any:
    from flowgate.identity.models import Principal

    return Principal(user_id="root", username="root", contract_id=None, role=None, platform_admin=True)


def make_member(by: Any, cid: str, username: str, password: str, role: Any, *privileges: Any) -> Any:
    """A member of contract `cid` created by principal `by`, as a Principal."""
    from flowgate.identity.auth import principal_of
    from flowgate.identity.models import CreateMemberRequest
    from flowgate.wiring import container

    made = container().identity.create_member(
        by,
        cid,
        CreateMemberRequest(username=username, password=password, role=role, privileges=list(privileges)),
    )
    user = container().identity_store.get_user(made.id)
    assert user is not None
    return principal_of(user)


def enable_platform_workflow() -> None:
    from flowgate.wiring import container

    root = root_principal()
    container().workflow_settings.set_property(root, "client.main.workflowEndPoint", ENDPOINT)
    container().workflow_settings.set_property(root, "client.main.workflowEnabled", "1")


def make_tenant(tag: str, *, workflow_on: bool = True) -> Tenant:
    """An enterprise (workflow on), its org admin and approver, a workspace whose deploy runs a flow."""
    from flowgate.flows.models import PutFlowRequest
    from flowgate.identity.models import CreateContractRequest, CreateWorkspaceRequest, Privilege, Role
    from flowgate.wiring import container

    ids = container().identity

    def member(cid: str, by: Any, name: str, role: Role, *privileges: Privilege) -> Any:
        return make_member(by, cid, name, name + PASSWORD_SUFFIX, role, *privileges)

    cid = ids.create_contract(root_principal(), CreateContractRequest(name=f"enterprise-{tag}")).id
    admin = member(cid, root_principal(), f"admin-{tag}", Role.ORG_ADMIN)
    approver = member(cid, admin, f"approver-{tag}", Role.MEMBER, Privilege.WORKFLOW_OVERRIDE)
    ws = ids.create_workspace(admin, cid, CreateWorkspaceRequest(name=f"ws-{tag}")).id
    container().flows.put_flow(admin, ws, "deploy-flow", PutFlowRequest(script=FLOW_SCRIPT))
    container().operation_bindings.bind_operation(admin, ws, "deploy", "deploy-flow")
    container().workflow_settings.put_enterprise(admin, cid, {"workflow": workflow_on})
    return Tenant(cid, ws, admin, approver, (f"approver-{tag}", f"approver-{tag}" + PASSWORD_SUFFIX))


# ---- moto's in-process tables -----------------------------------------------------------------------


def moto_table(name: str) -> Any:
    """The moto backend's table `name` (default account, us-east-1): items written here skip the API,
    which takes minutes for tens of thousands of them."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    return dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_table(name)


def put_plain_item(table: Any, item: Mapping[str, Any]) -> None:
    """An item as the application writes it (`flowgate.db` types), straight into moto `table`."""
    from flowgate.db import _to_wire

    table.put_item(_to_wire(item))


def partition_size(table: str, pk: str) -> int:
    """How many items moto's table `table` holds under partition key `pk`."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    return len(moto_table(table).items.get(DynamoType({"S": pk}), {}))


@contextlib.contextmanager
def moto_query_timer(inside: list[float]) -> Iterator[None]:
    """Adds the seconds spent in moto's Table.query to inside[0]."""
    from unittest import mock

    from moto.dynamodb.models.table import Table as MotoTable

    original = MotoTable.query

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            inside[0] += time.perf_counter() - start

    with mock.patch.object(MotoTable, "query", timed):
        yield


# ---- counting ---------------------------------------------------------------------------------------


def _item_kind(key: Any) -> str:
    """What kind of item a DynamoDB key names: partition and sort key up to their first `#`, ids left
    out (`TASK/META`, `WS/FLOW`)."""
    if not isinstance(key, dict):
        return "?"
    parts = [str(key.get(k, {}).get("S", "?")).split("#", 1)[0] for k in ("PK", "SK") if k in key]
    return "/".join(parts) or "?"


SHORT_SERVICE_NAMES = {"dynamodb": "ddb", "stepfunctions": "sfn"}


def describe_call(service: str, operation: str, params: dict[str, Any]) -> str:
    """`service:Operation` (short service names), and for DynamoDB what it touched:
    `ddb:GetItem(TASK/META)`."""
    name = f"{SHORT_SERVICE_NAMES.get(service, service)}:{operation}"
    if service != "dynamodb":
        return name
    if operation in ("GetItem", "UpdateItem", "DeleteItem"):
        return f"{name}({_item_kind(params.get('Key'))})"
    if operation == "PutItem":
        return f"{name}({_item_kind(params.get('Item'))})"
    if operation == "TransactWriteItems":
        parts = []
        for entry in params.get("TransactItems", []):
            for kind, op in entry.items():
                parts.append(f"{kind} {_item_kind(op.get('Key') or op.get('Item'))}")
        return f"{name}({', '.join(parts)})"
    if operation == "Query":
        return f"{name}({params.get('IndexName', 'table')})"
    return name


@dataclass
class CallLog:
    """AWS API calls made on one thread, each as `service:Operation` under the phase it happened in, with
    what each touched (`describe_call`)."""

    thread: int = field(default_factory=threading.get_ident)
    phase: str = "before-auth"
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    # Count and ScannedCount of each DynamoDB Query answered: the items the key condition selected.
    query_counts: list[tuple[int, int]] = field(default_factory=list)

    def by_phase(self, phase: str) -> list[str]:
        return [op for p, op, _ in self.calls if p == phase]

    def details(self, phase: str) -> list[str]:
        return [detail for p, _, detail in self.calls if p == phase]


@contextlib.contextmanager
def counting_calls(log: CallLog) -> Iterator[None]:
    """Record every botocore API call the thread of `log` makes (one per operation, retries inside it)."""
    from unittest import mock

    from botocore.client import BaseClient

    original = BaseClient._make_api_call  # type: ignore[attr-defined]  # private: every client calls it

    def recording(client: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        if threading.get_ident() == log.thread:
            service = client.meta.service_model.service_name
            detail = describe_call(service, operation_name, api_params)
            log.calls.append((log.phase, f"{service}:{operation_name}", detail))
        answer = original(client, operation_name, api_params)
        if threading.get_ident() == log.thread and operation_name == "Query":
            log.query_counts.append((int(answer.get("Count", -1)), int(answer.get("ScannedCount", -1))))
        return answer

    with mock.patch.object(BaseClient, "_make_api_call", recording):
        yield
