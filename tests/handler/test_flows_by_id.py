"""Flows by id against moto (what artifact propagation shows as an `aweTask`): create with an id,
replace as a full representation, rename, delete, the id markers' consistency under real threads, and
the run-time variables a flow's log_directory names."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from flowgate.errors import BadRequest, Conflict, NotFound
from flowgate.flows.models import PutFlowRequest
from flowgate.flows.service import FlowService, flow_text
from flowgate.flows.store import marker_key
from flowgate.wiring import container
from tests.handler.conftest import Api, Tenant, load_function

A = "/api/latest"
SCRIPT = "import flow_api\n\ndef handler(system, this, inputs):\n    return this.success('hi')\n"
FID = "0f4c6a52-5f36-4c1c-9d55-6a1f2b3c4d5e"


@pytest.fixture
def flows_api(api: Api) -> Api:
    return Api(load_function("flows"), "flows")


@pytest.fixture
def svc(api: Api) -> FlowService:
    return container().flows


def request(**fields: Any) -> PutFlowRequest:
    return PutFlowRequest.model_validate({"script": SCRIPT, **fields})


def _marker(wsid: str, flow_id: str) -> dict[str, Any] | None:
    key = marker_key(wsid, flow_id)
    return container().table.get(key["PK"], key["SK"])


def test_a_flow_is_created_with_its_id_and_found_by_it(svc: FlowService, flows_api: Api, tenants):
    a, b = tenants
    ws = a.workspace_id
    assert svc.flow_by_id(ws, FID) is None
    flow, created = svc.put_flow_by_id(ws, FID, "by-id", request(log_level="debug"), a.admin_id)
    assert created is True
    assert (flow.id, flow.name, flow.version, flow.log_level, flow.updated_by) == (
        FID,
        "by-id",
        1,
        "debug",
        a.admin_id,
    )
    assert svc.flow_by_id(ws, FID) == flow
    assert _marker(ws, FID) is not None
    # the native API sees the same flow, by name
    read = flows_api.call("GET", f"{A}/workspaces/{ws}/flows/by-id", token=a.admin_token)
    assert (read.status, read.body["id"], read.body["log_level"]) == (200, FID, "debug")
    # ids are per workspace: another workspace has no flow of that id
    assert svc.flow_by_id(b.workspace_id, FID) is None
    # flows_page answers whole flows
    page, nxt = svc.flows_page(ws, 50, None)
    assert (page, nxt) == ([flow], None)


def test_a_replace_is_a_full_representation(svc: FlowService, tenants):
    a, _ = tenants
    ws = a.workspace_id
    full = request(
        description="d",
        timeout_seconds=600,
        log_level="error",
        log_directory="/var/log/flows",
        retain_successful_logs=True,
        retain_failed_logs=False,
    )
    first, _ = svc.put_flow_by_id(ws, FID, "full", full, a.admin_id)
    # the same content again is no new version
    same, created = svc.put_flow_by_id(ws, FID, "full", full, a.admin_id)
    assert (created, same.version, same) == (False, 1, first)
    # fields missing from the request take their defaults, not their current values
    replaced, created = svc.put_flow_by_id(ws, FID, "full", request(), a.admin_id)
    assert created is False
    assert replaced.version == 2
    assert replaced.id == FID
    assert replaced.model_dump(
        include={
            "description",
            "timeout_seconds",
            "log_level",
            "log_directory",
            "retain_successful_logs",
            "retain_failed_logs",
        }
    ) == {
        "description": None,
        "timeout_seconds": None,
        "log_level": "info",
        "log_directory": None,
        "retain_successful_logs": False,
        "retain_failed_logs": True,
    }
    assert svc.flow_by_id(ws, FID) == replaced
    stored = container().flow_store.get_flow(ws, "full")
    assert stored is not None
    assert "description" not in stored
    assert "log_directory" not in stored


def test_a_rename_keeps_the_id_and_moves_the_name(svc: FlowService, flows_api: Api, tenants):
    a, _ = tenants
    ws = a.workspace_id
    svc.put_flow_by_id(ws, FID, "old-name", request(), a.admin_id)
    renamed, created = svc.put_flow_by_id(ws, FID, "new-name", request(), a.admin_id)
    assert (created, renamed.id, renamed.name, renamed.version) == (False, FID, "new-name", 2)
    assert svc.flow_by_id(ws, FID) == renamed
    assert _marker(ws, FID) == {**marker_key(ws, FID), "id": FID, "name": "new-name"}
    path = f"{A}/workspaces/{ws}/flows"
    assert flows_api.call("GET", f"{path}/old-name", token=a.admin_token).status == 404
    new = flows_api.call("GET", f"{path}/new-name", token=a.admin_token)
    assert (new.status, new.body["id"], new.body["version"]) == (200, FID, 2)
    listed = flows_api.call("GET", path, token=a.admin_token).body["items"]
    assert [(f["name"], f["id"]) for f in listed] == [("new-name", FID)]
    # the old name is free again
    other, created = svc.put_flow_by_id(ws, "another-id", "old-name", request(), a.admin_id)
    assert (created, other.name) == (True, "old-name")


def test_a_name_used_by_another_flow_is_a_conflict(svc: FlowService, flows_api: Api, tenants):
    a, _ = tenants
    ws = a.workspace_id
    native = flows_api.call(
        "PUT", f"{A}/workspaces/{ws}/flows/taken", {"script": SCRIPT}, token=a.admin_token
    )
    assert native.status == 201
    with pytest.raises(Conflict) as on_create:
        svc.put_flow_by_id(ws, FID, "taken", request(), a.admin_id)
    assert on_create.value.code == "name_taken"
    assert svc.flow_by_id(ws, FID) is None
    assert _marker(ws, FID) is None
    svc.put_flow_by_id(ws, FID, "mine", request(), a.admin_id)
    with pytest.raises(Conflict) as on_rename:
        svc.put_flow_by_id(ws, FID, "taken", request(description="x"), a.admin_id)
    assert on_rename.value.code == "name_taken"
    mine = svc.flow_by_id(ws, FID)
    assert mine is not None
    assert (mine.name, mine.version, mine.description) == ("mine", 1, None)
    # the native flow is found by its own id (its PUT wrote its marker)
    found = svc.flow_by_id(ws, native.body["id"])
    assert found is not None
    assert found.name == "taken"


def test_a_rename_of_an_active_flow_is_refused(svc: FlowService, flows_api: Api, tenants):
    a, _ = tenants
    ws = a.workspace_id
    svc.put_flow_by_id(ws, FID, "live", request(), a.admin_id)
    path = f"{A}/workspaces/{ws}/flows/live"
    assert flows_api.call("POST", f"{path}/activate", token=a.admin_token).status == 200
    with pytest.raises(Conflict) as refused:
        svc.put_flow_by_id(ws, FID, "renamed", request(), a.admin_id)
    assert refused.value.code == "flow_active"
    with pytest.raises(Conflict) as not_deleted:
        svc.delete_flow_by_id(ws, FID)
    assert not_deleted.value.code == "flow_active"
    # its content may change while it is active (as through the native PUT), its name may not
    changed, _ = svc.put_flow_by_id(ws, FID, "live", request(description="new"), a.admin_id)
    assert (changed.name, changed.version) == ("live", 2)
    assert flows_api.call("GET", path, token=a.admin_token).body["status"] == "active"
    assert flows_api.call("POST", f"{path}/deactivate", token=a.admin_token).status == 200
    renamed, _ = svc.put_flow_by_id(ws, FID, "renamed", request(), a.admin_id)
    assert renamed.name == "renamed"


def test_delete_by_id_and_unknown_ids(svc: FlowService, flows_api: Api, tenants):
    a, _ = tenants
    ws = a.workspace_id
    with pytest.raises(NotFound):
        svc.delete_flow_by_id(ws, FID)
    svc.put_flow_by_id(ws, FID, "doomed", request(), a.admin_id)
    svc.delete_flow_by_id(ws, FID)
    assert svc.flow_by_id(ws, FID) is None
    assert _marker(ws, FID) is None
    assert flows_api.call("GET", f"{A}/workspaces/{ws}/flows/doomed", token=a.admin_token).status == 404
    with pytest.raises(NotFound):
        svc.delete_flow_by_id(ws, FID)
    # the native DELETE removes the marker too
    made = flows_api.call("PUT", f"{A}/workspaces/{ws}/flows/native", {"script": SCRIPT}, token=a.admin_token)
    assert _marker(ws, made.body["id"]) is not None
    assert flows_api.call("DELETE", f"{A}/workspaces/{ws}/flows/native", token=a.admin_token).status == 204
    assert _marker(ws, made.body["id"]) is None
    assert svc.flow_by_id(ws, made.body["id"]) is None


@pytest.mark.parametrize(("flow_id", "name"), [("a/b", "ok"), ("", "ok"), ("x" * 129, "ok"), (FID, "a b")])
def test_bad_ids_and_names_are_400(svc: FlowService, tenants, flow_id: str, name: str):
    a, _ = tenants
    with pytest.raises(BadRequest):
        svc.put_flow_by_id(a.workspace_id, flow_id, name, request(), a.admin_id)


def test_a_bad_script_is_refused_by_id(svc: FlowService, tenants):
    a, _ = tenants
    with pytest.raises(BadRequest):
        svc.put_flow_by_id(a.workspace_id, FID, "bad", request(script="def handler(:\n"), a.admin_id)
    assert svc.flow_by_id(a.workspace_id, FID) is None


def test_a_flow_saved_before_the_markers_is_found_by_id_and_gets_its_marker(svc: FlowService, tenants):
    a, _ = tenants
    ws = a.workspace_id
    legacy = {
        "id": FID,
        "workspace_id": ws,
        "name": "legacy",
        "script": SCRIPT,
        "version": 3,
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "updated_by": a.admin_id,
    }
    container().table.put({"PK": f"WS#{ws}", "SK": "FLOW#legacy", **legacy})
    found = svc.flow_by_id(ws, FID)
    assert found is not None
    assert (found.name, found.version, found.log_level, found.retain_failed_logs) == (
        "legacy",
        3,
        "info",
        True,
    )
    # an identical replace writes nothing; a changed one is the next version, with its marker
    assert svc.put_flow_by_id(ws, FID, "legacy", request(), a.admin_id)[0].version == 3
    assert svc.put_flow_by_id(ws, FID, "legacy", request(description="d"), a.admin_id)[0].version == 4
    assert _marker(ws, FID) == {**marker_key(ws, FID), "id": FID, "name": "legacy"}


class _Variables:
    """The variables port: defines DIR only."""

    def __init__(self) -> None:
        self.checked: list[tuple[str, dict[str, str]]] = []

    def check(self, wsid: str, fields: Any) -> None:
        from flowgate.variables.rules import BUILTINS, UnknownVariable, references

        self.checked.append((wsid, dict(fields)))
        for field, text in fields.items():
            for name in references(text):
                if name not in {"DIR", *BUILTINS}:
                    raise UnknownVariable(name, fields=[field])


def _with_variables(variables: Any) -> FlowService:
    c = container()
    return FlowService(
        c.flow_store, c.identity, c.flows.queue, is_active=c.flows.is_active, variables=variables
    )


def test_the_log_directory_is_checked_for_variables_with_periods_as_underscores(svc: FlowService, tenants):
    a, _ = tenants
    ws = a.workspace_id
    variables = _Variables()
    checked = _with_variables(variables)
    flow, _ = checked.put_flow_by_id(
        ws, FID, "logs", request(log_directory="/logs/%DIR%/%WORKSPACE.ID%"), a.admin_id
    )
    assert flow.log_directory == "/logs/%DIR%/%WORKSPACE_ID%"  # what is stored, and checked
    assert variables.checked == [(ws, {"log_directory": "/logs/%DIR%/%WORKSPACE_ID%"})]
    with pytest.raises(BadRequest) as unknown:
        checked.put_flow_by_id(ws, FID, "logs", request(log_directory="%CONNECTION.LOCAL_IP%"), a.admin_id)
    assert unknown.value.code == "unknown_variable"
    assert "CONNECTION_LOCAL_IP" in unknown.value.message
    stored = checked.flow_by_id(ws, FID)
    assert stored is not None
    assert stored.version == 1
    # a plain percent sign is no reference
    plain, _ = checked.put_flow_by_id(ws, FID, "logs", request(log_directory="/logs/100%/x"), a.admin_id)
    assert plain.log_directory == "/logs/100%/x"


def test_the_variables_service_checks_a_log_directory(svc: FlowService, tenants):
    from flowgate.variables.models import PutVariableRequest
    from flowgate.variables.service import VariableService
    from flowgate.variables.store import VariableStore

    a, _ = tenants
    ws = a.workspace_id
    c = container()
    variables = VariableService(VariableStore(c.table), c.identity)
    checked = _with_variables(variables)
    with pytest.raises(BadRequest) as unknown:
        checked.put_flow_by_id(ws, FID, "logs", request(log_directory="/l/%SITE.DIR%"), a.admin_id)
    assert unknown.value.code == "unknown_variable"
    variables.put(ws, "SITE_DIR", PutVariableRequest(value="/srv"), a.admin_id)
    flow, created = checked.put_flow_by_id(
        ws, FID, "logs", request(log_directory="/l/%SITE.DIR%"), a.admin_id
    )
    assert (created, flow.log_directory) == (True, "/l/%SITE_DIR%")


@pytest.mark.parametrize(
    "text",
    [
        "%A.B%",
        "x%A.B.C%y",
        "%A%%B.C%",
        "100%",
        "%%",
        "% a.b %",
        "%1.x%",
        "%_.a%",
        "%a.%b.c%",
        "%" + "a." * 70 + "%",
    ],
)
def test_flow_text_reads_references_as_the_variables_context_does(text: str):
    from flowgate.variables import rules

    assert flow_text(text) == rules.flow_text(text)


def _race(count: int, attempt: Any) -> list[Any]:
    start = threading.Barrier(count)
    outcomes: list[Any] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        start.wait()
        try:
            outcome: Any = attempt(i)
        except Exception as exc:  # the outcome under test
            outcome = exc
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    return outcomes


@pytest.fixture
def all_read_first(svc: FlowService, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every racer looks the id up before any of them writes: all of them take the create path."""
    real = svc.store.flow_by_id
    read = threading.Barrier(8, timeout=30)
    calls = iter(range(8))  # the racers' first lookups only (next() is atomic under the GIL)

    def lookup(wsid: str, flow_id: str) -> Any:
        found = real(wsid, flow_id)
        if next(calls, None) is not None:
            read.wait()
        return found

    monkeypatch.setattr(svc.store, "flow_by_id", lookup)


