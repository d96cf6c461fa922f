"""Flows, executions and connectors through the local stack, with a real HTTP peer and a real git repo."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
A = "/api/latest"

# Seed 003's examples, verbatim but for the URL, which points at the test's own HTTP server.
REST_EXAMPLE = """import flow_api
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
GIT_EXAMPLE = """import flow_api
def handler(system: flow_api.System, this: flow_api.Execution):
    metadata = this.connect('repository').get('output_value')
    this.log(metadata['date_str'])
    return this.success('all done')
"""
GIT_OVERRIDE_EXAMPLE = """import flow_api
def handler(system: flow_api.System, this: flow_api.Execution):
    metadata = this.connect('repository', ref='v2').get('output_value')
    this.log(metadata['date_str'])
    return this.success('all done')
"""


class _Echo(BaseHTTPRequestHandler):
    """Answers every POST with what it received, like httpbin.org/post."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        answer = json.dumps({"data": body, "headers": dict(self.headers), "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/post"
    server.shutdown()


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A git repository with `develop` at one commit and tag `v2` at an older one, made with dulwich."""
    from dulwich import porcelain
    from dulwich.objects import ObjectID
    from dulwich.refs import Ref
    from dulwich.repo import Repo

    path = tmp_path_factory.mktemp("repo")
    repo = Repo.init(str(path))
    shas = {}
    for i, (stamp, label) in enumerate([(1_700_000_000, "v2"), (1_750_000_000, "develop")]):
        (path / "file.txt").write_text(f"change {i}\n")
        porcelain.add(repo, [str(path / "file.txt")])
        sha = porcelain.commit(
            repo,
            message=f"commit {label}".encode(),
            author=b"Ada <ada@example.com>",
            committer=b"Ada <ada@example.com>",
            commit_timestamp=stamp,
            author_timestamp=stamp,
            commit_timezone=0,
            author_timezone=0,
        )
        shas[label] = sha.decode() if isinstance(sha, bytes) else str(sha)
    repo.refs[Ref(b"refs/tags/v2")] = ObjectID(shas["v2"].encode())
    repo.refs[Ref(b"refs/heads/develop")] = ObjectID(shas["develop"].encode())
    os_path = path.as_posix()
    # the flow runtime and the runner live in other processes: make the repository world-readable
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return {"path": os_path, **shas}


