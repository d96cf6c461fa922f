"""AWS calls made by a continue and a cancel of a held task, through the workflow function's handler,
and by the notifier that starts a continue's jobs after it.

Counted, not timed. A fresh interpreter (so that environment variables, cached clients and moto's state
stay out of `make bench`'s own process) opens `moto.mock_aws`, provisions every resource of
template.yaml as the handler tests do (`devstack.provision`), sets the functions' environment, and
builds, through the domain services: the platform's workflow properties (a loopback endpoint, enabled),
an enterprise with workflow on, an org admin, an approver holding WORKFLOW_OVERRIDE, a workspace with a
flow bound to deploy, and one VM per decision. Each VM's deploy is requested and held: the real
`StepFunctionsHolds` starts the state machine execution, which moto runs (`execute_state_machine`, as
the local stack does): it pauses on `sqs:sendMessage.waitForTaskToken` and puts its token on the approval
queue. The benchmark takes that message and records the token as the hold's consumer would
(`Announcements.record_token`), so the decision's SendTaskSuccess resumes a real execution. Should no
token arrive within EVENT_WAIT_SECONDS, the token recorded is "token" (moto then answers InvalidToken,
which the adapter treats as already released: one call either way); the total row says which.

Then `functions/workflow/app.py`'s `handler` receives an API Gateway event
`POST /api/object/task/{uuid}/action/{continue|cancel}` with the approver's HTTP Basic credentials (as
Abiquo's sample connectors send them) and an empty body: a continue with credentials this container has
not seen yet, a continue with the same header again (inside the Authenticator's Basic cache TTL), and a
cancel with it. Every botocore API call made on the handler's thread is recorded
(`BaseClient._make_api_call`, one record per operation, retries included in it) and attributed to a
phase:

* auth: inside `Authenticator.authenticate`;
* decision: after authentication, up to and including the token release (`Holds.release`);
* jobs: after the release, still in the request (a jobs start there is the fallback of a failed token
  call; a continue normally has none).

After a continue's request, the resumed state machine goes on (a Choice on the decision, then
`sqs:sendMessage`) and puts a `continued` event on the approval queue; the benchmark takes it and hands
it to the notifier (`Notifier.handle`, as `functions/workflow/notifier.py` does), counting its calls
apart (`notifier`): they start the bound flow's execution (created with the id derived from the task,
queued for the runner) and mark the task STARTED, outside the request.

Goals (issue 8): a continue makes at most 3 AWS calls in the request after authentication, and a
repeated HTTP Basic header inside the cache TTL makes 0 authentication calls.
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

GOAL_REQUEST_CALLS = 3  # a continue, in the request, after authentication
GOAL_REPEATED_BASIC_AUTH_CALLS = 0  # a repeated HTTP Basic header inside the cache TTL
SOURCE_IP = "198.51.100.7"
EVENT_WAIT_SECONDS = 5.0
PHASES = ("auth", "decision", "jobs")
# What the benchmark decides, in order, on one container: (label, decision, the Basic header is new).
CASES = (
    ("continue", "continue", True),
    ("continue, Basic repeated", "continue", False),
    ("cancel, Basic repeated", "cancel", False),
)


# ---- the child: held tasks and the handler's events (the world: benchmarks/moto_support.py) ---------


def _event_from_queue(queue_url: str, task_id: str, event: str) -> dict[str, Any] | None:
    """The approval event `event` of `task_id` the state machine put on the approval queue, if it comes
    within EVENT_WAIT_SECONDS (others are taken off the queue and dropped: the benchmark is their only
    consumer)."""
    import boto3

    sqs = boto3.client("sqs")
    deadline = time.monotonic() + EVENT_WAIT_SECONDS
    while time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            body: dict[str, Any] = json.loads(message["Body"])
            if body.get("event") == event and body.get("task_id") == task_id:
                return body
        time.sleep(0.02)
    return None


def held_task(tenant: Tenant, vm_name: str, approval_queue_url: str) -> tuple[str, bool]:
    """A VM whose deploy is held for review, with its hold's token recorded on the task: (task id, whether
    the token is the state machine's own rather than a stand-in)."""
    from flowgate.wiring import container

    vm = container().workflow_resources.create_virtual_machine(
        tenant.admin, tenant.ws, {"name": vm_name, "cpu": 1, "ram": 512}
    )
    [task] = container().operation_requests.request_operation(tenant.admin, tenant.ws, "vm", vm.id, "deploy")
    if task.state != "QUEUEING":
        raise RuntimeError(f"the deploy was not held: the task is {task.state} ({task.extradata})")
    held = _event_from_queue(approval_queue_url, task.taskId, "held")
    token = str(held["token"]) if held else None
    container().announcements.record_token(task.taskId, token or "token")
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
    holds = container().holds
    jobs = container().workflow_jobs

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
    stack.enter_context(mock.patch.object(holds, "release", wrap(holds.release, None, "jobs")))
    stack.enter_context(mock.patch.object(jobs, "start", wrap(jobs.start, "jobs", None)))
    return stack


