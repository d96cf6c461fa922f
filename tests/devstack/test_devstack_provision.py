"""Provisioning under moto.mock_aws: the resources the templates describe, as AWS would hold them."""

from __future__ import annotations

import json
import string
from pathlib import Path

import boto3
import pytest

from devstack.errors import TemplateError
from devstack.model import GeneratedSecret
from devstack.provision import AwsClients, create_table_from_template, generate_password, provision
from devstack.template import Template, load_template

pytestmark = pytest.mark.usefixtures("aws")


def _clients() -> AwsClients:
    return AwsClients.from_session(boto3.session.Session(region_name="us-east-1"))


def test_project_table_has_its_index_and_ttl(repo_template_path: Path) -> None:
    # Given the project's template
    template = load_template(repo_template_path)
    # When it is provisioned
    physical = provision(template, _clients())
    # Then the table has the keys, the GSI, on-demand billing and TTL of the template
    dynamodb = boto3.client("dynamodb")
    table = dynamodb.describe_table(TableName=physical["Table"].ref)["Table"]
    assert [key["AttributeName"] for key in table["KeySchema"]] == ["PK", "SK"]
    assert [index["IndexName"] for index in table["GlobalSecondaryIndexes"]] == ["GSI1", "GSI2"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = dynamodb.describe_time_to_live(TableName=physical["Table"].ref)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "ttl")
    # And the admin secret holds the templated username and a generated password
    secret = json.loads(
        boto3.client("secretsmanager").get_secret_value(SecretId=physical["AdminSecret"].ref)["SecretString"]
    )
    assert secret["username"] == "admin"
    assert len(secret["password"]) == 32
    assert set(secret["password"]) <= set(string.ascii_letters + string.digits)


def test_fixture_resources(fixture_template: Template) -> None:
    clients = _clients()
    physical = provision(fixture_template, clients, secret_values={"AdminSecret": '{"username": "u"}'})

    # The redrive policy names the dead-letter queue's real ARN.
    work = clients.sqs.get_queue_attributes(QueueUrl=physical["WorkQueue"].ref, AttributeNames=["All"])
    redrive = json.loads(work["Attributes"]["RedrivePolicy"])
    assert redrive == {
        "deadLetterTargetArn": physical["WorkDeadLetterQueue"].attributes["Arn"],
        "maxReceiveCount": 2,
    }
    assert work["Attributes"]["VisibilityTimeout"] == "0"
    # FIFO queues get a .fifo name and keep their attributes.
    ordered = clients.sqs.get_queue_attributes(QueueUrl=physical["OrderedQueue"].ref, AttributeNames=["All"])
    assert physical["OrderedQueue"].ref.endswith("/flowgate-local-OrderedQueue.fifo")
    assert ordered["Attributes"]["FifoQueue"] == "true"
    # An override replaces the generated secret value.
    value = clients.secretsmanager.get_secret_value(SecretId=physical["AdminSecret"].ref)["SecretString"]
    assert value == '{"username": "u"}'
    # The table has its LSI; the state machine names the provisioned queue URL.
    table = clients.dynamodb.describe_table(TableName="flowgate-local-Table")["Table"]
    assert [index["IndexName"] for index in table["LocalSecondaryIndexes"]] == ["LSI1"]
    machine = clients.stepfunctions.describe_state_machine(stateMachineArn=physical["Approval"].ref)
    assert (
        json.loads(machine["definition"])["States"]["Hold"]["Parameters"]["QueueUrl"]
        == physical["WorkQueue"].ref
    )
    # Refs resolve to the provisioned values afterwards.
    api = next(
        f for f in fixture_template.with_physical(physical).functions() if f.logical_id == "ApiFunction"
    )
    assert api.environment["QUEUE_URL"] == physical["WorkQueue"].ref
    assert api.environment["ADMIN_SECRET_ID"] == physical["AdminSecret"].ref


def test_secret_override_for_an_unknown_secret_is_an_error(fixture_template: Template) -> None:
    with pytest.raises(TemplateError, match="Nope"):
        provision(fixture_template, _clients(), secret_values={"Nope": "x"})


def test_create_table_from_template_for_handler_tests(fixture_template_path: Path) -> None:
    # Defaults: the project's template, its Table, the stack's name for it
    assert create_table_from_template() == "flowgate-local-Table"
    # A test may pick another template and name
    name = create_table_from_template(fixture_template_path, table_name="mine")
    table = boto3.client("dynamodb").describe_table(TableName=name)["Table"]
    assert [index["IndexName"] for index in table["LocalSecondaryIndexes"]] == ["LSI1"]
    with pytest.raises(TemplateError, match="no DynamoDB table 'Nope'"):
        create_table_from_template(logical_id="Nope")


def test_generated_passwords_follow_the_rule() -> None:
    rule = GeneratedSecret(password_length=40, exclude_characters="abc0", exclude_punctuation=True)
    password = generate_password(rule)
    assert len(password) == 40
    assert not set(password) & set("abc0" + string.punctuation)
    assert set(password) & set(string.ascii_lowercase)
    assert set(password) & set(string.ascii_uppercase)
    assert set(password) & set(string.digits)
    assert generate_password(rule) != password


def test_password_rules_that_cannot_be_met() -> None:
    with pytest.raises(TemplateError):
        generate_password(GeneratedSecret(password_length=3))
    every = string.ascii_letters + string.digits + string.punctuation
    with pytest.raises(TemplateError):
        generate_password(GeneratedSecret(exclude_characters=every))
