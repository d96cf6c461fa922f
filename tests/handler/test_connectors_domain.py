"""The connectors domain against moto (DynamoDB table from template.yaml, Secrets Manager): connectors and
vault secrets through `ConnectorService`, and a connection prepared and executed against a local HTTP
server that echoes the secret back."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import boto3
import pytest

from flowgate import wiring
from flowgate.bridges import ConnectorCalls
from flowgate.connectors.merge import MASK
from flowgate.connectors.models import PutConnectorRequest, PutSecretRequest
from flowgate.connectors.runtime import ConnectorError, RunContext
from flowgate.connectors.service import ConnectorService
from flowgate.connectors.store import ConnectorStore
from flowgate.connectors.vault import Vault
from flowgate.db import Table
from flowgate.errors import BadRequest, Conflict, NotFound, PreconditionFailed
from flowgate.identity.ports import Directory
from flowgate.url_guard import OutboundPolicy
from flowgate.variables.models import PutVariableRequest
from flowgate.variables.service import VariableService
from flowgate.variables.store import VariableStore
from flowgate.wiring import container
from tests.unit.test_connectors_git import build_sample
from tests.unit.test_connectors_rest import serve_echo

WS, OTHER_WS = "ws-1111", "ws-2222"
ACTOR = "user-1"
SECRET = "s3cr3t-Value-42"
LOCAL = RunContext(outbound_policy=OutboundPolicy.from_allow_list("127.0.0.0/8,::1"), allow_local_git=True)


@pytest.fixture
def svc(aws: str) -> ConnectorService:
    return ConnectorService(ConnectorStore(Table(aws)), Vault("test"), LOCAL)


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    with serve_echo() as url:
        yield url


def rest(value: dict[str, Any] | str, secrets: list[str] | None = None, **extra: Any) -> PutConnectorRequest:
    text = value if isinstance(value, str) else json.dumps(value)
    return PutConnectorRequest(type="REST", value=text, secrets=secrets or [], **extra)


def secret(value: dict[str, Any]) -> PutSecretRequest:
    return PutSecretRequest(value=value)


def _dump(obj: Any) -> str:
    if isinstance(obj, tuple | list):
        return "[" + ",".join(_dump(o) for o in obj) + "]"
    return obj.model_dump_json() if hasattr(obj, "model_dump_json") else json.dumps(obj)


# ---- connectors --------------------------------------------------------------------------------------------


def test_put_get_replace_list_delete(svc: ConnectorService) -> None:
    yaml_text = "url: https://example.com/api\nmethod: POST  # upper case is fine\n"
    assert not svc.exists(WS, "api")
    created = svc.put_connector(WS, "api", rest(yaml_text, description="the API"), ACTOR)
    assert svc.exists(WS, "api")
    assert created.version == 1
    assert created.type == "REST"
    assert created.value == yaml_text  # the text as saved, comments included
    assert created.parsed == {"url": "https://example.com/api", "method": "POST"}
    assert created.created_by == created.updated_by == ACTOR
    assert svc.get_connector(WS, "api") == created

    replaced = svc.put_connector(WS, "api", rest({"url": "https://example.com/v2"}), "user-2")
    assert replaced.id == created.id  # the id survives a replace
    assert replaced.version == 2
    assert replaced.description is None
    assert (replaced.created_by, replaced.updated_by) == (ACTOR, "user-2")
    assert svc.get_connector(WS, "api").version == 2

    svc.put_connector(
        WS, "repo", PutConnectorRequest(type="git", value="ref: develop\ncommand: metadata\n"), ACTOR
    )
    pages: list[list[tuple[str, str]]] = []
    cursor: str | None = None
    while True:
        page, cursor = svc.list_connectors(WS, limit=1, cursor=cursor)
        pages.append([(c.name, c.type) for c in page])
        if cursor is None:
            break
    assert [p for p in pages if p] == [[("api", "REST")], [("repo", "GIT")]]

    svc.delete_connector(WS, "api")
    with pytest.raises(NotFound):
        svc.get_connector(WS, "api")
    with pytest.raises(NotFound):
        svc.delete_connector(WS, "api")


def test_if_match(svc: ConnectorService) -> None:
    svc.put_connector(WS, "api", rest({"url": "https://example.com"}), ACTOR)
    with pytest.raises(PreconditionFailed):
        svc.put_connector(WS, "api", rest({"url": "https://example.com/x"}), ACTOR, if_match=7)
    assert (
        svc.put_connector(WS, "api", rest({"url": "https://example.com/x"}), ACTOR, if_match=1).version == 2
    )
    with pytest.raises(PreconditionFailed):
        svc.put_connector(WS, "new", rest({}), ACTOR, if_match=1)
    with pytest.raises(PreconditionFailed):
        svc.delete_connector(WS, "api", if_match=1)
    svc.delete_connector(WS, "api", if_match=2)


@pytest.mark.parametrize(
    ("name", "request_", "code", "message"),
    [
        ("bad name", rest({}), "invalid_name", "a connector name is 1 to 128"),
        (
            "api",
            PutConnectorRequest(type="SOAP", value="{}"),
            "unknown_connector_type",
            "known types are GIT, REST",
        ),
        ("api", rest("- a\n- b\n"), "invalid_connector_value", "not a list"),
        ("api", rest("url: [\n"), "invalid_connector_value", "not a valid YAML or JSON document (line 2"),
        ("api", rest({"method": "fetch"}), "invalid_connector_value", "value.method: Input should be"),
        (
            "api",
            rest({"url": "http://169.254.169.254/"}),
            "url_not_allowed",
            "value.url: the host 169.254.169.254",
        ),
        (
            "api",
            rest({}, ["nope", "nada"]),
            "unknown_secret",
            "no vault secrets 'nope', 'nada' in this workspace",
        ),
    ],
)
def test_bad_connectors_are_refused_and_change_nothing(
    svc: ConnectorService, name: str, request_: PutConnectorRequest, code: str, message: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        svc.put_connector(WS, name, request_, ACTOR)
    assert caught.value.code == code
    assert message in caught.value.message
    assert svc.list_connectors(WS) == ([], None)


def test_workspaces_do_not_see_each_other(svc: ConnectorService) -> None:
    svc.put_connector(WS, "api", rest({"url": "https://example.com"}), ACTOR)
    svc.put_secret(WS, "key", secret({"token": SECRET}))
    with pytest.raises(NotFound):
        svc.get_connector(OTHER_WS, "api")
    assert svc.list_connectors(OTHER_WS) == ([], None)
    assert svc.list_secrets(OTHER_WS) == ([], None)
    with pytest.raises(BadRequest, match="no vault secret 'key' in this workspace"):
        svc.put_connector(OTHER_WS, "api", rest({}, ["key"]), ACTOR)
    with pytest.raises(NotFound):
        svc.prepare(OTHER_WS, "api", None, {})


# ---- vault secrets -----------------------------------------------------------------------------------------


def test_secrets_are_stored_in_secrets_manager_and_never_returned(svc: ConnectorService) -> None:
    info = svc.put_secret(WS, "api-key", secret({"headers": {"X-Api-Key": SECRET}, "user": "svc-user"}))
    assert (info.name, info.keys, info.version, info.used_by) == ("api-key", ["headers", "user"], 1, [])
    again = svc.put_secret(WS, "api-key", secret({"headers": {"X-Api-Key": SECRET + "-2"}}))
    assert (again.keys, again.version, again.created_at) == (["headers"], 2, info.created_at)

    stored = boto3.client("secretsmanager").get_secret_value(SecretId=f"flowgate/test/ws/{WS}/api-key")
    assert json.loads(stored["SecretString"]) == {"headers": {"X-Api-Key": SECRET + "-2"}}

    svc.put_connector(WS, "api", rest({"url": "https://example.com"}, ["api-key"]), ACTOR)
    returned = [
        info,
        again,
        svc.get_secret(WS, "api-key"),
        svc.list_secrets(WS),
        svc.get_connector(WS, "api"),
    ]
    returned += [svc.list_connectors(WS)]
    assert SECRET not in _dump(returned)
    assert "svc-user" not in _dump(returned)


def test_a_secret_in_use_cannot_be_deleted(svc: ConnectorService) -> None:
    svc.put_secret(WS, "a", secret({"token": "aaaa-1"}))
    svc.put_secret(WS, "b", secret({"token": "bbbb-2"}))
    svc.put_connector(WS, "one", rest({"url": "https://example.com"}, ["a", "b"]), ACTOR)
    svc.put_connector(WS, "two", rest({"url": "https://example.com"}, ["a"]), ACTOR)
    assert svc.get_secret(WS, "a").used_by == ["one", "two"]

    with pytest.raises(Conflict) as caught:
        svc.delete_secret(WS, "a")
    assert caught.value.status == 409
    assert caught.value.message.startswith("the vault secret 'a' is used by the connector(s) 'one', 'two'")

    svc.put_connector(WS, "one", rest({"url": "https://example.com"}, ["b"]), ACTOR)  # drops a
    svc.delete_connector(WS, "two")
    assert svc.get_secret(WS, "a").used_by == []
    assert svc.get_secret(WS, "b").used_by == ["one"]
    svc.delete_secret(WS, "a")
    with pytest.raises(NotFound):
        svc.get_secret(WS, "a")
    with pytest.raises(boto3.client("secretsmanager").exceptions.ResourceNotFoundException):
        boto3.client("secretsmanager").get_secret_value(SecretId=f"flowgate/test/ws/{WS}/a")
    # A secret of the same name can be put again right away.
    assert svc.put_secret(WS, "a", secret({"token": "new"})).version == 1


def test_the_store_refuses_a_racing_delete_of_a_secret_in_use(svc: ConnectorService) -> None:
    svc.put_secret(WS, "a", secret({"token": "aaaa-1"}))
    svc.put_connector(WS, "one", rest({"url": "https://example.com"}, ["a"]), ACTOR)
    with pytest.raises(Conflict, match="is used by a connector"):
        svc.store.delete_secret(WS, "a")  # as if the service's read had raced a connector save


def test_a_connector_cannot_list_a_secret_deleted_meanwhile(svc: ConnectorService) -> None:
    svc.put_secret(WS, "a", secret({"token": "aaaa-1"}))
    store = svc.store
    real_get_secrets = store.get_secrets

    def racing(wsid: str, names: Any) -> Any:
        found = real_get_secrets(wsid, names)
        store.delete_secret(wsid, "a")  # deleted between the check and the transaction
        return found

    store.get_secrets = racing  # type: ignore[method-assign]
    with pytest.raises(Conflict, match="the vault secret 'a' was deleted meanwhile"):
        svc.put_connector(WS, "one", rest({}, ["a"]), ACTOR)
    store.get_secrets = real_get_secrets  # type: ignore[method-assign]
    with pytest.raises(NotFound):
        svc.get_connector(WS, "one")


# ---- running a connection ----------------------------------------------------------------------------------


def test_prepare_and_execute_scrub_a_secret_the_server_echoes(svc: ConnectorService, echo: str) -> None:
    svc.put_secret(WS, "api-key", secret({"headers": {"X-Api-Key": SECRET, "X-Plain": "visible"}}))
    svc.put_secret(WS, "login", secret({"auth": {"username": "svc-user", "password": "pw-!@#"}}))
    svc.put_connector(
        WS,
        "echo",
        rest(f"url: {echo}/echo\nmethod: get\nheaders:\n  X-From-Value: yes\n", ["api-key", "login"]),
        ACTOR,
    )
    prepared = svc.prepare(WS, "echo", None, {"method": "post", "data": f"body with {SECRET}"})
    assert (prepared.type, prepared.connector_name, prepared.connector_version) == ("REST", "echo", 1)
    assert prepared.merged.sources == {
        "url": "value",
        "method": "call",
        "headers": "vault",
        "auth": "vault",
        "data": "call",
    }
    assert prepared.merged.redacted == {
        "url": f"{echo}/echo",
        "method": "post",
        "headers": MASK,
        "auth": MASK,
        "data": f"body with {MASK}",
    }
    for leaked in (SECRET, "svc-user", "pw-!@#"):  # a Prepared logged by mistake shows no secret
        assert leaked not in repr(prepared)
    outputs = svc.execute(prepared)
    assert outputs["status_code"] == 200
    echoed = outputs["body"]
    assert echoed["method"] == "POST"
    assert echoed["headers"]["X-Api-Key"] == MASK  # the server echoed the secret: scrubbed
    assert echoed["headers"]["X-Plain"] == MASK  # every string of a listed secret is treated as secret
    assert echoed["headers"]["Authorization"] == f"Basic {MASK}"  # derived from vault credentials
    assert echoed["data"] == f"body with {MASK}"
    text = json.dumps(outputs)
    for leaked in (SECRET, "svc-user", "pw-!@#"):
        assert leaked not in text
    assert "X-From-Value" not in echoed["headers"]  # the vault's headers replace the value's


def test_bare_type_and_connector_with_call_overrides(svc: ConnectorService, echo: str) -> None:
    prepared = svc.prepare(WS, None, "rest", {"url": f"{echo}/echo", "params": {"a": 1}})
    assert prepared.connector_name is None
    assert prepared.merged.sources == {"url": "call", "params": "call"}
    assert svc.execute(prepared)["body"]["args"] == {"a": "1"}

    with pytest.raises(BadRequest, match="name a connector or a connector type"):
        svc.prepare(WS, None, None, {})
    svc.put_connector(WS, "echo", rest({"url": f"{echo}/echo"}), ACTOR)
    with pytest.raises(BadRequest, match="the connector 'echo' is of type REST, not GIT"):
        svc.prepare(WS, "echo", "GIT", {})


def test_prepare_validates_the_merged_inputs(svc: ConnectorService) -> None:
    svc.put_connector(WS, "partial", rest({"method": "post"}), ACTOR)  # url to come from the call
    with pytest.raises(BadRequest) as caught:
        svc.prepare(WS, "partial", None, {})
    assert caught.value.code == "invalid_connector_inputs"
    assert caught.value.message == "inputs.url: Field required"
    with pytest.raises(BadRequest, match=r"inputs\.timeout: Input should be a valid number"):
        svc.prepare(WS, "partial", None, {"url": "https://example.com", "timeout": "soon"})
    with pytest.raises(
        BadRequest, match=re.escape("inputs.url: the host 169.254.169.254 is the cloud metadata address")
    ):
        svc.prepare(WS, "partial", None, {"url": "http://169.254.169.254/"})
    with pytest.raises(NotFound):
        svc.prepare(WS, "absent", None, {})


def test_seed_git_connector_with_an_override(svc: ConnectorService, tmp_path: Path) -> None:
    sample = build_sample(tmp_path)
    value = f"ref: develop\ncommand: metadata\nrepository_url: '{sample.path}'\n"
    svc.put_connector(WS, "repository", PutConnectorRequest(type="GIT", value=value), ACTOR)
    assert svc.execute(svc.prepare(WS, "repository", None, {}))["commit_id"] == sample.first
    assert svc.execute(svc.prepare(WS, "repository", None, {"ref": "HEAD"}))["commit_id"] == sample.second


def test_failures_are_connector_errors_with_scrubbed_messages(svc: ConnectorService) -> None:
    svc.put_secret(WS, "target", secret({"url": "http://127.0.0.1:9/secret-path-" + SECRET}))
    svc.put_connector(WS, "dead", rest({}, ["target"]), ACTOR)
    prepared = svc.prepare(WS, "dead", None, {"timeout": 2})
    with pytest.raises(ConnectorError) as caught:
        svc.execute(prepared)
    assert caught.value.message == "could not connect to 127.0.0.1: Connection refused"
    assert SECRET not in str(caught.value)

    svc.put_secret(WS, "meta", secret({"url": "http://169.254.169.254/" + SECRET}))
    svc.put_connector(WS, "meta", rest({}, ["meta"]), ACTOR)
    with pytest.raises(BadRequest) as refused:
        svc.prepare(WS, "meta", None, {})
    assert SECRET not in refused.value.message


def test_a_secret_listed_but_gone_from_secrets_manager_is_reported(svc: ConnectorService) -> None:
    svc.put_secret(WS, "a", secret({"url": "https://example.com"}))
    svc.put_connector(WS, "one", rest({}, ["a"]), ACTOR)
    boto3.client("secretsmanager").delete_secret(
        SecretId=f"flowgate/test/ws/{WS}/a", ForceDeleteWithoutRecovery=True
    )
    with pytest.raises(Conflict, match="the vault secret 'a' has no value; put it again"):
        svc.prepare(WS, "one", None, {})


def test_composition_root_reads_the_settings(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGE", "qa")
    monkeypatch.setenv("OUTBOUND_ALLOW_LIST", "127.0.0.0/8")
    monkeypatch.setenv("FLOWGATE_LOCAL", "1")
    wiring.install(None)  # a new container process reads the environment
    service = container().connectors
    assert service.store.table.name == aws
    assert service.vault.secret_id("w", "n") == "flowgate/qa/ws/w/n"
    assert service.ctx.allow_local_git is True
    assert service.ctx.outbound_policy == OutboundPolicy.from_allow_list("127.0.0.0/8")
    service.put_secret(WS, "k", secret({"token": "t"}))
    assert [s.name for s in service.list_secrets(WS)[0]] == ["k"]


# ---- run-time variables in a connector's value -------------------------------------------------------------


class _Names:
    """identity.ports.Directory's workspace_name, for a variables service without the identity context."""

    def workspace_name(self, wsid: str) -> str | None:
        return {WS: "staging", OTHER_WS: "production"}.get(wsid)


