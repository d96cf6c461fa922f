"""Function workers: each warm container is a process of its own, serving one event at a time."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from devstack.environment import function_environment, local_aws_environment
from devstack.lambdas import FunctionError, FunctionPool, FunctionRuntime
from devstack.model import FunctionSpec
from devstack.template import Template

# Nothing listens there: the echo route makes no AWS call, and no test may reach anything else.
AWS = local_aws_environment("http://127.0.0.1:9", "us-east-1")


def _echo_event(body: str | None = None, **query: str) -> dict[str, Any]:
    return {"resource": "/echo/{proxy+}", "queryStringParameters": query or None, "body": body}


@pytest.fixture
def api(fixture_template: Template) -> FunctionSpec:
    return next(spec for spec in fixture_template.functions() if spec.logical_id == "ApiFunction")


@pytest.fixture
def pools() -> Iterator[list[FunctionPool]]:
    """Pools made by a test; their workers are stopped after it."""
    made: list[FunctionPool] = []
    yield made
    for pool in made:
        pool.stop()


@pytest.fixture
def pool(api: FunctionSpec, pools: list[FunctionPool]) -> FunctionPool:
    made = FunctionPool(api, function_environment(api, AWS))
    pools.append(made)
    return made


def _echo(pool: FunctionPool, body: str | None = None, **query: str) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(pool.invoke(_echo_event(body, **query))["body"])
    return answer


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_concurrent_invocations_run_in_separate_processes_and_never_see_each_others_event(
    pool: FunctionPool,
) -> None:
    # Given four invocations of one function at the same time, each with a body of its own, whose
    # handler keeps the current event on a class (as powertools does) and reads it back after a pause
    bodies = [f"request-{index}-{uuid.uuid4()}" for index in range(4)]
    start = threading.Barrier(len(bodies))

    def call(body: str) -> dict[str, Any]:
        start.wait(10)
        return _echo(pool, body, sleep="0.5")

    for _ in range(2):  # cold workers, then the same warm ones
        with ThreadPoolExecutor(len(bodies)) as threads:
            answers = list(threads.map(call, bodies))
        # Then each ran in a process of its own, none of them this one
        pids = {answer["pid"] for answer in answers}
        assert len(pids) == len(bodies)
        assert os.getpid() not in pids
        # And each saw its own event only, before and after the others started
        for body, answer in zip(bodies, answers, strict=True):
            assert answer["event"]["body"] == body
            assert answer["current_body"] == body
    assert pool.pids == pids
    assert pool.instance_count == len(bodies)


def test_a_warm_worker_serves_the_next_event(pool: FunctionPool) -> None:
    first = _echo(pool, "one")
    second = _echo(pool, "two")
    assert first["pid"] == second["pid"]
    assert (first["current_body"], second["current_body"]) == ("one", "two")
    assert pool.instance_count == 1


def test_invocations_wait_when_every_worker_is_busy(api: FunctionSpec, pools: list[FunctionPool]) -> None:
    pool = FunctionPool(api, function_environment(api, AWS), max_instances=1)
    pools.append(pool)
    _echo(pool)  # warm
    finished = threading.Event()
    answers: list[dict[str, Any]] = []

    def slow() -> None:
        answers.append(_echo(pool, "slow", sleep="1"))
        finished.set()

    worker = threading.Thread(target=slow)
    worker.start()
    time.sleep(0.2)
    # When a second event arrives while the only worker is busy, it waits for that worker
    quick = _echo(pool, "quick")
    assert finished.is_set()
    worker.join(10)
    assert quick["pid"] == answers[0]["pid"]
    assert quick["current_body"] == "quick"
    assert pool.instance_count == 1


def test_the_context_looks_like_lambdas(pool: FunctionPool, api: FunctionSpec) -> None:
    body = _echo(pool)
    assert body["function_name"] == "flowgate-local-ApiFunction"
    assert 0 < body["remaining_ms"] <= 5000
    assert body["module"] == "api"  # imported by its name from CodeUri, as Lambda's runtime does
    context = pool.context()
    assert context.invoked_function_arn == api.arn
    assert context.memory_limit_in_mb == 256
    assert context.log_group_name == "/aws/lambda/flowgate-local-ApiFunction"
    assert context.function_version == "$LATEST"
    assert len(context.aws_request_id) == 36


def test_a_worker_has_its_functions_environment_only(
    api: FunctionSpec, pools: list[FunctionPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given variables in devstack's own environment that no function is given
    monkeypatch.setenv("DEVSTACK_ONLY_SECRET", "s3cret")
    monkeypatch.setenv("AWS_PROFILE", "production")
    pool = FunctionPool(api, function_environment(api, AWS))
    pools.append(pool)
    names = set(_echo(pool)["environ"])
    # Then the worker sees the template's variables of its function, the local SDK settings and the
    # runtime's, and nothing else of ours
    assert {"GREETING", "COLOR", "TABLE_NAME", "AWS_ENDPOINT_URL", "AWS_LAMBDA_FUNCTION_NAME"} <= names
    assert not names & {"DEVSTACK_ONLY_SECRET", "AWS_PROFILE", "PYTEST_CURRENT_TEST", "PYTHONPATH"}


def test_large_events_and_results_cross_whole(pool: FunctionPool) -> None:
    body = "é" * 3_000_000  # 6 MB of UTF-8, as large as a Lambda payload gets
    answer = _echo(pool, body, pad="3000000")
    assert answer["event"]["body"] == body
    assert len(answer["pad"]) == 3_000_000
    assert _echo(pool, "after")["current_body"] == "after"  # and the pipe is in step after it


def test_a_failing_handler_answers_lambdas_error_and_stays_warm(pool: FunctionPool) -> None:
    warm = _echo(pool)["pid"]
    with pytest.raises(FunctionError) as failed:
        pool.invoke({"resource": "/boom"})
    payload = failed.value.payload
    assert (payload["errorType"], payload["errorMessage"]) == ("RuntimeError", "boom")
    assert any("api.py" in frame for frame in payload["stackTrace"])
    assert len(payload["requestId"]) == 36
    assert _echo(pool)["pid"] == warm


def test_a_result_that_is_not_json_fails_like_on_lambda(pool: FunctionPool) -> None:
    with pytest.raises(FunctionError) as failed:
        pool.invoke(_echo_event(unserializable="1"))
    assert failed.value.error_type == "Runtime.MarshalError"
    assert "Unable to marshal response" in failed.value.payload["errorMessage"]


def test_a_run_past_the_timeout_kills_the_worker_and_the_next_event_gets_a_new_one(
    api: FunctionSpec, pools: list[FunctionPool]
) -> None:
    spec = dataclasses.replace(api, timeout_seconds=1)
    pool = FunctionPool(spec, function_environment(spec, AWS))
    pools.append(pool)
    first = _echo(pool)["pid"]
    started = time.monotonic()
    with pytest.raises(FunctionError) as failed:
        _echo(pool, sleep="30")
    assert time.monotonic() - started < 5
    assert failed.value.error_type == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in failed.value.payload["errorMessage"]
    assert not _alive(first)
    assert pool.instance_count == 0
    assert _echo(pool)["pid"] != first


def test_a_worker_that_exits_is_replaced(pool: FunctionPool) -> None:
    first = _echo(pool)["pid"]
    os.kill(first, 9)
    time.sleep(0.2)
    # The dead worker is noticed before it is given an event, and a new one serves it
    assert _echo(pool)["pid"] != first
    assert pool.instance_count == 1


def test_a_function_that_cannot_load_fails_alone(api: FunctionSpec, caplog: pytest.LogCaptureFixture) -> None:
    broken = dataclasses.replace(api, logical_id="Broken", handler="missing.handler")
    runtime = FunctionRuntime(
        {"ApiFunction": api, "Broken": broken},
        {"ApiFunction": function_environment(api, AWS), "Broken": function_environment(broken, AWS)},
    )
    try:
        assert runtime.warm_up() == ["Broken"]
        assert "Broken: the handler cannot be loaded" in caplog.text
        with pytest.raises(FunctionError, match="Unable to import module 'missing'") as failed:
            runtime.invoke("Broken", {})
        assert failed.value.error_type == "Runtime.ImportModuleError"
        assert runtime.pools["Broken"].instance_count == 0
        assert runtime.invoke("ApiFunction", _echo_event())["statusCode"] == 200
    finally:
        runtime.stop()


def test_stop_ends_every_worker(pool: FunctionPool) -> None:
    with ThreadPoolExecutor(2) as threads:
        pids = {answer["pid"] for answer in threads.map(lambda _: _echo(pool, sleep="0.3"), range(2))}
    pool.stop()
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(FunctionError, match="stopping"):
        _echo(pool)