def _workspace(stack: Stack, root_token: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    cid = stack.call("POST", f"{A}/contracts", {"name": f"flows-{tag}"}, root_token).json()["id"]
    stack.call(
        "POST",
        f"{A}/contracts/{cid}/members",
        {"username": f"dev-{tag}", "password": "dev-password-123", "role": "org_admin"},
        root_token,
    )
    token = stack.login(f"dev-{tag}", "dev-password-123")
    ws = stack.call("POST", f"{A}/contracts/{cid}/workspaces", {"name": "staging"}, token).json()["id"]
    return ws, token


def _put_flow(stack: Stack, ws: str, token: str, name: str, script: str) -> None:
    answer = stack.call("PUT", f"{A}/workspaces/{ws}/flows/{name}", {"script": script}, token)
    assert answer.status_code in (200, 201), answer.text


def _run(
    stack: Stack, ws: str, token: str, flow: str, *, inputs: dict | None = None, timeout: float = 60
) -> dict:
    started = stack.call(
        "POST", f"{A}/workspaces/{ws}/executions", {"flow": flow, "inputs": inputs or {}}, token
    )
    assert started.status_code == 202, started.text
    return _wait(stack, ws, token, started.json()["id"], timeout)


def _wait(stack: Stack, ws: str, token: str, eid: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict = stack.call("GET", f"{A}/workspaces/{ws}/executions/{eid}", token=token).json()
        if body["status"] in ("success", "error", "cancelled"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"execution {eid} did not end within {timeout}s")


def _children(stack: Stack, ws: str, token: str, parent: str) -> list[dict]:
    listed = stack.call("GET", f"{A}/workspaces/{ws}/executions", token=token, params={"limit": 100}).json()
    return [
        stack.call("GET", f"{A}/workspaces/{ws}/executions/{e['id']}", token=token).json()
        for e in listed["items"]
        if e.get("parent") == parent
    ]


def test_the_rest_example_runs_unmodified(stack: Stack, root_token: str, echo_url: str):
    ws, token = _workspace(stack, root_token)
    _put_flow(stack, ws, token, "rest-example", REST_EXAMPLE.replace("https://httpbin.org/post", echo_url))
    done = _run(stack, ws, token, "rest-example")
    assert done["status"] == "success", done
    assert done["message"] == "all done"
    [child] = _children(stack, ws, token, done["id"])
    assert (child["type"], child["connector_type"], child["status"]) == ("connection", "REST", "success")
    assert child["outputs"]["status_code"] == 200
    assert child["outputs"]["body"]["data"] == "payload"
    assert "payload" in "\n".join(done["log"])


def test_the_git_examples_run_unmodified(stack: Stack, root_token: str, repository: dict[str, str]):
    ws, token = _workspace(stack, root_token)
    value = f"ref: develop\ncommand: metadata\nrepository_url: '{repository['path']}'\n"
    saved = stack.call(
        "PUT", f"{A}/workspaces/{ws}/connectors/repository", {"type": "GIT", "value": value}, token
    )
    assert saved.status_code == 201, saved.text
    _put_flow(stack, ws, token, "connector-test", GIT_EXAMPLE)
    done = _run(stack, ws, token, "connector-test")
    assert done["status"] == "success", done
    assert done["log"] == ["2025-06-15T15:06:40+00:00"]  # develop's commit time
    [child] = _children(stack, ws, token, done["id"])
    assert child["outputs"]["commit_id"] == repository["develop"]
    _put_flow(stack, ws, token, "connector-test", GIT_OVERRIDE_EXAMPLE)
    older = _run(stack, ws, token, "connector-test")
    assert older["status"] == "success", older
    assert older["log"] == ["2023-11-14T22:13:20+00:00"]  # v2's commit time
    [child] = _children(stack, ws, token, older["id"])
    assert child["input_sources"]["ref"] == "call"
    assert child["input_sources"]["repository_url"] == "value"


def test_a_flow_starts_a_child_flow_and_gets_its_outputs(stack: Stack, root_token: str):
    ws, token = _workspace(stack, root_token)
    _put_flow(
        stack,
        ws,
        token,
        "double",
        (
            "import flow_api\n"
            "def handler(system, this, inputs):\n"
            "    this.set_output('doubled', inputs['n'] * 2)\n"
            "    return this.success('doubled')\n"
        ),
    )
    _put_flow(
        stack,
        ws,
        token,
        "parent",
        (
            "import flow_api\n"
            "def handler(system, this, inputs):\n"
            "    child = this.flow('double', n=21)\n"
            "    this.set_output('from_child', child.get('output_value'))\n"
            "    return this.success('parent done')\n"
        ),
    )
    done = _run(stack, ws, token, "parent")
    assert done["status"] == "success", done
    assert done["outputs"] == {"from_child": {"doubled": 42}}
    [child] = _children(stack, ws, token, done["id"])
    assert (child["type"], child["flow"], child["status"], child["parent"]) == (
        "flow",
        "double",
        "success",
        done["id"],
    )


def test_merge_order_and_secret_redaction(stack: Stack, root_token: str, echo_url: str):
    ws, token = _workspace(stack, root_token)
    secret_value = f"s3cr3t-{uuid.uuid4().hex}"
    assert stack.call(
        "PUT",
        f"{A}/workspaces/{ws}/secrets/api",
        {"value": {"headers": {"X-Key": secret_value}, "data": "from-vault", "timeout": 20}},
        token,
    ).ok
    value = f"url: {echo_url}\nmethod: post\ndata: from-value\ntimeout: 10\n"
    saved = stack.call(
        "PUT",
        f"{A}/workspaces/{ws}/connectors/echo",
        {"type": "REST", "value": value, "secrets": ["api"]},
        token,
    )
    assert saved.status_code == 201, saved.text
    run = stack.call(
        "POST", f"{A}/workspaces/{ws}/connectors/echo/run", {"inputs": {"data": "from-call"}}, token
    )
    assert run.status_code == 202, run.text
    done = _wait(stack, ws, token, run.json()["id"])
    assert done["status"] == "success", done
    # `data` is set in all three layers: the call wins; `timeout` in two: the vault wins
    assert done["input_sources"] == {
        "url": "value",
        "method": "value",
        "data": "call",
        "timeout": "vault",
        "headers": "vault",
    }
    assert done["inputs"]["data"] == "from-call"
    assert done["inputs"]["url"] == echo_url
    assert done["outputs"]["body"]["data"] == "from-call"
    # the echo server sent the secret back; it must not be stored anywhere
    everything = json.dumps(done) + json.dumps(
        stack.call("GET", f"{A}/workspaces/{ws}/secrets", token=token).json()
    )
    assert secret_value not in everything
    assert secret_value not in stack.everything_logged()


def test_isolation_and_limits(stack: Stack, root_token: str):
    ws, token = _workspace(stack, root_token)
    _put_flow(
        stack,
        ws,
        token,
        "snoop",
        (
            "import flow_api, os\n"
            "def handler(system, this, inputs):\n"
            "    this.set_output('aws', sorted(k for k in os.environ if k.startswith('AWS')))\n"
            "    try:\n"
            "        this.set_output('parent_env', open(f'/proc/{os.getppid()}/environ').read()[:50])\n"
            "    except OSError as exc:\n"
            "        this.set_output('parent_env', type(exc).__name__)\n"
            "    try:\n"
            "        import boto3\n"
            "        this.set_output('boto3', 'imported')\n"
            "    except ImportError:\n"
            "        this.set_output('boto3', 'unavailable')\n"
            "    return this.success('looked')\n"
        ),
    )
    done = _run(stack, ws, token, "snoop")
    assert done["status"] == "success", done
    assert done["outputs"] == {"aws": [], "parent_env": "PermissionError", "boto3": "unavailable"}
    _put_flow(
        stack,
        ws,
        token,
        "spin",
        "import flow_api\ndef handler(system, this, inputs):\n    while True:\n        pass\n",
    )
    spun = _run(stack, ws, token, "spin", timeout=60)
    assert spun["status"] == "error"
    assert "limit" in spun["message"]


def test_cancelling_a_running_execution(stack: Stack, root_token: str):
    ws, token = _workspace(stack, root_token)
    _put_flow(
        stack,
        ws,
        token,
        "sleepy",
        "import flow_api, time\ndef handler(system, this, inputs):\n    time.sleep(30)\n",
    )
    eid = stack.call("POST", f"{A}/workspaces/{ws}/executions", {"flow": "sleepy"}, token).json()["id"]
    deadline = time.monotonic() + 30
    while (
        stack.call("GET", f"{A}/workspaces/{ws}/executions/{eid}", token=token).json()["status"] == "pending"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    cancelled = stack.call("POST", f"{A}/workspaces/{ws}/executions/{eid}/cancel", token=token)
    assert cancelled.json()["status"] == "cancelled"
    ended = _wait(stack, ws, token, eid, timeout=20)
    assert ended["status"] == "cancelled"