@pytest.fixture
def variables(aws: str) -> VariableService:
    return VariableService(VariableStore(Table(aws)), cast(Directory, _Names()))


@pytest.fixture
def vsvc(aws: str, variables: VariableService) -> ConnectorService:
    return ConnectorService(ConnectorStore(Table(aws)), Vault("test"), LOCAL, variables=variables)


def _var(variables: VariableService, wsid: str, name: str, value: str) -> None:
    variables.put(wsid, name, PutVariableRequest(value=value), ACTOR)


def test_a_value_naming_an_unknown_variable_is_refused_naming_field_and_variable(
    vsvc: ConnectorService,
) -> None:
    with pytest.raises(BadRequest) as caught:
        vsvc.put_connector(
            WS, "api", rest({"url": "https://%API_HOST%/v1", "headers": {"X": "%ENV%"}}), ACTOR
        )
    assert (caught.value.status, caught.value.code) == (400, "unknown_variable")
    assert caught.value.message == (
        "value.url names the run-time variable %API_HOST%, which workspace 'staging' does not define; "
        "value.headers.X names the run-time variable %ENV%, which workspace 'staging' does not define"
    )
    assert caught.value.names == ["API_HOST", "ENV"]  # type: ignore[attr-defined]
    assert caught.value.fields == ["value.url", "value.headers.X"]  # type: ignore[attr-defined]
    assert vsvc.list_connectors(WS) == ([], None)


