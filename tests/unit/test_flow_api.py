"""flow_api, the module flow scripts import: the documented examples run unmodified in the sandbox, and each
call maps to the RPC ops the runner answers (start_child, run_child, wait_child, get_child, system_get)."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from flowgate import sandbox
from flowgate.errors import BadRequest, NotFound
from flowgate.runtime import flow_api

# Seed 003, "Connectors": a connector type with inputs only, started with run=False.
REST_EXAMPLE = """\
import flow_api
def handler(system: flow_api.System, this: flow_api.Execution):
    inputs = {
        'url': 'https://httpbin.org/post',
        'method': 'post',
        'data': 'payload',
    }
    child_execution = this.connect(connector_type='REST', **inputs, run=False)
    child_execution.run_async()
    # do other stuff
    child_execution.wait()
    outputs = child_execution.get('output_value')
    this.log(outputs)
    return this.success('all done')
"""

# Seed 003, "Override inputs": a stored connector by name, run and waited for at once.
STORED_CONNECTOR_EXAMPLE = """\
import flow_api
def handler(system: flow_api.System, this: flow_api.Execution):
    metadata = this.connect('repository', ref='v2').get('output_value')
    this.log(metadata['date_str'])
    return this.success('all done')
"""

# Seed 000, "Workspace Linking": a flow in a linked workspace; the handler takes `inputs` too.
REMOTE_FLOW_EXAMPLE = """\
import flow_api
def handler(system: flow_api.System, this: flow_api.Execution, inputs: dict):
    this.flow(
        '<your_flow>',
        remote_workspace_name='<remote-workspace-sync-config-name>',
    )
    return this.success('all done')
"""


class Platform:
    """A fake `on_call`: records every request and answers the way the runner does."""

    def __init__(
        self,
        *,
        child_status: str = "success",
        child_outputs: dict[str, Any] | None = None,
        child_message: str | None = None,
        refuse: Exception | None = None,
    ) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.child_status = child_status
        self.child_outputs = child_outputs or {}
        self.child_message = child_message
        self.refuse = refuse

    def __call__(self, op: str, args: dict[str, Any]) -> Any:
        self.calls.append((op, args))
        if self.refuse is not None:
            raise self.refuse
        if op == "start_child":
            return {"id": f"child-{len(self.calls)}"}
        if op == "run_child":
            return {"id": args["id"]}
        if op == "wait_child":
            return {"status": self.child_status, "outputs": self.child_outputs, "message": self.child_message}
        if op == "get_child":
            return {
                "output_value": self.child_outputs,
                "status": self.child_status,
                "message": self.child_message,
                "inputs": {},
            }[args["field"]]
        assert op == "system_get"
        return {"answered": args}

    def sequence(self) -> list[tuple[str, dict[str, Any]]]:
        """The calls without wait_child's timeout, which depends on the clock."""
        return [(op, {k: v for k, v in args.items() if k != "timeout"}) for op, args in self.calls]


def run(
    script: str, platform: Platform, inputs: dict[str, Any] | None = None, **kw: Any
) -> sandbox.ScriptResult:
    return sandbox.run_script(textwrap.dedent(script), inputs or {}, platform, **kw)


def test_rest_connection_example_runs_unmodified() -> None:
    platform = Platform(child_outputs={"json": {"data": "payload"}, "status_code": 200})
    result = run(REST_EXAMPLE, platform)
    assert (result.status, result.message, result.error_line) == ("success", "all done", None)
    assert platform.sequence() == [
        (
            "start_child",
            {
                "kind": "connection",
                "connector": None,
                "connector_type": "REST",
                "inputs": {"url": "https://httpbin.org/post", "method": "post", "data": "payload"},
            },
        ),
        ("run_child", {"id": "child-1"}),
        ("wait_child", {"id": "child-1"}),
        ("get_child", {"id": "child-1", "field": "output_value"}),
    ]
    assert result.log == ['{"json": {"data": "payload"}, "status_code": 200}']
    assert result.outputs == {}