def _one_created_rest_409(outcomes: list[Any]) -> Any:
    created = [o for o in outcomes if isinstance(o, tuple)]
    assert len(created) == 1, outcomes
    assert created[0][1] is True
    assert sum(isinstance(o, Conflict) for o in outcomes) == 7, outcomes
    return created[0][0]


def test_concurrent_creates_of_one_id_create_exactly_one(
    svc: FlowService, tenants: tuple[Tenant, Tenant], atomic_writes: None, all_read_first: None
):
    a, _ = tenants
    ws = a.workspace_id
    outcomes = _race(8, lambda i: svc.put_flow_by_id(ws, FID, f"name-{i}", request(), a.admin_id))
    winner = _one_created_rest_409(outcomes)
    assert all(o.code == "flow_changed" for o in outcomes if isinstance(o, Conflict))
    page, _ = svc.flows_page(ws, 50, None)
    assert [(f.id, f.name) for f in page] == [(FID, winner.name)]
    assert svc.flow_by_id(ws, FID) == winner


def test_concurrent_creates_of_one_name_create_exactly_one(
    svc: FlowService, tenants: tuple[Tenant, Tenant], atomic_writes: None, all_read_first: None
):
    a, _ = tenants
    ws = a.workspace_id
    ids = [f"flow-{i}" for i in range(8)]
    outcomes = _race(8, lambda i: svc.put_flow_by_id(ws, ids[i], "shared", request(), a.admin_id))
    winner = _one_created_rest_409(outcomes)
    assert all(o.code == "name_taken" for o in outcomes if isinstance(o, Conflict))
    page, _ = svc.flows_page(ws, 50, None)
    assert [(f.id, f.name) for f in page] == [(winner.id, "shared")]
    assert [i for i in ids if svc.flow_by_id(ws, i) is not None] == [winner.id]
    assert [i for i in ids if _marker(ws, i) is not None] == [winner.id]


def test_racing_puts_of_one_id_without_a_head_start_leave_one_consistent_flow(
    svc: FlowService, tenants: tuple[Tenant, Tenant], atomic_writes: None
):
    # Without the lookups lined up, a racer may read after the winner's create and rename it (a PUT of
    # the id with another name); either way exactly one flow is created and the id finds it
    a, _ = tenants
    ws = a.workspace_id
    outcomes = _race(8, lambda i: svc.put_flow_by_id(ws, FID, f"name-{i}", request(), a.admin_id))
    assert sum(isinstance(o, tuple) and o[1] for o in outcomes) == 1, outcomes
    assert all(isinstance(o, tuple | Conflict) for o in outcomes), outcomes
    page, _ = svc.flows_page(ws, 50, None)
    assert [f.id for f in page] == [FID]
    assert svc.flow_by_id(ws, FID) == page[0]
    assert _marker(ws, FID) == {**marker_key(ws, FID), "id": FID, "name": page[0].name}