def test_a_value_is_validated_with_the_variables_substituted_and_saved_as_written(
    vsvc: ConnectorService, variables: VariableService
) -> None:
    _var(variables, WS, "API_HOST", "api.example.com")
    saved = vsvc.put_connector(WS, "api", rest({"url": "https://%API_HOST%/v1"}), ACTOR)
    assert saved.parsed == {"url": "https://%API_HOST%/v1"}
    assert "%API_HOST%" in saved.value
    # Validation sees the real URL: a variable pointing at the metadata address is refused
    _var(variables, WS, "BAD_HOST", "169.254.169.254")
    with pytest.raises(BadRequest) as caught:
        vsvc.put_connector(WS, "meta", rest({"url": "http://%BAD_HOST%/latest/"}), ACTOR)
    assert caught.value.code == "url_not_allowed"
    # and a value that is no URL once substituted is refused
    _var(variables, WS, "TIMEOUT_HOST", "not a url")
    with pytest.raises(BadRequest):
        vsvc.put_connector(WS, "bad", rest({"url": "%TIMEOUT_HOST%"}), ACTOR)


def test_prepare_substitutes_per_workspace_and_built_ins(
    vsvc: ConnectorService, variables: VariableService, echo: str
) -> None:
    port = echo.rsplit(":", 1)[1]
    _var(variables, WS, "API_HOST", f"127.0.0.1:{port}")
    _var(variables, OTHER_WS, "API_HOST", f"localhost:{port}")
    value = {"url": "http://%API_HOST%/echo", "params": {"ws": "%WORKSPACE_ID%", "n": "%WORKSPACE_NAME%"}}
    for wsid in (WS, OTHER_WS):
        vsvc.put_connector(wsid, "api", rest(value), ACTOR)
    one = vsvc.prepare(WS, "api", None, {}, execution_id="exec-1")
    two = vsvc.prepare(OTHER_WS, "api", None, {})
    assert one.merged.inputs["url"] == f"http://127.0.0.1:{port}/echo"
    assert two.merged.inputs["url"] == f"http://localhost:{port}/echo"
    assert one.merged.redacted["params"] == {"ws": WS, "n": "staging"}  # recorded as substituted
    assert two.merged.inputs["params"] == {"ws": OTHER_WS, "n": "production"}
    assert vsvc.execute(one)["body"]["args"] == {"ws": WS, "n": "staging"}
    assert vsvc.get_connector(WS, "api").parsed == value  # the stored value is untouched


