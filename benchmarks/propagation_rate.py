"""Artifacts propagated per second between two local stacks (seed 004's `propagate`, end to end).

Two stacks are started on free ports, side by side (`devstack.launcher.start_stack`, as
tests/e2e/test_propagation_e2e.py does). In each, the platform admin creates a contract, an org_admin
member and a full workspace (a site): "staging" in A, "production" in B. A gets ARTIFACTS custom
commands (`PUT /admin/v2/sites/{site}/custom-commands/{id}`) and ARTIFACTS flows (the native
`PUT /workspaces/{ws}/flows/{name}`, shown as awe-tasks). The client logs in to A the EFT way
(`POST /admin/v1/authentication`) and, from one thread, calls JSON-RPC `propagate` on each artifact's
path with B as the target (`http://127.0.0.1:<port>`), one artifact per call, the next call when the
previous answered. Each call is the whole seed 004 path: A logs in to B, lists B's sites to find
"production", reads the artifact there and PUTs it by the same id. `warmup` calls (not recorded) go
first. It reports, per phase, artifacts per second and the latency of a call:

* custom commands created on B, then the same commands again unchanged (read and compared, not
  written), then changed on A (PATCH) and replaced on B;
* flows created on B (a flow's PUT checks its script and run-time variables);
* many in one call: one `propagate` on `POST /admin/v2/sites/{site}/propagations` carrying
  MANY artifacts (one login to B for all of them), when the deployment has that call; otherwise a row
  says it is not built rather than a figure.

Every call must answer `success` (or `unchanged` in that phase): anything else is an ERROR row. Both
stacks, their moto servers and the client share this machine's CPUs. One batch (`--rounds` does not
repeat it); under a minute with the stacks' start.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import requests

if __package__ in {None, ""}:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import Options, Row
from benchmarks.stack_client import (
    ADMIN,
    HTTP_TIMEOUT_SECONDS,
    MEMBER_PASSWORD,
    A,
    StackClient,
    make_tenant,
)

if TYPE_CHECKING:
    from devstack.launcher import StackProcess

ARTIFACTS = 30  # per kind, one call each
MANY = 50  # the most artifacts one many-artifact call takes (flowgate.propagation.models)
SCHEDULE_SECONDS = "1"
JSON_API = "application/vnd.api+json"
FLOW_SCRIPT = "import flow_api\ndef handler(system, this, inputs):\n    return this.success('ok')\n"


@dataclass
class Site:
    """One stack's site: its client, workspace, name, org_admin member and EFT-style session."""

    client: StackClient
    ws: str
    name: str
    username: str
    token: str  # native bearer token
    eft: str  # EFTAdminAuthToken

    def admin(self, method: str, path: str, body: Any = None) -> requests.Response:
        headers = {"Authorization": f"EFTAdminAuthToken {self.eft}", "Content-Type": JSON_API}
        return requests.request(
            method,
            f"{self.client.base}/admin/v2/sites/{self.ws}{path}",
            data=json.dumps(body) if body is not None else None,
            headers=headers,
            timeout=HTTP_TIMEOUT_SECONDS,
        )

    def target(self) -> dict[str, str]:
        return {
            "targetEndpoint": self.client.base,
            "targetSiteName": self.name,
            "targetAdminUsername": self.username,
            "targetAdminPassword": MEMBER_PASSWORD,
        }


