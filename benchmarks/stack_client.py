"""A local stack (`python -m devstack`) for the benchmarks that drive its HTTP API (executions,
message_rate): a JSON client, the tenant they set up (a contract and an org_admin member), a flow, the
paginated status list, the stack's start with its log's tail on failure, and a batch's timings as polls
of the list see them, with the rows they make."""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests

from benchmarks.run import Row

HTTP_TIMEOUT_SECONDS = 30.0
ADMIN = ("bench-admin", "bench-admin-password-1")
MEMBER_PASSWORD = "bench-member-password-1"  # noqa: S105 - a throwaway local stack
FLOW_SCRIPT = "import flow_api\ndef handler(system, this, inputs):\n    return this.success('ok')\n"
A = "/api/latest"


class StackClient:
    """A small JSON client for one stack."""

    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: Any = None, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = requests.request(
            method, self.base + path, json=body, headers=headers, timeout=HTTP_TIMEOUT_SECONDS, **kw
        )
        if not answer.ok:
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text[:500]}")
        return answer.json() if answer.content else None

    def login(self, username: str, password: str) -> str:
        answer = self.call("POST", f"{A}/auth/login", {"username": username, "password": password})
        return str(answer["token"])


@dataclass(frozen=True)
class Tenant:
    admin: str  # the platform admin's token
    cid: str  # the contract
    token: str  # its org_admin member's token


def make_tenant(client: StackClient) -> Tenant:
    """Logged in as the platform admin: a contract and an org_admin member of it, logged in."""
    admin = client.login(*ADMIN)
    tag = uuid.uuid4().hex[:8]
    cid = client.call("POST", f"{A}/contracts", {"name": f"bench-{tag}"}, admin)["id"]
    member = f"bench-{tag}"
    client.call(
        "POST",
        f"{A}/contracts/{cid}/members",
        {"username": member, "password": MEMBER_PASSWORD, "role": "org_admin", "privileges": []},
        admin,
    )
    return Tenant(admin, cid, client.login(member, MEMBER_PASSWORD))


def put_flow(client: StackClient, ws: str, flow: str, token: str) -> str:
    """The trivial flow FLOW_SCRIPT as `flow` of workspace `ws`; the flow's path."""
    path = f"{A}/workspaces/{ws}/flows/{flow}"
    client.call("PUT", path, {"script": FLOW_SCRIPT}, token)
    return path


def statuses(client: StackClient, list_path: str, token: str) -> dict[str, str]:
    """Every item of a paginated list (`GET list_path`): id -> status (all pages)."""
    found: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = client.call("GET", list_path, token=token, params=params)
        found.update({item["id"]: item["status"] for item in page["items"]})
        cursor = page.get("next")
        if not cursor:
            return found


@contextmanager
def running_stack(env: Mapping[str, str] | None = None) -> Iterator[tuple[StackClient, float]]:
    """A stack on a free port, its platform admin ADMIN (plus `env`): a client for it and the seconds its
    start took. Stopped on exit; an exception inside carries the tail of the stack's log."""
    from devstack.launcher import start_stack

    with tempfile.TemporaryFile("w+") as stack_log:
        t0 = time.perf_counter()
        stack = start_stack(
            env={"FLOWGATE_ADMIN_USERNAME": ADMIN[0], "FLOWGATE_ADMIN_PASSWORD": ADMIN[1], **(env or {})},
            stderr=stack_log,
        )
        stack_start_s = time.perf_counter() - t0
        try:
            yield StackClient(stack.url), stack_start_s
        except Exception as exc:
            stack_log.seek(0)
            tail = stack_log.read()[-2000:]
            raise RuntimeError(f"{exc}\n-- the stack's log (tail) --\n{tail}") from exc
        finally:
            stack.stop()


@dataclass
class BatchPolls:
    """A batch's items as polls of their list see them: the status of every new item (not in `known`),
    and when each was first seen in a `final` status (perf_counter)."""

    known: set[str]
    final: frozenset[str]
    status: dict[str, str] = field(default_factory=dict)
    seen_final: dict[str, float] = field(default_factory=dict)

    def record(self, listed: Mapping[str, str]) -> None:
        """One poll's answer (id -> status), seen now."""
        now = time.perf_counter()
        for item_id, state in listed.items():
            if item_id in self.known:
                continue
            self.status[item_id] = state
            if state in self.final:
                self.seen_final.setdefault(item_id, now)

    def timings(self, posted: list[tuple[str, float, float]]) -> dict[str, Any]:
        """The raw timings of the batch `posted` ((id, POST sent, POST answered) each)."""
        sent = {item_id: t for item_id, t, _ in posted}
        return {
            "sent": sent,
            "first_post": min(sent.values()),
            "posts_done": max(answered for _, _, answered in posted),
            "seen_final": {item_id: t for item_id, t in self.seen_final.items() if item_id in sent},
            "status": self.status,
        }


def count_by_status(m: Mapping[str, Any]) -> dict[str, int]:
    """How many items of the batch ended in each status (`missing`: never listed)."""
    by_status: dict[str, int] = {}
    for item_id in m["sent"]:
        state = m["status"].get(item_id, "missing")
        by_status[state] = by_status.get(state, 0) + 1
    return by_status


def throughput_row(
    subject: str, m: Mapping[str, Any], stack_start_s: float, poll_seconds: float, at_key: str
) -> Row:
    """Items seen final per second from the first POST; `at_key`: the note listing when each was."""
    seen: dict[str, float] = m["seen_final"]
    span = max(seen.values()) - m["first_post"]
    return Row(
        subject,
        {"n": len(seen), "seconds": span, "per_s": len(seen) / span},
        notes={
            "stack_start_s": round(stack_start_s, 2),
            "poll_seconds": poll_seconds,
            "posts_done_at_s": round(m["posts_done"] - m["first_post"], 3),
            # seconds after the first POST at which each item was first seen final
            at_key: sorted(round(t - m["first_post"], 3) for t in seen.values()),
        },
    )


def post_phase_row(subject: str, m: Mapping[str, Any]) -> Row:
    """POSTs answered per second, from the first sent to the last answered."""
    post_span = m["posts_done"] - m["first_post"]
    return Row(subject, {"n": len(m["sent"]), "seconds": post_span, "per_s": len(m["sent"]) / post_span})


def latency_row(subject: str, latencies: list[float]) -> Row:
    return Row(
        subject,
        {
            "n": len(latencies),
            "median_ms": statistics.median(latencies),
            "min_ms": min(latencies),
            "max_ms": max(latencies),
        },
        notes={"latencies_ms": [round(x, 1) for x in sorted(latencies)]},
    )