def test_execution_id_has_a_value_only_in_a_run(vsvc: ConnectorService, echo: str) -> None:
    vsvc.put_connector(WS, "api", rest({"url": f"{echo}/echo", "params": {"run": "%EXECUTION_ID%"}}), ACTOR)
    prepared = vsvc.prepare(WS, "api", None, {}, execution_id="exec-42")
    assert prepared.merged.inputs["params"] == {"run": "exec-42"}
    with pytest.raises(BadRequest) as caught:
        vsvc.prepare(WS, "api", None, {})
    assert caught.value.code == "unknown_variable"
    assert "value.params.run names %EXECUTION_ID%" in caught.value.message


def test_only_the_value_is_substituted(vsvc: ConnectorService, variables: VariableService, echo: str) -> None:
    _var(variables, WS, "X", "substituted")
    vsvc.put_secret(WS, "cred", secret({"headers": {"X-Secret": "%X%"}}))
    vsvc.put_connector(WS, "api", rest({"url": f"{echo}/echo", "data": "%X%"}, ["cred"]), ACTOR)
    prepared = vsvc.prepare(WS, "api", None, {"params": {"call": "%X%"}})
    assert prepared.merged.inputs["data"] == "substituted"
    assert prepared.merged.inputs["headers"] == {"X-Secret": "%X%"}  # vault secrets as they are
    assert prepared.merged.inputs["params"] == {"call": "%X%"}  # call inputs as they are


