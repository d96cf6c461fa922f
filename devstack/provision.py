"""Create the template's tables, queues, secrets and state machines through boto3.

The same calls work against the local moto server and inside `moto.mock_aws`, so handler tests create
their table from `template.yaml` exactly as the local stack does (`create_table_from_template`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from mypy_boto3_dynamodb import DynamoDBClient
from mypy_boto3_secretsmanager import SecretsManagerClient
from mypy_boto3_sqs import SQSClient
from mypy_boto3_stepfunctions import SFNClient

from devstack.errors import TemplateError
from devstack.model import GeneratedSecret, QueueSpec, SecretSpec, StateMachineSpec, TableSpec
from devstack.naming import Physical, StackContext
from devstack.template import Template, load_template

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"
_GSI_KEYS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput", "OnDemandThroughput")
_LSI_KEYS = ("IndexName", "KeySchema", "Projection")


@dataclass(frozen=True)
class AwsClients:
    """The boto3 clients provisioning needs, created from one session."""

    dynamodb: DynamoDBClient
    sqs: SQSClient
    secretsmanager: SecretsManagerClient
    stepfunctions: SFNClient

    @classmethod
    def for_endpoint(cls, endpoint_url: str, region: str) -> AwsClients:
        """Clients of a local endpoint (moto), with the dummy credentials moto accepts."""
        session = boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's dummy credentials
            region_name=region,
        )
        return cls.from_session(session, endpoint_url)

    @classmethod
    def from_session(cls, session: boto3.session.Session, endpoint_url: str | None = None) -> AwsClients:
        """Clients of a `boto3.session.Session`, optionally pointed at a local endpoint."""
        return cls(
            dynamodb=session.client("dynamodb", endpoint_url=endpoint_url),
            sqs=session.client("sqs", endpoint_url=endpoint_url),
            secretsmanager=session.client("secretsmanager", endpoint_url=endpoint_url),
            stepfunctions=session.client("stepfunctions", endpoint_url=endpoint_url),
        )


def provision(
    template: Template, clients: AwsClients, *, secret_values: Mapping[str, str] | None = None
) -> dict[str, Physical]:
    """Create every supported resource; return logical id -> what Ref/GetAtt give for it.

    `secret_values` replaces the value of the named secrets (logical id -> SecretString) instead of
    generating one. State machines come last: their DefinitionSubstitutions may name queue URLs.
    """
    overrides = dict(secret_values or {})
    unknown = set(overrides) - {spec.logical_id for spec in template.secrets()}
    if unknown:
        raise TemplateError(f"secret value given for unknown secret(s): {', '.join(sorted(unknown))}")
    physical: dict[str, Physical] = {}
    for table in template.tables():
        physical[table.logical_id] = create_table(clients.dynamodb, table)
    for queue in template.queues():
        physical[queue.logical_id] = create_queue(clients.sqs, queue, physical)
    for secret in template.secrets():
        physical[secret.logical_id] = create_secret(
            clients.secretsmanager, secret, overrides.get(secret.logical_id)
        )
    for machine in template.with_physical(physical).state_machines():
        physical[machine.logical_id] = create_state_machine(clients.stepfunctions, machine, template.context)
    log.info("provisioned %d resources: %s", len(physical), ", ".join(physical))
    return physical


def create_table(client: DynamoDBClient, spec: TableSpec) -> Physical:
    """Create a DynamoDB table with its indexes, stream and TTL."""
    kwargs: dict[str, Any] = {
        "TableName": spec.name,
        "AttributeDefinitions": spec.attribute_definitions,
        "KeySchema": spec.key_schema,
        "BillingMode": spec.billing_mode,
    }
    if spec.provisioned_throughput:
        kwargs["ProvisionedThroughput"] = spec.provisioned_throughput
    if spec.global_secondary_indexes:
        kwargs["GlobalSecondaryIndexes"] = [
            _only(index, _GSI_KEYS) for index in spec.global_secondary_indexes
        ]
    if spec.local_secondary_indexes:
        kwargs["LocalSecondaryIndexes"] = [_only(index, _LSI_KEYS) for index in spec.local_secondary_indexes]
    if spec.stream_view_type:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": spec.stream_view_type}
    description = client.create_table(**kwargs)["TableDescription"]
    if spec.ttl_attribute:
        client.update_time_to_live(
            TableName=spec.name,
            TimeToLiveSpecification={"AttributeName": spec.ttl_attribute, "Enabled": True},
        )
    attributes = {"Arn": description["TableArn"]}
    if "LatestStreamArn" in description:
        attributes["StreamArn"] = description["LatestStreamArn"]
    return Physical(spec.name, attributes)


def create_queue(client: SQSClient, spec: QueueSpec, created: Mapping[str, Physical]) -> Physical:
    """Create a queue; its dead-letter queue must be in `created` already."""
    attributes = dict(spec.attributes)
    if spec.redrive is not None:
        attributes["RedrivePolicy"] = json.dumps(
            {
                "deadLetterTargetArn": created[spec.redrive.dead_letter_queue_id].attributes["Arn"],
                "maxReceiveCount": spec.redrive.max_receive_count,
            }
        )
    url = client.create_queue(QueueName=spec.name, Attributes=attributes)["QueueUrl"]  # type: ignore[arg-type]
    arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return Physical(url, {"Arn": arn, "QueueName": spec.name, "QueueUrl": url})


def create_secret(client: SecretsManagerClient, spec: SecretSpec, value: str | None = None) -> Physical:
    """Create a secret with `value`, its template SecretString, or a generated value."""
    if value is None:
        value = spec.secret_string if spec.generate is None else generated_secret_string(spec.generate)
    if value is None:
        raise TemplateError(f"secret {spec.logical_id} has neither SecretString nor GenerateSecretString")
    kwargs: dict[str, Any] = {"Name": spec.name, "SecretString": value}
    if spec.description:
        kwargs["Description"] = spec.description
    arn = client.create_secret(**kwargs)["ARN"]
    return Physical(arn, {"Id": arn})


def generated_secret_string(rule: GeneratedSecret) -> str:
    """What `GenerateSecretString` stores: the password alone, or put into the template under the key."""
    password = generate_password(rule)
    if rule.secret_string_template is None or rule.generate_string_key is None:
        return password
    document = json.loads(rule.secret_string_template)
    document[rule.generate_string_key] = password
    return json.dumps(document)


def generate_password(rule: GeneratedSecret) -> str:
    """A random password following Secrets Manager's GetRandomPassword options (CSPRNG)."""
    classes = [
        "" if rule.exclude_lowercase else string.ascii_lowercase,
        "" if rule.exclude_uppercase else string.ascii_uppercase,
        "" if rule.exclude_numbers else string.digits,
        "" if rule.exclude_punctuation else string.punctuation,
        " " if rule.include_space else "",
    ]
    classes = [
        kept
        for kept in ("".join(c for c in chars if c not in rule.exclude_characters) for chars in classes)
        if kept
    ]
    if not classes:
        raise TemplateError("GenerateSecretString excludes every character")
    required = [secrets.choice(chars) for chars in classes] if rule.require_each_included_type else []
    if len(required) > rule.password_length:
        raise TemplateError(
            "GenerateSecretString: PasswordLength is too short to include each character type"
        )
    alphabet = "".join(classes)
    chars = required + [secrets.choice(alphabet) for _ in range(rule.password_length - len(required))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def create_state_machine(client: SFNClient, spec: StateMachineSpec, context: StackContext) -> Physical:
    """Create a state machine; the role is a placeholder, moto does not check IAM."""
    role_arn = f"arn:aws:iam::{context.account_id}:role/{context.stack_name}-{spec.logical_id}-role"
    arn = client.create_state_machine(
        name=spec.name,
        definition=spec.definition,
        roleArn=role_arn,
        type=spec.type,
    )["stateMachineArn"]
    return Physical(arn, {"Arn": arn, "Name": spec.name})


def provision_account(
    template_path: str | Path = DEFAULT_TEMPLATE, clients: AwsClients | None = None
) -> tuple[dict[str, Physical], dict[str, str]]:
    """Every resource of the template in the current account (moto's `mock_aws` in tests and
    benchmarks), and the environment the functions would see there, all in one process
    (`merged_environment`: their variables with Refs resolved, outbound URLs allowed to loopback)."""
    from devstack.environment import merged_environment

    template = load_template(template_path)
    physical = provision(template, clients or AwsClients.from_session(boto3.session.Session()))
    return physical, merged_environment(template.with_physical(physical).functions())


def create_table_from_template(
    template_path: str | Path = DEFAULT_TEMPLATE,
    logical_id: str = "Table",
    *,
    client: DynamoDBClient | None = None,
    table_name: str | None = None,
    parameter_overrides: str = "",
) -> str:
    """Create one table of the template (for handler tests under `moto.mock_aws`); return its name.

    The client defaults to a new boto3 client (so that it is created inside the mock), in the
    configured region or else the stack's region.
    """
    template = load_template(template_path, parameter_overrides)
    spec = next((table for table in template.tables() if table.logical_id == logical_id), None)
    if spec is None:
        raise TemplateError(f"{template.path} has no DynamoDB table {logical_id!r}")
    if table_name is not None:
        spec = dataclasses.replace(spec, name=table_name)
    if client is None:
        session = boto3.session.Session()
        client = session.client("dynamodb", region_name=session.region_name or template.context.region)
    create_table(client, spec)
    return spec.name


def _only(mapping: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if key in keys}
