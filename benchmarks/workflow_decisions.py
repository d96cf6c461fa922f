"""AWS calls made by one continue and one cancel of a held task, through the workflow function's handler.

Counted, not timed. A fresh interpreter (so that environment variables, cached clients and moto's state
stay out of `make bench`'s own process) opens `moto.mock_aws`, provisions every resource of
template.yaml as the handler tests do (`devstack.provision`), sets the functions' environment, and
builds, through the domain services: the platform's workflow properties (a loopback endpoint, enabled),
an enterprise with workflow on, an org admin, an approver holding WORKFLOW_OVERRIDE, a workspace with a
flow bound to deploy, and one VM per decision. Each VM's deploy is requested and held: the real
`StepFunctionsHolds` starts the state machine execution, which moto runs (`execute_state_machine`, as
the local stack does): it pauses on `sqs:sendMessage.waitForTaskToken` and puts its token on the approval
queue. The benchmark takes that message and records the token as the hold's consumer would
(`WorkflowService.record_token`), so the decision's SendTaskSuccess resumes a real execution. Should no
token arrive within TOKEN_WAIT_SECONDS, the token recorded is "token" (moto then answers InvalidToken,
which the adapter treats as already released: one call either way); the total row says which.

Then `functions/workflow/app.py`'s `handler` receives an API Gateway event
`POST /api/object/task/{uuid}/action/{continue|cancel}` with the approver's HTTP Basic credentials (as
Abiquo's sample connectors send them) and an empty body. Every botocore API call made on the handler's
thread is recorded (`BaseClient._make_api_call`, one record per operation, retries included in it) and
attributed to a phase:

* auth: inside `Authenticator.authenticate`;
* decision: after authentication, up to and including the token release (`Holds.release`);
* jobs: after the release (or from `_start_jobs` on), i.e. what starts the bound flow's execution.

Goal: at most 3 calls for the decision itself before the jobs start (authentication is reported apart,
and the total before the jobs with it).
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

if __package__ in {None, ""}:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.moto_support import (
    ROOT_DIR,
    CallLog,
    Tenant,
    counting_calls,
    enable_platform_workflow,
    isolated_aws_environment,
    make_tenant,
    provision_template,
    run_child,
    script_main,
)
from benchmarks.run import Options, Row
from devstack.lambdas import LambdaContext

GOAL_DECISION_CALLS = 3
SOURCE_IP = "198.51.100.7"
TOKEN_WAIT_SECONDS = 5.0
PHASES = ("auth", "decision", "jobs")


# ---- the child: held tasks and the handler's events (the world: benchmarks/moto_support.py) ---------


def _token_from_queue(queue_url: str, task_id: str) -> str | None:
    """The token the hold of `task_id` put on the approval queue, if it comes within TOKEN_WAIT_SECONDS."""
    import boto3

    sqs = boto3.client("sqs")
    deadline = time.monotonic() + TOKEN_WAIT_SECONDS
    while time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            body = json.loads(message["Body"])
            if body.get("event") == "held" and body.get("task_id") == task_id:
                return str(body["token"])
        time.sleep(0.02)
    return None


def held_task(tenant: Tenant, vm_name: str, approval_queue_url: str) -> tuple[str, bool]:
    """A VM whose deploy is held for review, with its hold's token recorded on the task: (task id, whether
    the token is the state machine's own rather than a stand-in)."""
    from flowgate.wiring import container

    svc = container().workflow
    vm = svc.create_virtual_machine(tenant.admin, tenant.ws, {"name": vm_name, "cpu": 1, "ram": 512})
    [task] = svc.request_operation(tenant.admin, tenant.ws, "vm", vm.id, "deploy")
    if task.state != "QUEUEING":
        raise RuntimeError(f"the deploy was not held: the task is {task.state} ({task.extradata})")
    token = _token_from_queue(approval_queue_url, task.taskId)
    svc.record_token(task.taskId, token or "token")
    return task.taskId, token is not None


def load_handler(function: str) -> ModuleType:
    """functions/<function>/app.py, imported as Lambda would, under a module name of its own."""
    name = f"bench_{function}_app"
    spec = importlib.util.spec_from_file_location(name, ROOT_DIR / "functions" / function / "app.py")
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load functions/{function}/app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def api_event(
    method: str, path: str, credentials: tuple[str, str], body: str | None = None
) -> dict[str, Any]:
    """A REST API (proxy integration) event with HTTP Basic credentials."""
    basic = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}"}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "body": body,
        "isBase64Encoded": False,
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "stage": "bench",
            "httpMethod": method,
            "resourcePath": path,
            "identity": {"sourceIp": SOURCE_IP},
        },
    }


# ---- counting by phase ------------------------------------------------------------------------------


def _phase_marks(log: CallLog) -> contextlib.ExitStack:
    """Wrap the authenticator, the token release and the jobs start of the live composition root so that
    each call is attributed to its phase."""
    from unittest import mock

    from flowgate.wiring import container

    authenticator = container().authenticator
    svc = container().workflow

    def wrap(original: Callable[..., Any], during: str | None, after: str | None) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if during:
                log.phase = during
            try:
                return original(*args, **kwargs)
            finally:
                if after:
                    log.phase = after

        return wrapped

    stack = contextlib.ExitStack()
    stack.enter_context(
        mock.patch.object(authenticator, "authenticate", wrap(authenticator.authenticate, "auth", "decision"))
    )
    stack.enter_context(mock.patch.object(svc.holds, "release", wrap(svc.holds.release, None, "jobs")))
    stack.enter_context(mock.patch.object(svc, "_start_jobs", wrap(svc._start_jobs, "jobs", None)))
    return stack