def test_a_variable_deleted_since_the_save_fails_the_run_clearly(
    vsvc: ConnectorService, variables: VariableService
) -> None:
    _var(variables, WS, "API_HOST", "api.example.com")
    vsvc.put_connector(WS, "api", rest({"url": "https://%API_HOST%/v1"}), ACTOR)
    variables.delete(WS, "API_HOST")
    with pytest.raises(BadRequest) as caught:
        vsvc.prepare(WS, "api", None, {})
    assert caught.value.code == "unknown_variable"
    assert caught.value.message == (
        "value.url names the run-time variable %API_HOST%, which workspace 'staging' does not define"
    )
    # and through the runner's bridge, it is the execution's error, not a crash
    run = ConnectorCalls(vsvc, LOCAL).run(WS, "api", None, {}, seconds=5, merged=lambda _: None)
    assert run.error == caught.value.message


# ---- connectors by id --------------------------------------------------------------------------------------


CID = "4b0f4a52-7d8e-4f7e-9c2a-1f6f3d1e2a10"


def test_put_by_id_creates_replaces_and_renames(svc: ConnectorService) -> None:
    svc.put_secret(WS, "a", secret({"token": "aaaa-1"}))
    svc.put_secret(WS, "b", secret({"token": "bbbb-2"}))
    assert svc.connector_by_id(WS, CID) is None

    made, created = svc.put_connector_by_id(
        WS, CID, "api", rest({"url": "https://example.com"}, ["a"], description="d"), ACTOR
    )
    assert created is True
    assert (made.id, made.name, made.version, made.description) == (CID, "api", 1, "d")
    assert svc.connector_by_id(WS, CID) == made == svc.get_connector(WS, "api")
    assert svc.connector_by_id(OTHER_WS, CID) is None  # another workspace does not see it

    # Replaced as a full representation: the description it lacks is gone
    again, created = svc.put_connector_by_id(
        WS, CID, "api", rest({"url": "https://example.com/2"}, ["a"]), "u2"
    )
    assert created is False
    assert (again.version, again.description, again.created_at) == (2, None, made.created_at)

    # Renamed, listing b instead of a: the old name is gone, the secrets' users follow
    renamed, created = svc.put_connector_by_id(
        WS, CID, "api-v2", rest({"url": "https://example.com/3"}, ["b"]), "u3"
    )
    assert created is False
    assert (renamed.id, renamed.name, renamed.version) == (CID, "api-v2", 3)
    assert (renamed.created_by, renamed.updated_by) == (ACTOR, "u3")
    with pytest.raises(NotFound):
        svc.get_connector(WS, "api")
    assert svc.connector_by_id(WS, CID) == renamed == svc.get_connector(WS, "api-v2")
    assert [c.name for c in svc.list_connectors(WS)[0]] == ["api-v2"]  # markers are not listed
    assert svc.get_secret(WS, "a").used_by == []
    assert svc.get_secret(WS, "b").used_by == ["api-v2"]

    # Renamed while keeping its secret: the secret names the new name
    svc.put_connector_by_id(WS, CID, "api-v3", rest({}, ["b"]), ACTOR)
    assert svc.get_secret(WS, "b").used_by == ["api-v3"]
    with pytest.raises(Conflict) as in_use:
        svc.delete_secret(WS, "b")
    assert in_use.value.code == "secret_in_use"
    assert "'api-v3'" in in_use.value.message

    # The native PUT by name keeps the id; delete by id releases the secrets
    by_name = svc.put_connector(WS, "api-v3", rest({}, ["a", "b"]), ACTOR)
    assert (by_name.id, by_name.version) == (CID, 5)
    svc.delete_connector_by_id(WS, CID)
    assert svc.connector_by_id(WS, CID) is None
    assert svc.list_connectors(WS) == ([], None)
    assert (svc.get_secret(WS, "a").used_by, svc.get_secret(WS, "b").used_by) == ([], [])
    with pytest.raises(NotFound):
        svc.delete_connector_by_id(WS, CID)
    svc.delete_secret(WS, "a")
    # And the id can be used again
    assert svc.put_connector_by_id(WS, CID, "back", rest({}), ACTOR)[1] is True


