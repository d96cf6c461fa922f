"""The typed model of a local stack: what the template asks devstack to create and run.

Plain frozen dataclasses, so that provisioning, the gateway and the event sources depend on these
shapes rather than on CloudFormation's property bags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class ApiRoute:
    """One `Type: Api` event: a REST route served by a function."""

    function_id: str
    event_name: str
    method: str  # upper case; ANY matches every method
    path: str  # the resource path template, e.g. /workspaces/{ws} or /{proxy+}
    stage: str
    api_id: str


@dataclass(frozen=True)
class Schedule:
    """One `Type: Schedule` (EventBridge rule) or `Type: ScheduleV2` (EventBridge Scheduler) event."""

    function_id: str
    event_name: str
    expression: str
    interval_seconds: int | None  # None when the expression is not a rate() (cron, at)
    input: str | None  # a constant JSON input replaces the default event, as in AWS
    source: str  # aws.events or aws.scheduler
    resource_arn: str  # the rule or schedule ARN the event names
    enabled: bool


@dataclass(frozen=True)
class SqsEventSource:
    """One `Type: SQS` event: an event source mapping from a template queue to a function."""

    function_id: str
    event_name: str
    queue_id: str
    batch_size: int
    report_batch_item_failures: bool
    enabled: bool


@dataclass(frozen=True)
class FunctionSpec:
    """A Lambda function with Globals applied and its environment resolved."""

    logical_id: str
    name: str
    arn: str
    code_uri: Path
    handler: str  # "module.function"; the module may be dotted (package.module)
    timeout_seconds: int
    memory_mb: int
    environment: Mapping[str, str]
    layer_paths: tuple[Path, ...]  # local directories of the template's layers it uses
    api_routes: tuple[ApiRoute, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    sqs_sources: tuple[SqsEventSource, ...] = ()
    ignored_events: tuple[str, ...] = ()  # "Name (Type)" of events the local stack does not emulate


@dataclass(frozen=True)
class TableSpec:
    """An `AWS::DynamoDB::Table`, with its properties in DynamoDB API shapes."""

    logical_id: str
    name: str
    attribute_definitions: list[dict[str, Any]]
    key_schema: list[dict[str, Any]]
    billing_mode: str = "PROVISIONED"
    provisioned_throughput: dict[str, Any] | None = None
    global_secondary_indexes: list[dict[str, Any]] = field(default_factory=list)
    local_secondary_indexes: list[dict[str, Any]] = field(default_factory=list)
    stream_view_type: str | None = None
    ttl_attribute: str | None = None


@dataclass(frozen=True)
class RedrivePolicy:
    """Where a queue sends messages received more than `max_receive_count` times."""

    dead_letter_queue_id: str
    dead_letter_arn: str
    max_receive_count: int


@dataclass(frozen=True)
class QueueSpec:
    """An `AWS::SQS::Queue`; `attributes` are SQS API attributes (strings) without the redrive policy."""

    logical_id: str
    name: str
    fifo: bool
    attributes: Mapping[str, str]
    redrive: RedrivePolicy | None = None


@dataclass(frozen=True)
class GeneratedSecret:
    """`GenerateSecretString`: how Secrets Manager makes the secret's value."""

    password_length: int = 32
    exclude_characters: str = ""
    exclude_numbers: bool = False
    exclude_punctuation: bool = False
    exclude_uppercase: bool = False
    exclude_lowercase: bool = False
    include_space: bool = False
    require_each_included_type: bool = True
    secret_string_template: str | None = None
    generate_string_key: str | None = None


@dataclass(frozen=True)
class SecretSpec:
    """An `AWS::SecretsManager::Secret`: a fixed `secret_string` or a `generate` rule."""

    logical_id: str
    name: str
    description: str | None = None
    secret_string: str | None = None
    generate: GeneratedSecret | None = None


@dataclass(frozen=True)
class StateMachineSpec:
    """A state machine with its definition loaded and `DefinitionSubstitutions` applied."""

    logical_id: str
    name: str
    arn: str
    type: Literal["STANDARD", "EXPRESS"]
    definition: str  # ASL JSON text


@dataclass(frozen=True)
class CustomResourceSpec:
    """A `Custom::*` resource backed by one of the template's functions."""

    logical_id: str
    resource_type: str
    function_id: str
    properties: Mapping[str, Any]  # resolved, ServiceToken included