@contextmanager
def _two_stacks() -> Iterator[tuple[StackProcess, StackProcess, float]]:
    """Stacks A and B, started side by side, and the seconds until both listened; stopped on exit. An
    exception inside carries the tail of each stack's log."""
    from devstack.launcher import start_stack

    env = {
        "FLOWGATE_ADMIN_USERNAME": ADMIN[0],
        "FLOWGATE_ADMIN_PASSWORD": ADMIN[1],
        "FLOWGATE_LOCAL_SCHEDULE_SECONDS": SCHEDULE_SECONDS,
    }
    with ExitStack() as cleanup:
        logs: list[IO[str]] = [cleanup.enter_context(tempfile.TemporaryFile("w+")) for _ in range(2)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            starts = [pool.submit(start_stack, env=env, stderr=log) for log in logs]
        stacks = []
        for start in starts:  # stop every stack that started, even when the other did not
            if start.exception() is None:
                stack = start.result()
                cleanup.callback(stack.stop)
                stacks.append(stack)
        for start in starts:
            start.result()  # raises the failed start's error
        started_s = time.perf_counter() - t0
        try:
            yield stacks[0], stacks[1], started_s
        except Exception as exc:
            tails = []
            for name, log in zip("AB", logs, strict=True):
                log.seek(0)
                tails.append(f"-- stack {name}'s log (tail) --\n{log.read()[-1500:]}")
            raise RuntimeError("\n".join([str(exc), *tails])) from exc


def _site(client: StackClient, name: str) -> Site:
    """A contract, its org_admin member (logged in both ways) and a full workspace named `name`."""
    tenant = make_tenant(client)
    ws = client.call(
        "POST", f"{A}/contracts/{tenant.cid}/workspaces", {"name": name, "kind": "full"}, tenant.admin
    )
    username = str(client.call("GET", f"{A}/auth/me", token=tenant.token)["username"])
    login = requests.post(
        f"{client.base}/admin/v1/authentication",
        data=json.dumps({"userName": username, "password": MEMBER_PASSWORD, "authType": "EFT"}),
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    if login.status_code != 200:
        raise RuntimeError(f"EFT login: {login.status_code} {login.text[:300]}")
    return Site(client, str(ws["id"]), name, username, tenant.token, str(login.json()["authToken"]))


def _commands(site: Site, count: int, tag: str) -> list[str]:
    ids = []
    for n in range(count):
        command_id = str(uuid.uuid4())
        body = {
            "data": {"type": "customCommand", "attributes": {"name": f"{tag}-{n}", "executable": f"/opt/{n}"}}
        }
        made = site.admin("PUT", f"/custom-commands/{command_id}", body)
        if made.status_code != 201:
            raise RuntimeError(f"PUT command: {made.status_code} {made.text[:300]}")
        ids.append(command_id)
    return ids


def _flows(site: Site, count: int, tag: str) -> list[str]:
    return [
        str(
            site.client.call(
                "PUT", f"{A}/workspaces/{site.ws}/flows/{tag}-{n}", {"script": FLOW_SCRIPT}, site.token
            )["id"]
        )
        for n in range(count)
    ]


def _propagate(source: Site, target: Site, kind: str, artifact_id: str) -> tuple[float, Any]:
    """One call: its seconds and its JSON-RPC result (or the error, as a string)."""
    body = {"jsonrpc": "2.0", "method": "propagate", "id": "1", "params": target.target()}
    t0 = time.perf_counter()
    answer = source.admin("POST", f"/{kind}/{artifact_id}", body)
    seconds = time.perf_counter() - t0
    parsed = answer.json() if answer.content else {}
    return seconds, parsed.get(
        "result", f"HTTP {answer.status_code}: {json.dumps(parsed.get('error'))[:200]}"
    )


def _phase(subject: str, source: Site, target: Site, kind: str, ids: list[str], *, expected: str) -> Row:
    t0 = time.perf_counter()
    calls = [_propagate(source, target, kind, artifact_id) for artifact_id in ids]
    span = time.perf_counter() - t0
    latencies = [seconds * 1000 for seconds, _ in calls]
    results = [result for _, result in calls]
    wrong = [r for r in results if r != expected]
    return Row(
        subject,
        {
            "n": len(ids),
            "seconds": span,
            "per_s": len(ids) / span,
            "median_ms": statistics.median(latencies),
            "max_ms": max(latencies),
        },
        "ERROR" if wrong else None,
        notes={
            "expected": expected,
            "unexpected": wrong[:5],
            "latencies_ms": [round(x, 1) for x in latencies],
        },
    )


def _many(source: Site, target: Site, ids: list[str]) -> Row:
    """One many-artifact call, or a row saying the deployment has none (then no figure is made up)."""
    body = {
        "jsonrpc": "2.0",
        "method": "propagate",
        "id": "many",
        "params": {
            "artifacts": [{"type": "customCommand", "id": i} for i in ids],
            "targets": [target.target()],
        },
    }
    t0 = time.perf_counter()
    answer = source.admin("POST", "/propagations", body)
    seconds = time.perf_counter() - t0
    subject = f"many in one call: {len(ids)} custom commands, created on B"
    if answer.status_code in (404, 405):
        return Row(subject, {"n": 0}, "NOT BUILT", notes={"answer": answer.text[:300]})
    parsed = answer.json() if answer.content else {}
    results = (parsed.get("result") or {}).get("results") if isinstance(parsed.get("result"), dict) else None
    if answer.status_code != 200 or not isinstance(results, list):
        return Row(subject, {"n": 0, "seconds": seconds}, "ERROR", notes={"answer": answer.text[:500]})
    done = [r for r in results if r.get("status") == "created"]
    return Row(
        subject,
        {"n": len(done), "seconds": seconds, "per_s": len(done) / seconds},
        None if len(done) == len(ids) else "ERROR",
        notes={"statuses": sorted({str(r.get("status")) for r in results})},
    )


def run(options: Options) -> list[Row]:
    shared = str(options.root / "shared")
    if shared not in sys.path:
        sys.path.insert(0, shared)
    with _two_stacks() as (stack_a, stack_b, started_s):
        a = _site(StackClient(stack_a.url), "staging")
        b = _site(StackClient(stack_b.url), "production")
        for artifact_id in _commands(a, options.warmup, "warmup"):
            _propagate(a, b, "custom-commands", artifact_id)
        commands = _commands(a, ARTIFACTS, "cmd")
        flows = _flows(a, ARTIFACTS, "flow")
        many = _commands(a, MANY, "many")
        rows = [
            _phase(
                "one per call: custom commands, created on B",
                a,
                b,
                "custom-commands",
                commands,
                expected="success",
            ),
            _phase(
                "one per call: custom commands, unchanged on B",
                a,
                b,
                "custom-commands",
                commands,
                expected="unchanged",
            ),
        ]
        for n, command_id in enumerate(commands):
            patch = {"data": {"type": "customCommand", "attributes": {"executable": f"/opt/v2/{n}"}}}
            if a.admin("PATCH", f"/custom-commands/{command_id}", patch).status_code != 200:
                raise RuntimeError("PATCH of a command failed")
        rows.append(
            _phase(
                "one per call: custom commands, replaced on B",
                a,
                b,
                "custom-commands",
                commands,
                expected="success",
            )
        )
        rows.append(
            _phase(
                "one per call: awe-tasks (flows), created on B", a, b, "awe-tasks", flows, expected="success"
            )
        )
        rows.append(_many(a, b, many))
    rows.append(Row("both stacks: launch -> listening", {"seconds": started_s}))
    return rows


if __name__ == "__main__":
    from benchmarks.run import main

    sys.exit(main(["--only", "propagation_rate", *sys.argv[1:]]))