def test_put_by_id_refuses_a_name_another_connector_has(svc: ConnectorService) -> None:
    other = svc.put_connector(WS, "taken", rest({}), ACTOR)
    with pytest.raises(Conflict) as caught:
        svc.put_connector_by_id(WS, CID, "taken", rest({"url": "https://example.com"}), ACTOR)
    assert caught.value.status == 409
    assert "a connector named 'taken' already exists" in caught.value.message
    assert svc.connector_by_id(WS, CID) is None
    svc.put_connector_by_id(WS, CID, "mine", rest({}), ACTOR)
    with pytest.raises(Conflict):  # nor may a rename take it
        svc.put_connector_by_id(WS, CID, "taken", rest({}), ACTOR)
    assert svc.get_connector(WS, "taken") == other
    assert svc.connector_by_id(WS, CID).name == "mine"  # type: ignore[union-attr]


def test_the_store_refuses_a_rename_onto_a_name_taken_meanwhile(svc: ConnectorService) -> None:
    svc.put_connector_by_id(WS, CID, "mine", rest({}), ACTOR)
    store = svc.store
    real_get = store.get_connector

    def racing(wsid: str, name: str) -> Any:
        found = real_get(wsid, name)
        if name == "taken" and found is None:
            store.get_connector = real_get  # type: ignore[method-assign]
            svc.put_connector(WS, "taken", rest({}), ACTOR)  # created between the check and the write
        return found

    store.get_connector = racing  # type: ignore[method-assign]
    with pytest.raises(Conflict, match="a connector named 'taken' already exists"):
        svc.put_connector_by_id(WS, CID, "taken", rest({}), ACTOR)
    store.get_connector = real_get  # type: ignore[method-assign]
    assert svc.connector_by_id(WS, CID).name == "mine"  # type: ignore[union-attr]
    assert svc.get_connector(WS, "taken").id != CID