def _hold_status(task_id: str) -> str:
    """The status of the hold's state machine execution (named after the task), once it left RUNNING or
    after TOKEN_WAIT_SECONDS."""
    import boto3

    sfn = boto3.client("stepfunctions")
    arn = os.environ["APPROVAL_STATE_MACHINE_ARN"]
    deadline = time.monotonic() + TOKEN_WAIT_SECONDS
    status = "missing"
    while time.monotonic() < deadline:
        found = [e for e in sfn.list_executions(stateMachineArn=arn)["executions"] if e["name"] == task_id]
        status = found[0]["status"] if found else "missing"
        if status != "RUNNING":
            break
        time.sleep(0.02)
    return status


def _decide(handler: ModuleType, tenant: Tenant, task_id: str, decision: str) -> dict[str, Any]:
    from flowgate.wiring import container

    log = CallLog()
    event = api_event("POST", f"/api/object/task/{task_id}/action/{decision}", tenant.approver_credentials)
    with _phase_marks(log), counting_calls(log):
        answer = handler.handler(event, LambdaContext.for_function("workflow"))
    item = container().workflow_store.get_task(task_id) or {}
    return {
        "status": answer["statusCode"],
        "state_after": item.get("state"),
        "execution_id": item.get("execution_id"),
        "hold_after": _hold_status(task_id),
        "calls": {phase: log.by_phase(phase) for phase in ("before-auth", *PHASES)},
        "details": {phase: log.details(phase) for phase in ("before-auth", *PHASES)},
        "body": (answer.get("body") or "")[:300] if answer["statusCode"] >= 300 else None,
    }


def child(result_path: Path) -> None:
    """Build the world under moto, decide two held tasks through the handler, write the call logs."""
    isolated_aws_environment()
    from moto import mock_aws

    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        resources = provision_template()
        handler = load_handler("workflow")
        enable_platform_workflow()
        tenant = make_tenant("a")
        outcomes: dict[str, Any] = {}
        for decision in ("continue", "cancel"):
            task_id, real_token = held_task(tenant, f"vm-{decision}", resources["ApprovalQueue"])
            outcomes[decision] = {"real_token": real_token, **_decide(handler, tenant, task_id, decision)}
    result_path.write_text(json.dumps(outcomes))


# ---- the benchmark ----------------------------------------------------------------------------------


def _rows(outcomes: dict[str, Any]) -> list[Row]:
    """Per decision: one row per phase with its operations in order, then the totals."""
    goal = f"decision calls, auth apart, up to and including SendTaskSuccess <= {GOAL_DECISION_CALLS}"
    expected = {"continue": (202, {"PENDING", "STARTED"}), "cancel": (200, {"CANCELLED"})}
    rows = []
    for decision, outcome in outcomes.items():
        calls: dict[str, list[str]] = outcome["calls"]
        status, states = expected[decision]
        worked = outcome["status"] == status and outcome["state_after"] in states
        stray = calls.get("before-auth", [])
        if stray:  # nothing should call AWS before the caller is known; shown if it ever does
            text = ", ".join(outcome["details"]["before-auth"])
            rows.append(Row(f"{decision}: before auth", {"calls": len(stray), "operations": text}))
        for phase in PHASES:
            ops = calls[phase]
            verdict = None
            if phase == "decision":
                counted = len(ops) + len(stray)
                verdict = "PASS" if counted <= GOAL_DECISION_CALLS else "OVER"
                if not worked:
                    verdict = "ERROR"
            rows.append(
                Row(
                    f"{decision}: {phase}",
                    {"calls": len(ops), "operations": ", ".join(outcome["details"][phase]) or "-"},
                    verdict,
                    goal=goal,
                    notes={"operations": ops, "touched": outcome["details"][phase]},
                )
            )
        token = "the state machine's" if outcome["real_token"] else "a stand-in"
        before_jobs = len(stray) + len(calls["auth"]) + len(calls["decision"])
        total = before_jobs + len(calls["jobs"])
        rows.append(
            Row(
                f"{decision}: before the jobs (auth + decision)",
                {"calls": before_jobs, "operations": "-"},
                goal=goal,
            )
        )
        rows.append(
            Row(
                f"{decision}: total -> {outcome['status']} {outcome['state_after']}",
                {
                    "calls": total,
                    "operations": f"(token: {token}; hold execution after: {outcome['hold_after']})",
                },
                None if worked else "ERROR",
                goal=goal,
                notes={
                    "hold_execution_after": outcome["hold_after"],
                    "execution_id": outcome.get("execution_id"),
                    "error_body": outcome.get("body"),
                },
            )
        )
    return rows


def run(options: Options) -> list[Row]:
    return _rows(run_child(options, "workflow_decisions"))


if __name__ == "__main__":
    sys.exit(script_main("workflow_decisions", lambda result_path, _rounds, _warmup: child(result_path)))