def _hold_status(task_id: str) -> str:
    """The status of the hold's state machine execution (named after the task), once it left RUNNING or
    after EVENT_WAIT_SECONDS."""
    import boto3

    sfn = boto3.client("stepfunctions")
    arn = os.environ["APPROVAL_STATE_MACHINE_ARN"]
    deadline = time.monotonic() + EVENT_WAIT_SECONDS
    status = "missing"
    while time.monotonic() < deadline:
        found = [e for e in sfn.list_executions(stateMachineArn=arn)["executions"] if e["name"] == task_id]
        status = found[0]["status"] if found else "missing"
        if status != "RUNNING":
            break
        time.sleep(0.02)
    return status


def _task_state(task_id: str) -> tuple[str | None, str | None]:
    from flowgate.wiring import container

    record = container().workflow_task_store.get(task_id)
    return (record.state.value, record.execution_id) if record else (None, None)


def _decide(handler: ModuleType, tenant: Tenant, task_id: str, decision: str) -> dict[str, Any]:
    log = CallLog()
    event = api_event("POST", f"/api/object/task/{task_id}/action/{decision}", tenant.approver_credentials)
    with _phase_marks(log), counting_calls(log):
        answer = handler.handler(event, LambdaContext.for_function("workflow"))
    state, execution_id = _task_state(task_id)
    body = json.loads(answer.get("body") or "{}")
    return {
        "status": answer["statusCode"],
        "answered_state": body.get("state"),
        "state_after": state,
        "execution_id": execution_id,
        "calls": {phase: log.by_phase(phase) for phase in ("before-auth", *PHASES)},
        "details": {phase: log.details(phase) for phase in ("before-auth", *PHASES)},
        "body": (answer.get("body") or "")[:300] if answer["statusCode"] >= 300 else None,
    }


def _follow_through(task_id: str, approval_queue_url: str) -> dict[str, Any]:
    """The continue's `continued` event from the resumed state machine, handed to the notifier as the
    approval queue's consumer would; its calls, and where the task and its execution are then."""
    from flowgate.messages import ApprovalEvent
    from flowgate.wiring import container

    body = _event_from_queue(approval_queue_url, task_id, "continued")
    log = CallLog(phase="notifier")
    if body is not None:
        with counting_calls(log):
            container().notifier.handle(ApprovalEvent.model_validate(body))
    state, execution_id = _task_state(task_id)
    execution = container().flows.find_execution(execution_id) if execution_id else None
    return {
        "event": body is not None,
        "state": state,
        "execution_id": execution_id,
        "execution_status": execution.status.value if execution else None,
        "calls": log.by_phase("notifier"),
        "details": log.details("notifier"),
    }


def child(result_path: Path) -> None:
    """Build the world under moto, decide three held tasks through the handler (the continues followed
    through by the notifier), write the call logs."""
    isolated_aws_environment()
    from moto import mock_aws

    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        resources = provision_template()
        handler = load_handler("workflow")
        enable_platform_workflow()
        tenant = make_tenant("a")
        queue = resources["ApprovalQueue"]
        outcomes: dict[str, Any] = {}
        for n, (label, decision, _) in enumerate(CASES):
            task_id, real_token = held_task(tenant, f"vm-{n}", queue)
            outcome = {
                "decision": decision,
                "real_token": real_token,
                **_decide(handler, tenant, task_id, decision),
            }
            if decision == "continue":
                outcome["follow_through"] = _follow_through(task_id, queue)
            outcome["hold_after"] = _hold_status(task_id)
            outcomes[label] = outcome
    result_path.write_text(json.dumps(outcomes))