def test_bad_ids_and_names_are_400(svc: ConnectorService) -> None:
    for cid, name, code in (
        ("bad id", "ok", "invalid_id"),
        ("", "ok", "invalid_id"),
        (CID, "bad name", "invalid_name"),
    ):
        with pytest.raises(BadRequest) as caught:
            svc.put_connector_by_id(WS, cid, name, rest({}), ACTOR)
        assert caught.value.code == code
    with pytest.raises(BadRequest):
        svc.connector_by_id(WS, "x" * 200)


def test_a_connector_saved_before_the_id_markers_is_found_and_moved_over(
    svc: ConnectorService, aws: str
) -> None:
    # Given a connector and its secret as they were stored before the markers: used_by holds names
    svc.put_secret(WS, "a", secret({"token": "aaaa-1"}))
    now = "2024-01-01T00:00:00Z"
    legacy = {
        "PK": f"WS#{WS}",
        "SK": "CONNECTOR#old",
        "GSI1PK": f"CONNECTOR#{CID}",
        "GSI1SK": f"WS#{WS}",
        "entity": "connector",
        "id": CID,
        "workspace_id": WS,
        "name": "old",
        "type": "REST",
        "value": "{}",
        "parsed_json": "{}",
        "secrets": ["a"],
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    table = Table(aws)
    table.put(legacy)
    table.update({"PK": f"WS#{WS}", "SK": "SECRET#a"}, "ADD used_by :c", values={":c": {"old"}})
    assert svc.get_secret(WS, "a").used_by == ["old"]
    with pytest.raises(Conflict, match="'old'"):
        svc.delete_secret(WS, "a")
    with pytest.raises(Conflict, match="is used by a connector"):
        svc.store.delete_secret(WS, "a")

    # When it is found by id and renamed
    assert svc.connector_by_id(WS, CID).name == "old"  # type: ignore[union-attr]
    renamed, created = svc.put_connector_by_id(WS, CID, "new", rest({}, ["a"]), ACTOR)

    # Then it has its marker and the secret counts it by id
    assert (created, renamed.version) == (False, 2)
    raw = table.get(f"WS#{WS}", "SECRET#a")
    assert raw is not None
    assert ("used_by" not in raw, raw["used_by_ids"]) == (True, [CID])
    assert table.get(f"WS#{WS}", f"CONNECTORID#{CID}")["name"] == "new"  # type: ignore[index]
    assert svc.get_secret(WS, "a").used_by == ["new"]
    svc.delete_connector(WS, "new")
    assert svc.get_secret(WS, "a").used_by == []
    assert table.get(f"WS#{WS}", f"CONNECTORID#{CID}") is None


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
        thread.join()
    return outcomes


def test_concurrent_creates_of_one_id_create_exactly_one(svc: ConnectorService, atomic_writes: None) -> None:
    outcomes = _race(8, lambda i: svc.put_connector_by_id(WS, CID, f"name-{i}", rest({}), ACTOR))
    created = [o for o in outcomes if isinstance(o, tuple) and o[1]]
    assert len(created) == 1
    # the others lost with a 409, or (reading after the winner) replaced it as a rename
    assert all(isinstance(o, Conflict | tuple) for o in outcomes), outcomes
    listed = svc.list_connectors(WS)[0]
    assert [c.id for c in listed] == [CID]
    assert svc.connector_by_id(WS, CID) == listed[0]


def test_concurrent_creates_of_one_name_create_exactly_one(
    svc: ConnectorService, atomic_writes: None
) -> None:
    ids = [f"{CID[:-2]}{i:02d}" for i in range(8)]
    outcomes = _race(8, lambda i: svc.put_connector_by_id(WS, ids[i], "shared", rest({}), ACTOR))
    won = [o for o in outcomes if isinstance(o, tuple)]
    assert len(won) == 1
    assert won[0][1] is True
    assert sum(isinstance(o, Conflict) for o in outcomes) == 7, outcomes
    assert [c.id for c in svc.list_connectors(WS)[0]] == [won[0][0].id]
    assert [i for i in ids if svc.connector_by_id(WS, i) is not None] == [won[0][0].id]