def test_stored_connector_example_runs_unmodified() -> None:
    platform = Platform(child_outputs={"date_str": "2024-05-01", "ref": "v2"})
    result = run(STORED_CONNECTOR_EXAMPLE, platform)
    assert (result.status, result.message) == ("success", "all done")
    assert platform.sequence() == [
        (
            "start_child",
            {
                "kind": "connection",
                "connector": "repository",
                "connector_type": None,
                "inputs": {"ref": "v2"},
            },
        ),
        ("run_child", {"id": "child-1"}),
        ("wait_child", {"id": "child-1"}),
        ("get_child", {"id": "child-1", "field": "output_value"}),
    ]
    assert result.log == ["2024-05-01"]


def test_remote_flow_example_runs_unmodified() -> None:
    platform = Platform()
    result = run(REMOTE_FLOW_EXAMPLE, platform, inputs={"anything": 1})
    assert (result.status, result.message) == ("success", "all done")
    assert platform.sequence() == [
        (
            "start_child",
            {
                "kind": "flow",
                "flow": "<your_flow>",
                "inputs": {},
                "remote_workspace_name": "<remote-workspace-sync-config-name>",
            },
        ),
        ("run_child", {"id": "child-1"}),
        ("wait_child", {"id": "child-1"}),
    ]


def test_a_refused_call_ends_the_script_with_the_platforms_message_and_line() -> None:
    refusal = BadRequest("remote_workspace_name needs workspace linking, which is not built yet")
    result = run(REMOTE_FLOW_EXAMPLE, Platform(refuse=refusal))
    assert result.status == "error"
    assert result.message == (
        "FlowApiError: remote_workspace_name needs workspace linking, which is not built yet"
    )
    assert result.error_line == 3


def test_platform_errors_reach_the_script_as_flow_api_errors_with_their_code() -> None:
    script = """
        import flow_api
        def handler(system, this):
            try:
                system.flow('missing')
            except flow_api.FlowApiError as exc:
                this.log(exc.code, exc.message)
            return this.success()
    """
    result = run(script, Platform(refuse=NotFound("flow not found in this workspace")))
    assert result.status == "success"
    assert result.log == ["not_found flow not found in this workspace"]


def test_unexpected_platform_errors_reach_the_script_without_their_text() -> None:
    script = """
        def handler(system, this):
            system.secret_names()
    """
    result = run(script, Platform(refuse=RuntimeError("table arn:aws:dynamodb:... is throttled")))
    assert (result.status, result.message, result.error_line) == ("error", "FlowApiError: internal error", 3)
    assert not any("dynamodb" in line for line in result.log)


def test_a_failed_child_raises_dependency_failed_with_its_message() -> None:
    script = """
        import flow_api
        def handler(system, this):
            child = this.connect('db', run=False)
            try:
                child.wait()
            except flow_api.DependencyFailedError as exc:
                this.log('caught:', str(exc))
            this.connect('db')
    """
    result = run(script, Platform(child_status="error", child_message="connection refused"))
    assert result.status == "error"
    assert result.message is not None
    assert result.message.startswith("DependencyFailedError: child execution child-")
    assert result.message.endswith("ended with status error: connection refused")
    assert result.error_line == 9
    assert result.log[0].startswith("caught: child execution child-1 ended with status error")


def test_wait_starts_a_child_that_was_not_started_and_names_may_be_given_by_keyword() -> None:
    script = """
        def handler(system, this):
            child = this.connect(connector_name_or_type='repository', run=False)
            child.wait(timeout=5)
            this.set_output('id', child.get('id'))
            return this.success()
    """
    platform = Platform()
    result = run(script, platform)
    assert result.outputs == {"id": "child-1"}
    assert [op for op, _ in platform.calls] == ["start_child", "run_child", "wait_child"]
    assert platform.calls[0][1]["connector"] == "repository"
    assert 0 < platform.calls[2][1]["timeout"] <= 5


