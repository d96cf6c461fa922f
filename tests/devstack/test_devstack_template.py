"""Template loading: short tags, parameters, intrinsics and the typed model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devstack.errors import TemplateError
from devstack.naming import Physical, StackContext
from devstack.parameters import parse_overrides, resolve_parameters
from devstack.template import Template, load_template, rate_seconds
from devstack.yamlcfn import load_yaml


def test_short_tags_become_long_forms() -> None:
    # Given YAML with every short tag form
    document = load_yaml(
        """
        Version: 2010-09-09
        A: !Ref Table
        B: !GetAtt Queue.Arn
        C: !GetAtt [Queue, QueueName]
        D: !Sub "${AWS::Region}-x"
        E: !Sub ["${A}", {A: !Ref B}]
        F: !Join [",", [a, !Ref B]]
        G: !Select [0, !Split [",", "a,b"]]
        H: !If [Cond, 1, !Ref AWS::NoValue]
        I: !Not [!Equals [a, b]]
        J: !FindInMap [M, K, V]
        K: !Condition Cond
        """
    )
    # Then they are the JSON forms, and a date stays a string
    assert document == {
        "Version": "2010-09-09",
        "A": {"Ref": "Table"},
        "B": {"Fn::GetAtt": ["Queue", "Arn"]},
        "C": {"Fn::GetAtt": ["Queue", "QueueName"]},
        "D": {"Fn::Sub": "${AWS::Region}-x"},
        "E": {"Fn::Sub": ["${A}", {"A": {"Ref": "B"}}]},
        "F": {"Fn::Join": [",", ["a", {"Ref": "B"}]]},
        "G": {"Fn::Select": [0, {"Fn::Split": [",", "a,b"]}]},
        "H": {"Fn::If": ["Cond", 1, {"Ref": "AWS::NoValue"}]},
        "I": {"Fn::Not": [{"Fn::Equals": ["a", "b"]}]},
        "J": {"Fn::FindInMap": ["M", "K", "V"]},
        "K": {"Condition": "Cond"},
    }


def test_overrides_accept_both_sam_syntaxes() -> None:
    overrides = parse_overrides(
        'Stage=prod ParameterKey=Greeting,ParameterValue="hi there" OutboundAllowList=10.0.0.0/8,::1'
    )
    assert overrides == {"Stage": "prod", "Greeting": "hi there", "OutboundAllowList": "10.0.0.0/8,::1"}


@pytest.mark.parametrize("text", ["Stage", "=x", "Stage='unterminated"])
def test_malformed_overrides_are_errors(text: str) -> None:
    with pytest.raises(TemplateError):
        parse_overrides(text)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("Nope=1", "unknown parameter"),
        ("Stage=qa", "allowed values"),
        ("MaxThings=0", "MinValue"),
        ("MaxThings=11", "MaxValue"),
        ("MaxThings=many", "must be a number"),
        ("Greeting=Hello!", "must match"),
    ],
)
def test_bad_overrides_fail_like_cloudformation(
    fixture_template_path: Path, overrides: str, message: str
) -> None:
    with pytest.raises(TemplateError, match=message):
        load_template(fixture_template_path, overrides)


def test_unreadable_templates_are_template_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("Resources: {A: [}\n")
    with pytest.raises(TemplateError, match="not valid YAML"):
        load_template(broken)
    with pytest.raises(TemplateError, match="cannot read"):
        load_template(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_text("Parameters: {}\n")
    with pytest.raises(TemplateError, match="no Resources"):
        load_template(tmp_path / "empty.yaml")


def test_parameters_take_defaults_then_overrides() -> None:
    declared: dict[str, dict[str, Any]] = {
        "A": {"Type": "Number", "Default": 5},
        "L": {"Type": "CommaDelimitedList", "Default": "x, y"},
    }
    assert resolve_parameters(declared, {}) == {"A": "5", "L": ["x", "y"]}
    assert resolve_parameters(declared, {"A": "7"})["A"] == "7"
    with pytest.raises(TemplateError, match="no default"):
        resolve_parameters({"B": {"Type": "String"}}, {})


def test_function_environment_merges_globals_and_resolves_intrinsics(
    fixture_template: Template, fixture_dir: Path
) -> None:
    # When the fixture's functions are built
    api = {spec.logical_id: spec for spec in fixture_template.functions()}["ApiFunction"]
    # Then Globals and the function's own variables are merged and every intrinsic is resolved
    assert api.environment["GREETING"] == "hello from flowgate-local in us-east-1"
    assert api.environment["TABLE_NAME"] == "flowgate-local-Table"
    assert api.environment["MAX_THINGS"] == "3"
    assert api.environment["COLOR"] == "light-blue"
    assert api.environment["FIRST_ZONE"] == "a"
    assert api.environment["POWERTOOLS_SERVICE_NAME"] == "api"
    assert api.environment["STATE_MACHINE_ARN"] == (
        "arn:aws:states:us-east-1:123456789012:stateMachine:flowgate-local-Approval"
    )
    assert api.code_uri == fixture_dir / "functions"
    assert api.handler == "api.handler"
    assert (api.timeout_seconds, api.memory_mb) == (5, 256)
    assert api.layer_paths == (fixture_dir / "layer",)
    assert api.arn == "arn:aws:lambda:us-east-1:123456789012:function:flowgate-local-ApiFunction"


def test_overrides_and_conditions_change_the_model(fixture_template: Template) -> None:
    template = load_template(fixture_template.path, "Stage=prod Greeting=hey")
    api = next(spec for spec in template.functions() if spec.logical_id == "ApiFunction")
    assert api.environment["COLOR"] == "red"
    assert api.environment["GREETING"].startswith("hey ")
    assert {route.stage for route in api.api_routes} == {"prod"}
    assert "ProdOnlyQueue" in {queue.logical_id for queue in template.queues()}
    assert "ProdOnlyQueue" not in {queue.logical_id for queue in fixture_template.queues()}


def test_events_become_routes_schedules_and_queue_sources(fixture_template: Template) -> None:
    functions = {spec.logical_id: spec for spec in fixture_template.functions()}
    routes = {(route.method, route.path) for route in functions["ApiFunction"].api_routes}
    assert ("GET", "/items/{id}") in routes
    assert ("ANY", "/echo/{proxy+}") in routes
    (tick,) = functions["ApiFunction"].schedules
    assert (tick.expression, tick.interval_seconds, tick.source, tick.enabled) == (
        "rate(1 day)",
        86400,
        "aws.events",
        True,
    )
    assert tick.resource_arn == "arn:aws:events:us-east-1:123456789012:rule/flowgate-local-ApiFunctionTick"
    (work,) = functions["WorkerFunction"].sqs_sources
    assert (work.queue_id, work.batch_size, work.report_batch_item_failures) == ("WorkQueue", 5, True)


def test_data_resources(fixture_template: Template) -> None:
    (table,) = fixture_template.tables()
    assert table.name == "flowgate-local-Table"
    assert table.ttl_attribute == "expires"
    assert [index["IndexName"] for index in table.local_secondary_indexes] == ["LSI1"]
    queues = {queue.logical_id: queue for queue in fixture_template.queues()}
    assert queues["WorkQueue"].redrive is not None
    assert queues["WorkQueue"].redrive.dead_letter_queue_id == "WorkDeadLetterQueue"
    assert queues["WorkQueue"].attributes == {"VisibilityTimeout": "0"}
    assert queues["OrderedQueue"].name == "flowgate-local-OrderedQueue.fifo"
    assert queues["OrderedQueue"].fifo
    order = [queue.logical_id for queue in fixture_template.queues()]
    assert order.index("WorkDeadLetterQueue") < order.index("WorkQueue")
    (secret,) = fixture_template.secrets()
    assert secret.generate is not None
    assert (secret.generate.password_length, secret.generate.exclude_punctuation) == (20, True)
    assert json.loads(secret.generate.secret_string_template or "") == {"username": "fixture-admin"}


def test_state_machine_definition_is_substituted_with_provisioned_values(fixture_template: Template) -> None:
    url = "http://127.0.0.1:1/123456789012/flowgate-local-WorkQueue"
    provisioned = fixture_template.with_physical(
        {"WorkQueue": Physical(url, {"Arn": "arn:x", "QueueUrl": url})}
    )
    (machine,) = provisioned.state_machines()
    definition = json.loads(machine.definition)
    assert definition["States"]["Hold"]["Parameters"]["QueueUrl"] == url
    assert definition["Comment"] == f"Waits for a task token sent through {url} (blue)"
    # Keys DefinitionSubstitutions does not name are left alone, as CloudFormation does.
    assert definition["States"]["Hold"]["Parameters"]["MessageBody"]["unknown"] == "${NotSubstituted}"
    assert machine.type == "STANDARD"


def test_custom_resources_are_bound_to_their_function(fixture_template: Template) -> None:
    (bootstrap,) = fixture_template.custom_resources()
    assert (bootstrap.function_id, bootstrap.resource_type) == ("ApiFunction", "Custom::Bootstrap")
    assert bootstrap.properties["ShouldFail"] == "false"
    assert bootstrap.properties["SecretId"].startswith(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
    )


def _inline(resources: dict[str, object]) -> Template:
    return Template(
        path=Path("inline.yaml").resolve(),
        document={"Resources": resources},
        parameters={"P": "v"},
        context=StackContext(),
    )


def test_sub_forms_and_errors() -> None:
    template = _inline({"Q": {"Type": "AWS::SQS::Queue"}})
    assert template.resolve({"Fn::Sub": "${!Literal}-${P}-${Q.QueueName}-${AWS::AccountId}"}) == (
        "${Literal}-v-flowgate-local-Q-123456789012"
    )
    assert template.resolve({"Fn::Sub": ["${X}/${P}", {"X": {"Ref": "P"}}]}) == "v/v"
    assert template.resolve({"Fn::Split": ["/", "a/b"]}) == ["a", "b"]
    assert template.resolve({"A": {"Ref": "AWS::NoValue"}, "B": [1, {"Ref": "AWS::NoValue"}]}) == {"B": [1]}
    with pytest.raises(TemplateError, match="unknown resource"):
        template.resolve({"Ref": "Missing"})
    with pytest.raises(TemplateError, match=r"Q\.Nope"):
        template.resolve({"Fn::GetAtt": ["Q", "Nope"]})


def test_unknown_custom_resource_service_token_is_an_error() -> None:
    template = _inline({"C": {"Type": "Custom::X", "Properties": {"ServiceToken": "arn:aws:sns:topic"}}})
    with pytest.raises(TemplateError, match="ServiceToken"):
        template.custom_resources()


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [("rate(1 minute)", 60), ("rate(5 minutes)", 300), ("rate(2 hours)", 7200), ("rate(1 day)", 86400)],
)
def test_rate_expressions(expression: str, seconds: int) -> None:
    assert rate_seconds(expression) == seconds


def test_cron_is_not_a_rate() -> None:
    assert rate_seconds("cron(0 12 * * ? *)") is None


def test_the_project_template_loads(repo_template_path: Path) -> None:
    # The real template is the schema's one source: the table, the admin secret and the bootstrap.
    template = load_template(repo_template_path, "LimitedWorkspaceMaxRuntime=5")
    assert template.parameters["LimitedWorkspaceMaxRuntime"] == "5"
    (table,) = template.tables()
    assert [index["IndexName"] for index in table.global_secondary_indexes] == ["GSI1", "GSI2"]
    assert table.ttl_attribute == "ttl"
    functions = {spec.logical_id: spec for spec in template.functions()}
    identity = functions["IdentityFunction"]
    assert ("GET", "/api/latest/health") in {(route.method, route.path) for route in identity.api_routes}
    assert identity.environment["TABLE_NAME"] == "flowgate-local-Table"
    assert {spec.logical_id: spec.function_id for spec in template.custom_resources()}["AdminBootstrap"] == (
        "IdentityFunction"
    )