# ---- the benchmark ----------------------------------------------------------------------------------


def _rows(outcomes: dict[str, Any]) -> list[Row]:
    """Per decision: one row per phase with its operations in order, the request's calls after
    authentication against the goal, the notifier's follow-through of a continue, and the totals."""
    goal = (
        f"continue: AWS calls in the request after authentication <= {GOAL_REQUEST_CALLS}; "
        f"a repeated HTTP Basic header: auth calls <= {GOAL_REPEATED_BASIC_AUTH_CALLS}"
    )
    expected = {"continue": (202, {"PENDING", "STARTED"}), "cancel": (200, {"CANCELLED"})}
    new_header = {label: new for label, _, new in CASES}
    rows = []
    for label, outcome in outcomes.items():
        decision = outcome["decision"]
        calls: dict[str, list[str]] = outcome["calls"]
        details: dict[str, list[str]] = outcome["details"]
        status, states = expected[decision]
        worked = outcome["status"] == status and outcome["state_after"] in states
        stray = calls.get("before-auth", [])
        if stray:  # nothing should call AWS before the caller is known; shown if it ever does
            rows.append(
                Row(
                    f"{label}: before auth",
                    {"calls": len(stray), "operations": ", ".join(details["before-auth"])},
                )
            )
        for phase in PHASES:
            verdict = None
            if phase == "auth" and not new_header[label]:
                verdict = "PASS" if len(calls[phase]) <= GOAL_REPEATED_BASIC_AUTH_CALLS else "OVER"
            rows.append(
                Row(
                    f"{label}: {phase}",
                    {"calls": len(calls[phase]), "operations": ", ".join(details[phase]) or "-"},
                    verdict,
                    goal=goal,
                    notes={"operations": calls[phase], "touched": details[phase]},
                )
            )
        after_auth = len(stray) + len(calls["decision"]) + len(calls["jobs"])
        verdict = None
        if decision == "continue":
            verdict = "PASS" if after_auth <= GOAL_REQUEST_CALLS else "OVER"
            if not worked:
                verdict = "ERROR"
        rows.append(
            Row(
                f"{label}: request after authentication",
                {"calls": after_auth, "operations": "-"},
                verdict,
                goal=goal,
            )
        )
        token = "the state machine's" if outcome["real_token"] else "a stand-in"
        total = after_auth + len(calls["auth"])
        rows.append(
            Row(
                f"{label}: request total -> {outcome['status']} {outcome['answered_state']}",
                {
                    "calls": total,
                    "operations": f"(token: {token}; hold execution after: {outcome['hold_after']})",
                },
                None if worked else "ERROR",
                goal=goal,
                notes={
                    "hold_execution_after": outcome["hold_after"],
                    "state_after_request": outcome["state_after"],
                    "error_body": outcome.get("body"),
                },
            )
        )
        follow = outcome.get("follow_through")
        if follow is not None:
            started = follow["state"] == "STARTED" and follow["execution_status"] is not None
            rows.append(
                Row(
                    f"{label}: notifier, outside the request -> {follow['state']}",
                    {
                        "calls": len(follow["calls"]),
                        "operations": ", ".join(follow["details"]) or "(no continued event)",
                    },
                    None if started else "ERROR",
                    goal=goal,
                    notes={
                        "continued_event": follow["event"],
                        "execution_id": follow["execution_id"],
                        "execution_status": follow["execution_status"],
                        "operations": follow["calls"],
                    },
                )
            )
    return rows


def run(options: Options) -> list[Row]:
    return _rows(run_child(options, "workflow_decisions"))


if __name__ == "__main__":
    sys.exit(script_main("workflow_decisions", lambda result_path, _rounds, _warmup: child(result_path)))