def test_wait_child_timeouts_never_outlast_the_scripts_wall_limit() -> None:
    script = """
        def handler(system, this):
            this.connect('a', run=False).wait()
            this.connect('b', run=False).wait(timeout=3600)
    """
    platform = Platform()
    run(script, platform, limits=sandbox.Limits(wall_seconds=5))
    timeouts = [args["timeout"] for op, args in platform.calls if op == "wait_child"]
    assert len(timeouts) == 2
    assert all(isinstance(t, float) and 0 < t <= 5 for t in timeouts)


def test_system_reads_are_system_get_requests() -> None:
    script = """
        def handler(system, this):
            system.flow('etl')
            system.connector('repository')
            system.secret_names()
            this.log(system.execution('e-1'))
    """
    platform = Platform()
    result = run(script, platform)
    assert result.status == "success"
    assert platform.sequence() == [
        ("system_get", {"kind": "flow", "name": "etl"}),
        ("system_get", {"kind": "connector", "name": "repository"}),
        ("system_get", {"kind": "secret_names"}),
        ("system_get", {"kind": "execution", "id": "e-1"}),
    ]
    assert result.log == ['{"answered": {"kind": "execution", "id": "e-1"}}']


def test_inputs_outputs_and_identity() -> None:
    script = """
        def handler(system, this, inputs):
            assert inputs == this.get('input_value') == {'n': 2}
            this.set_output('doubled', inputs['n'] * 2)
            this.save(output_value={'kept': True, 'replaced': 'all'})
            this.set_output('id', this.id)
            return {'returned': [1, 2]}
    """
    result = run(script, Platform(), inputs={"n": 2}, execution_id="e-42")
    assert (result.status, result.message) == ("success", None)
    assert result.outputs == {"kept": True, "replaced": "all", "id": "e-42", "returned": [1, 2]}


def test_this_error_ends_the_execution_even_through_except_exception() -> None:
    script = """
        def handler(system, this):
            this.set_output('partial', 1)
            try:
                this.error('the input file is empty')
            except Exception:
                return this.success('swallowed')
    """
    result = run(script, Platform())
    assert (result.status, result.message, result.error_line) == ("error", "the input file is empty", 5)
    assert result.outputs == {"partial": 1}
    assert result.log == []


def test_outputs_that_are_not_json_fail_at_the_scripts_line() -> None:
    script = """
        import datetime
        def handler(system, this):
            this.set_output('when', datetime.date(2024, 1, 1))
    """
    result = run(script, Platform())
    assert result.status == "error"
    assert result.message is not None
    assert result.message.startswith("FlowApiError: output 'when' must be JSON data")
    assert result.error_line == 4


class Transport:
    """An in-process transport, for the parts of flow_api that need no sandbox."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.calls: list[str] = []

    def call(self, op: str, args: dict[str, Any]) -> Any:
        self.calls.append(op)
        return {"id": "c"}

    def log(self, text: str) -> None:
        self.lines.append(text)


def test_log_renders_values_like_a_print_with_json_for_containers() -> None:
    transport = Transport()
    this = flow_api.Execution(transport, "e", {})
    this.log("count:", 3, {"a": [1, None]}, ("t",), None)
    assert transport.lines == ['count: 3 {"a": [1, null]} ["t"] None']


def test_recorded_outputs_are_snapshots() -> None:
    this = flow_api.Execution(Transport(), "e", {})
    rows = [1]
    this.set_output("rows", rows)
    rows.append(2)
    assert this.get("output_value") == {"rows": [1]}


def test_child_id_needs_no_request_and_bad_timeouts_fail_early() -> None:
    transport = Transport()
    child = flow_api.ChildExecution(transport, "c")
    assert child.get("id") == "c"
    with pytest.raises(flow_api.FlowApiError, match="timeout"):
        child.wait(timeout=-1)
    assert transport.calls == []
