"""Function containers: one module instance per concurrent invocation, reused when free."""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

import pytest

from devstack.lambdas import FunctionPool, FunctionRuntime
from devstack.model import FunctionSpec
from devstack.template import Template

pytestmark = pytest.mark.usefixtures("fixture_layer")

ECHO = {"resource": "/echo/{proxy+}", "queryStringParameters": None}


@pytest.fixture
def api(fixture_template: Template) -> FunctionSpec:
    return next(spec for spec in fixture_template.functions() if spec.logical_id == "ApiFunction")


def _echo(pool: FunctionPool) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(pool.invoke(ECHO)["body"])
    return body


def test_a_busy_instance_is_never_shared(api: FunctionSpec) -> None:
    pool = FunctionPool(api)
    # Given one instance busy with a request
    with pool.instance() as busy:
        # When another request arrives, it runs in a second, separately loaded module
        concurrent = _echo(pool)["module"]
    assert concurrent != busy.module_name
    assert busy.module_name.startswith("devstack_fn_ApiFunction_0_")
    assert concurrent.startswith("devstack_fn_ApiFunction_1_")
    # Then, both free, a request reuses a warm instance instead of loading a third
    assert _echo(pool)["module"] in {busy.module_name, concurrent}
    assert pool.instance_count == 2


def test_requests_wait_when_every_instance_is_busy(api: FunctionSpec) -> None:
    pool = FunctionPool(api, max_instances=1)
    finished = threading.Event()

    def request() -> None:
        pool.invoke(ECHO)
        finished.set()

    worker = threading.Thread(target=request)
    with pool.instance():
        worker.start()
        assert not finished.wait(0.2)  # blocked while the only instance is busy
    assert finished.wait(10)
    worker.join(10)
    assert pool.instance_count == 1


def test_the_context_looks_like_lambdas(api: FunctionSpec) -> None:
    body = _echo(FunctionPool(api))
    assert body["function_name"] == "flowgate-local-ApiFunction"
    assert 0 < body["remaining_ms"] <= 5000
    context = FunctionPool(api).context()
    assert context.invoked_function_arn == api.arn
    assert context.memory_limit_in_mb == 256
    assert context.log_group_name == "/aws/lambda/flowgate-local-ApiFunction"
    assert context.function_version == "$LATEST"
    assert len(context.aws_request_id) == 36


def test_a_function_that_cannot_load_fails_alone(api: FunctionSpec, caplog: pytest.LogCaptureFixture) -> None:
    broken = dataclasses.replace(api, logical_id="Broken", handler="missing.handler")
    runtime = FunctionRuntime({"ApiFunction": api, "Broken": broken})
    assert runtime.warm_up() == ["Broken"]
    assert "Broken: the handler cannot be loaded" in caplog.text
    with pytest.raises(ImportError, match=r"missing\.py"):
        runtime.invoke("Broken", {})
    assert runtime.pools["Broken"].instance_count == 0
    assert runtime.invoke("ApiFunction", ECHO)["statusCode"] == 200
