"""The runner function against moto: queued executions are fed to `functions/flows/runner.py` as the SQS
events Lambda builds, and what the runner stored is read back through the flows function.

Flows and connection runs are started through their REST functions, the message the runner gets is the
one they queued, and connections call a real HTTP server on loopback (the `aws` fixture allows it).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from flowgate.clock import iso, now
from flowgate.flows.models import ExecutionStatus
from flowgate.observability import logger
from flowgate.wiring import container
from tests.handler.conftest import Api, Tenant, lambda_context, load_function, make_tenant
from tests.support.events import SqsQueue, batch

A = "/api/latest"
SECRET = "vault-Only-Key-7f3a9c"
HEADER = "import flow_api\n\n\n"


# ---- the runner, as Lambda loads and invokes it ------------------------------------------------------------


def load_runner() -> ModuleType:
    """Import functions/flows/runner.py as Lambda would (`runner.handler`): each load is one container."""
    return load_function("flows", "runner")


# ---- a peer on loopback ------------------------------------------------------------------------------------


@dataclass
class Peer:
    """An HTTP server on 127.0.0.1 that records every request and echoes it back, headers included (as
    httpbin does), in the body and in a response header. With `gate` cleared, requests wait for it."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    hit: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def peer() -> Iterator[Peer]:
    state = Peer()
    state.gate.set()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen = {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers),
                "body": self.rfile.read(length).decode(),
            }
            state.requests.append(seen)
            state.hit.set()
            state.gate.wait(10)
            data = json.dumps(seen).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Seen-Key", str(self.headers.get("X-Api-Key")))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        state.gate.set()
        server.shutdown()
        server.server_close()


# ---- fixtures and shorthands -------------------------------------------------------------------------------


@dataclass
class Rig:
    """One workspace's view of the flows function, the connectors function and the runner."""

    runner: ModuleType
    queue: SqsQueue
    flows: Api
    connectors: Api
    tenant: Tenant

    def put_flow(self, name: str, body: str, t: Tenant | None = None, /) -> None:
        t = t or self.tenant
        answer = self.flows.call(
            "PUT",
            f"{A}/workspaces/{t.workspace_id}/flows/{name}",
            {"script": HEADER + body},
            token=t.admin_token,
        )
        assert answer.status in (200, 201), answer.body

    def start(self, name: str, body: str, t: Tenant | None = None, /, **inputs: Any) -> str:
        """Save the flow `name` with the handler `body` and start an execution of it; its id."""
        t = t or self.tenant
        self.put_flow(name, body, t)
        started = self.flows.call(
            "POST",
            f"{A}/workspaces/{t.workspace_id}/executions",
            {"flow": name, "inputs": inputs},
            token=t.admin_token,
        )
        assert started.status == 202, started.body
        return str(started.body["id"])

    def read(self, eid: str, t: Tenant | None = None) -> dict[str, Any]:
        t = t or self.tenant
        answer = self.flows.call(
            "GET", f"{A}/workspaces/{t.workspace_id}/executions/{eid}", token=t.admin_token
        )
        assert answer.status == 200, answer.body
        body: dict[str, Any] = answer.body
        return body

    def executions(self) -> list[dict[str, Any]]:
        t = self.tenant
        listed = self.flows.call("GET", f"{A}/workspaces/{t.workspace_id}/executions", token=t.admin_token)
        items: list[dict[str, Any]] = listed.body["items"]
        return items

    def records(self) -> list[dict[str, Any]]:
        """The queued messages as event records; at least one."""
        records = self.queue.records()
        assert records, "nothing was queued"
        return records

    def handle(self, records: list[dict[str, Any]], runner: ModuleType | None = None) -> dict[str, Any]:
        """One invocation of the runner (of this container, or of `runner`) with these records."""
        answer: dict[str, Any] = (runner or self.runner).handler(batch(*records), lambda_context("runner"))
        return answer

    def deliver(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Hand every queued message to the runner in one batch; its answer and the records it got."""
        records = self.records()
        return self.handle(records), records


@pytest.fixture
def queue(aws: str) -> SqsQueue:
    return SqsQueue.at(os.environ["EXECUTION_QUEUE_URL"])


@pytest.fixture
def tenant(api: Api, root_token: str) -> Tenant:
    return make_tenant(api, root_token, "a")


@pytest.fixture
def rig(api: Api, queue: SqsQueue, tenant: Tenant) -> Rig:
    return Rig(
        load_runner(),
        queue,
        Api(load_function("flows"), "flows"),
        Api(load_function("connectors"), "connectors"),
        tenant,
    )


# ---- flows -------------------------------------------------------------------------------------------------


def test_a_queued_flow_runs_to_success_with_outputs_log_and_duration(rig: Rig):
    # Given a queued execution of a flow that logs, sets outputs and succeeds
    eid = rig.start(
        "hello",
        "def handler(system, this, inputs):\n"
        "    this.log('hello', inputs['who'])\n"
        "    print('printed too')\n"
        "    this.set_output('greeting', 'hi ' + inputs['who'])\n"
        "    return this.success('greeted')\n",
        who="ana",
    )

    # When the runner gets the queued message
    answer, records = rig.deliver()

    # Then the batch succeeded and the execution ended success with its outputs, log and timings
    assert len(records) == 1
    assert answer == {"batchItemFailures": []}
    done = rig.read(eid)
    assert (done["status"], done["message"]) == ("success", "greeted")
    assert done["outputs"] == {"greeting": "hi ana"}
    assert done["log"] == ["hello ana", "printed too"]
    assert done["log_truncated"] is False
    assert isinstance(done["duration_ms"], int)
    assert done["duration_ms"] >= 0
    assert done["started_at"] is not None
    assert done["ended_at"] is not None
    assert done["started_at"] <= done["ended_at"]
    assert done["version"] == 3  # pending -> running -> success


def test_a_script_that_raises_ends_in_error_with_its_message_and_line(rig: Rig):
    # Given a flow whose handler raises on line 6 of the script
    eid = rig.start(
        "fails",
        "def handler(system, this, inputs):\n"
        "    this.log('about to fail')\n"
        "    raise ValueError('boom ' + inputs['who'])\n",
        who="ana",
    )

    # When it runs
    answer, _ = rig.deliver()

    # Then the batch item succeeded (the execution did end) and the execution is error with the message
    assert answer == {"batchItemFailures": []}
    done = rig.read(eid)
    assert done["status"] == "error"
    assert done["message"] == "ValueError: boom ana"
    # And the log shows where it failed
    assert done["log"][0] == "about to fail"
    assert "  line 6, in handler" in done["log"]
    assert "    raise ValueError('boom ' + inputs['who'])" in done["log"]
    assert done["ended_at"] is not None


def test_this_error_ends_the_execution_with_the_scripts_message(rig: Rig):
    eid = rig.start(
        "refuses",
        "def handler(system, this):\n    this.set_output('partial', 1)\n    this.error('input rejected')\n",
    )
    rig.deliver()
    done = rig.read(eid)
    assert (done["status"], done["message"], done["outputs"]) == ("error", "input rejected", {"partial": 1})


def test_outputs_over_64_kib_end_the_execution_in_error(rig: Rig):
    # Given a flow that returns outputs larger than an execution may store
    eid = rig.start("big", "def handler(system, this):\n    return {'big': 'x' * (129 * 1024)}\n")

    # When it runs
    answer, _ = rig.deliver()

    # Then it ends error, saying why, with no outputs stored
    assert answer == {"batchItemFailures": []}
    done = rig.read(eid)
    assert done["status"] == "error"
    assert "at most 65536 can be stored" in done["message"]
    assert "outputs" in done["message"]
    assert done["outputs"] == {}


@pytest.mark.parametrize(
    ("value", "path"), [("1e-200", "outputs.n"), ("10 ** 40", "outputs.n"), ("{'': 1}", "outputs.n")]
)
def test_outputs_dynamodb_cannot_hold_end_the_execution_in_error(rig: Rig, value: str, path: str):
    # Given a flow whose outputs hold a value DynamoDB cannot store
    eid = rig.start("unstorable", f"def handler(system, this):\n    return {{'n': {value}}}\n")

    # When it runs
    answer, _ = rig.deliver()

    # Then it ends error naming the path, with no outputs stored (and the batch item did not fail)
    assert answer == {"batchItemFailures": []}
    done = rig.read(eid)
    assert done["status"] == "error"
    assert path in done["message"], done["message"]
    assert "cannot be stored" in done["message"]
    assert done["outputs"] == {}


def test_a_child_with_inputs_dynamodb_cannot_hold_is_refused_to_the_script(rig: Rig):
    # Given a parent that starts a child flow with a 41-digit input, and reports what it was told
    rig.put_flow("child", "def handler(system, this):\n    return {}\n")
    eid = rig.start(
        "parent",
        "def handler(system, this):\n"
        "    try:\n"
        "        this.flow('child', n=10 ** 40)\n"
        "    except Exception as exc:\n"
        "        return {'refused': str(exc)}\n"
        "    return {'refused': None}\n",
    )

    # When it runs
    rig.deliver()

    # Then the script was told why, and no child was made
    done = rig.read(eid)
    assert done["status"] == "success", done
    assert "inputs.n" in done["outputs"]["refused"], done["outputs"]
    assert [e["id"] for e in rig.executions()] == [eid]


def test_outputs_just_under_the_limit_are_kept(rig: Rig):
    eid = rig.start("fits", "def handler(system, this):\n    return {'big': 'x' * (63 * 1024)}\n")
    rig.deliver()
    done = rig.read(eid)
    assert done["status"] == "success"
    assert len(done["outputs"]["big"]) == 63 * 1024


def test_large_outputs_of_a_failed_script_are_not_stored_either(rig: Rig):
    # Given a flow that sets outputs over the cap, then raises
    eid = rig.start(
        "big-fail",
        "def handler(system, this):\n"
        "    this.set_output('big', 'x' * 300_000)\n"
        "    raise RuntimeError('late failure')\n",
    )

    # When it runs
    rig.deliver()

    # Then it ends error, and the execution keeps no more than the cap
    done = rig.read(eid)
    assert done["status"] == "error"
    assert "late failure" in done["message"]
    assert "65536" in done["message"]
    assert done["outputs"] == {}


# ---- delivery: duplicates, lost runners, bad records, cancelled executions ---------------------------------

CALLS_PEER = (
    "def handler(system, this, inputs):\n"
    "    answer = this.connect(connector_type='REST', url=inputs['url']).get('output_value')\n"
    "    return {'status': answer['status_code']}\n"
)


def test_a_duplicate_delivery_does_not_run_the_execution_again(rig: Rig, peer: Peer):
    # Given an execution that calls the peer once, delivered and run
    eid = rig.start("calls", CALLS_PEER, url=f"{peer.url}/once")
    records = rig.records()
    assert rig.handle(records) == {"batchItemFailures": []}
    first = rig.read(eid)
    assert (first["status"], first["outputs"]) == ("success", {"status": 200})
    assert len(peer.requests) == 1

    # When SQS delivers the same message again, to this container and to another one
    again = rig.handle(records)
    elsewhere = rig.handle(records, load_runner())

    # Then nothing runs again: one request to the peer, one child, the execution exactly as it was
    assert again == elsewhere == {"batchItemFailures": []}
    assert len(peer.requests) == 1
    assert rig.read(eid) == first
    assert sorted(e["type"] for e in rig.executions()) == ["connection", "flow"]


def test_a_message_for_an_execution_left_running_ends_it_in_error(rig: Rig, peer: Peer):
    # Given an execution that a runner claimed long ago (past any time limit) and then died with
    eid = rig.start("calls", CALLS_PEER, url=f"{peer.url}/lost")
    long_ago = iso(now() - dt.timedelta(hours=2))
    claimed = container().flow_store.transition(
        eid, ExecutionStatus.RUNNING, allowed_from=[ExecutionStatus.PENDING], started_at=long_ago
    )
    assert claimed is not None

    # When its message is delivered again
    answer, _ = rig.deliver()

    # Then it ends error saying the runner stopped, and the script is not run a second time
    assert answer == {"batchItemFailures": []}
    done = rig.read(eid)
    assert done["status"] == "error"
    assert done["message"] == "the runner stopped before the execution ended"
    assert done["ended_at"] is not None
    assert done["started_at"] == claimed["started_at"]
    assert peer.requests == []
    assert len(rig.executions()) == 1


def test_a_duplicate_delivered_while_the_first_run_is_still_going_leaves_it_alone(rig: Rig, peer: Peer):
    # Given a run in progress in one container (its connection waits at the peer)
    eid = rig.start("calls", CALLS_PEER, url=f"{peer.url}/slow")
    records = rig.records()
    peer.gate.clear()
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(rig.handle(records)))
    first.start()
    try:
        assert peer.hit.wait(10), "the first run never reached the peer"

        # When SQS delivers a copy of the message to another container meanwhile
        # Then the copy is handed back to the queue (a batch of one failure: powertools raises so that
        # Lambda returns the whole batch), to be looked at again after the visibility timeout
        with pytest.raises(BatchProcessingError):
            rig.handle(records, load_runner())
    finally:
        peer.gate.set()
        first.join(30)

    # and the first run still ends as it would have: success with its outputs
    assert results == [{"batchItemFailures": []}]
    done = rig.read(eid)
    assert (done["status"], done["outputs"]) == ("success", {"status": 200}), done["message"]
    assert len(peer.requests) == 1


def test_a_malformed_record_fails_alone_and_the_good_one_of_the_batch_runs(rig: Rig):
    # Given a batch with two malformed records around a good one
    eid = rig.start("hello", "def handler(system, this):\n    return {'ok': True}\n")
    good = rig.records()
    not_json = rig.queue.forged("this is not json")
    incomplete = rig.queue.forged(json.dumps({"version": 1, "execution_id": eid}))

    # When the runner gets the batch
    answer = rig.runner.handler(batch(not_json, *good, incomplete), lambda_context("runner"))

    # Then only the malformed records are reported for retry, and the good one ran
    failed = sorted(item["itemIdentifier"] for item in answer["batchItemFailures"])
    assert failed == sorted([not_json["messageId"], incomplete["messageId"]])
    done = rig.read(eid)
    assert (done["status"], done["outputs"]) == ("success", {"ok": True})


def test_a_message_for_an_unknown_execution_is_dropped(rig: Rig):
    record = rig.queue.forged(
        json.dumps({"version": 1, "execution_id": str(uuid.uuid4()), "workspace_id": "w"})
    )
    assert rig.runner.handler(batch(record), lambda_context("runner")) == {"batchItemFailures": []}


def test_a_cancelled_execution_is_not_run(rig: Rig, peer: Peer):
    # Given an execution cancelled while it was still pending
    eid = rig.start("calls", CALLS_PEER, url=f"{peer.url}/never")
    cancel = rig.flows.call(
        "POST",
        f"{A}/workspaces/{rig.tenant.workspace_id}/executions/{eid}/cancel",
        token=rig.tenant.admin_token,
    )
    assert cancel.status == 200
    cancelled = rig.read(eid)

    # When its message reaches the runner
    answer, _ = rig.deliver()

    # Then it is not run: still cancelled, exactly as it was, and the peer saw nothing
    assert answer == {"batchItemFailures": []}
    assert rig.read(eid) == cancelled
    assert cancelled["status"] == "cancelled"
    assert cancelled["started_at"] is None
    assert peer.requests == []


# ---- connections with vault secrets ------------------------------------------------------------------------


def verbose_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture what the function logs at its most verbose: our logger at the template's LogLevel=DEBUG and
    powertools' own debug lines (POWERTOOLS_DEBUG). The AWS SDK's wire logs are not ours to judge."""
    caplog.set_level(logging.DEBUG, logger="aws_lambda_powertools")
    caplog.set_level(logging.DEBUG, logger=logger.name)


def formatted(caplog: pytest.LogCaptureFixture) -> str:
    """The captured records as the function writes them to CloudWatch."""
    return "\n".join(logger.registered_formatter.format(record) for record in caplog.records)


def _stock_connector(connectors_api: Api, t: Tenant, url: str) -> None:
    ws = f"{A}/workspaces/{t.workspace_id}"
    secret = connectors_api.call(
        "PUT", f"{ws}/secrets/api-key", {"value": {"headers": {"X-Api-Key": SECRET}}}, token=t.admin_token
    )
    assert secret.status in (200, 201), secret.body
    made = connectors_api.call(
        "PUT",
        f"{ws}/connectors/api",
        {"type": "REST", "value": f"url: {url}/items\nmethod: post\n", "secrets": ["api-key"]},
        token=t.admin_token,
    )
    assert made.status == 201, made.body


def test_a_connection_run_merges_the_vault_secret_and_stores_it_nowhere(
    rig: Rig, peer: Peer, caplog: pytest.LogCaptureFixture
):
    # Given a REST connector whose API key comes from a vault secret, run with a call input
    _stock_connector(rig.connectors, rig.tenant, peer.url)
    verbose_logs(caplog)
    started = rig.connectors.call(
        "POST",
        f"{A}/workspaces/{rig.tenant.workspace_id}/connectors/api/run",
        {"inputs": {"params": {"page": 2}}},
        token=rig.tenant.admin_token,
    )
    assert started.status == 202, started.body
    eid = started.body["id"]

    # When the runner gets the queued connection
    answer, _ = rig.deliver()

    # Then the peer got one request with the value's url and method, the vault's header and the call's params
    assert answer == {"batchItemFailures": []}
    assert len(peer.requests) == 1
    sent = peer.requests[0]
    assert (sent["method"], sent["path"]) == ("POST", "/items?page=2")
    assert sent["headers"]["X-Api-Key"] == SECRET
    # And the execution succeeded, with each input's source and the vault value masked
    done = rig.read(eid)
    assert (done["type"], done["status"], done["connector"]) == ("connection", "success", "api")
    assert done["input_sources"] == {"url": "value", "method": "value", "headers": "vault", "params": "call"}
    assert done["inputs"] == {
        "url": f"{peer.url}/items",
        "method": "post",
        "headers": "***",
        "params": {"page": 2},
    }
    assert done["outputs"]["status_code"] == 200
    assert done["outputs"]["body"]["headers"]["X-Api-Key"] == "***"  # the peer echoed it; it was scrubbed
    assert done["outputs"]["headers"]["X-Seen-Key"] == "***"
    assert isinstance(done["duration_ms"], int)
    # And the secret is nowhere in the stored execution, its listing, nor the function's log lines
    listed = rig.executions()
    assert SECRET not in json.dumps(done) + json.dumps(listed) + json.dumps(started.body)
    logs = formatted(caplog)
    assert "All 1 records successfully processed" in logs  # the runner's log lines were captured
    assert SECRET not in logs


def test_a_flow_using_a_connector_with_a_vault_secret_never_sees_or_stores_it(
    rig: Rig, peer: Peer, caplog: pytest.LogCaptureFixture
):
    # Given a flow that calls the connector and logs everything it can see of the child
    _stock_connector(rig.connectors, rig.tenant, peer.url)
    verbose_logs(caplog)
    eid = rig.start(
        "uses-api",
        "def handler(system, this):\n"
        "    child = this.connect('api', json={'q': 1})\n"
        "    this.log(child.get('inputs'))\n"
        "    this.log(child.get('output_value'))\n"
        "    this.log(system.connector('api'))\n"
        "    this.log(system.secret_names())\n"
        "    return {'child': child.get('output_value'), 'id': child.id}\n",
    )

    # When it runs
    answer, _ = rig.deliver()

    # Then the connection used the secret, and the flow and its child succeeded
    assert answer == {"batchItemFailures": []}
    assert [r["headers"].get("X-Api-Key") for r in peer.requests] == [SECRET]
    done = rig.read(eid)
    assert done["status"] == "success", done
    child = rig.read(done["outputs"]["id"])
    assert (child["status"], child["parent"], child["root"]) == ("success", eid, eid)
    assert child["input_sources"] == {"url": "value", "method": "value", "headers": "vault", "json": "call"}
    assert child["inputs"]["headers"] == "***"
    assert '["api-key"]' in done["log"]
    # And the secret is in neither execution, nor the log lines
    logs = formatted(caplog)
    assert "All 1 records successfully processed" in logs
    assert SECRET not in json.dumps(done) + json.dumps(child) + logs


def test_a_failed_connection_ends_in_error_saying_why(rig: Rig):
    # Given a connector to a port where nothing listens
    ws = f"{A}/workspaces/{rig.tenant.workspace_id}"
    rig.connectors.call(
        "PUT",
        f"{ws}/connectors/dead",
        {"type": "REST", "value": "url: http://127.0.0.1:9/x\n"},
        token=rig.tenant.admin_token,
    )
    eid = rig.connectors.call(
        "POST", f"{ws}/connectors/dead/run", {"inputs": {"timeout": 2}}, token=rig.tenant.admin_token
    ).body["id"]

    # When it runs
    rig.deliver()

    # Then it ends error with the connector's reason
    done = rig.read(eid)
    assert done["status"] == "error"
    assert "could not connect to 127.0.0.1" in done["message"]


def test_a_connection_to_a_metadata_address_given_at_run_time_is_refused(rig: Rig):
    # Given a connector whose url comes with the call, pointed at the cloud metadata service
    ws = f"{A}/workspaces/{rig.tenant.workspace_id}"
    rig.connectors.call(
        "PUT", f"{ws}/connectors/open", {"type": "REST", "value": "{}"}, token=rig.tenant.admin_token
    )
    eid = rig.connectors.call(
        "POST",
        f"{ws}/connectors/open/run",
        {"inputs": {"url": "http://169.254.169.254/latest/meta-data/"}},
        token=rig.tenant.admin_token,
    ).body["id"]

    # When it runs
    rig.deliver()

    # Then it ends error naming the refused url
    done = rig.read(eid)
    assert done["status"] == "error"
    assert "inputs.url" in done["message"]


# ---- child flows -------------------------------------------------------------------------------------------


def test_a_child_flow_runs_and_its_parent_gets_its_outputs(rig: Rig):
    # Given a flow that doubles a number, and a parent that runs it
    rig.put_flow(
        "double",
        "def handler(system, this, inputs):\n    return {'double': inputs['n'] * 2}\n",
    )
    eid = rig.start(
        "parent",
        "def handler(system, this):\n"
        "    child = this.flow('double', n=21)\n"
        "    return {'child': child.get('output_value'), 'id': child.id, 'status': child.get('status')}\n",
    )

    # When the parent runs
    answer, records = rig.deliver()

    # Then the parent succeeded with the child's outputs, and the child ran inline (nothing else queued)
    assert answer == {"batchItemFailures": []}
    assert len(records) == 1
    done = rig.read(eid)
    assert done["status"] == "success", done
    assert done["outputs"]["child"] == {"double": 42}
    assert done["outputs"]["status"] == "success"
    child = rig.read(done["outputs"]["id"])
    assert (child["type"], child["flow"], child["status"]) == ("flow", "double", "success")
    assert (child["parent"], child["root"], child["inputs"]) == (eid, eid, {"n": 21})
    assert rig.queue.receive() == []


def test_a_remote_flow_through_a_sync_config_that_does_not_exist_fails_and_makes_no_child(rig: Rig):
    # Given a flow that starts a flow in a linked workspace
    eid = rig.start(
        "remote",
        "def handler(system, this):\n    this.flow('x', remote_workspace_name='other')\n",
    )

    # When it runs
    rig.deliver()

    # Then it ends in error naming the sync config it lacks, and no child was made
    done = rig.read(eid)
    assert done["status"] == "error"
    assert "sync config 'other' not found in this workspace" in done["message"]
    assert [e["id"] for e in rig.executions()] == [eid]


def test_a_flow_cannot_reach_another_contracts_flows_or_connectors(
    rig: Rig, api: Api, root_token: str, peer: Peer
):
    # Given a connector and a flow in A's workspace, and a flow in B's (another contract) that names them
    b = make_tenant(api, root_token, "b")
    _stock_connector(rig.connectors, rig.tenant, peer.url)
    rig.put_flow("a-only", "def handler(system, this):\n    return {'leak': True}\n")
    eid = rig.start(
        "probe",
        "def handler(system, this):\n"
        "    found = []\n"
        "    for attempt in (lambda: this.connect('api'), lambda: this.flow('a-only'),\n"
        "                    lambda: system.connector('api'), lambda: system.flow('a-only')):\n"
        "        try:\n"
        "            attempt()\n"
        "            found.append('reached')\n"
        "        except flow_api.FlowApiError as exc:\n"
        "            found.append(exc.message)\n"
        "    return {'found': found}\n",
        b,
    )

    # When it runs
    rig.deliver()

    # Then each attempt was not found, and A's connector was never called
    done = rig.read(eid, b)
    assert done["status"] == "success", done
    assert len(done["outputs"]["found"]) == 4
    assert all("not found" in text for text in done["outputs"]["found"]), done["outputs"]
    assert peer.requests == []
