"""Reading a SAM template into the typed model (`devstack.model`) of what the local stack runs.

`template.yaml` is the one source of the stack's shape: the local stack, handler tests and e2e tests all
read it here, so a table key or a route changes in one place. Intrinsics are resolved when a spec is
asked for, with the physical values known at that moment (see `Template.with_physical`): queue URLs and
secret ARNs exist only once provisioning has created them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from devstack.errors import TemplateError
from devstack.intrinsics import Resolver, as_text
from devstack.model import (
    ApiRoute,
    CustomResourceSpec,
    FunctionSpec,
    GeneratedSecret,
    QueueSpec,
    RedrivePolicy,
    Schedule,
    SecretSpec,
    SqsEventSource,
    StateMachineSpec,
    TableSpec,
)
from devstack.naming import Physical, StackContext, as_bool, default_name, rest_api_id
from devstack.parameters import ParameterValue, parse_overrides, resolve_parameters
from devstack.yamlcfn import load_yaml_file

FUNCTION_TYPES = ("AWS::Serverless::Function",)
TABLE_TYPES = ("AWS::DynamoDB::Table",)
QUEUE_TYPES = ("AWS::SQS::Queue",)
SECRET_TYPES = ("AWS::SecretsManager::Secret",)
STATE_MACHINE_TYPES = ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine")
LAYER_TYPES = ("AWS::Serverless::LayerVersion",)

IMPLICIT_API = "ServerlessRestApi"  # what SAM generates for Api events without RestApiId
_IMPLICIT_STAGE = "Prod"
_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_QUEUE_NON_ATTRIBUTES = ("QueueName", "Tags", "RedrivePolicy")
_SUBSTITUTION = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


class Template:
    """A loaded template with its parameters resolved; specs are built on request."""

    def __init__(
        self,
        *,
        path: Path,
        document: Mapping[str, Any],
        parameters: Mapping[str, ParameterValue],
        context: StackContext,
        known: Mapping[str, Physical] | None = None,
    ) -> None:
        self.path = path
        self.base_dir = path.parent
        self.document = document
        self.parameters = dict(parameters)
        self.context = context
        self.known: Mapping[str, Physical] = dict(known or {})
        self._resources: Mapping[str, Mapping[str, Any]] = document.get("Resources") or {}
        self._resolver = Resolver(
            context=context,
            parameters=self.parameters,
            resources=self._resources,
            conditions=document.get("Conditions") or {},
            mappings=document.get("Mappings") or {},
            known=self.known,
        )

    def with_physical(self, known: Mapping[str, Physical]) -> Template:
        """The same template, resolving Refs to `known` resources with their provisioned values."""
        return Template(
            path=self.path,
            document=self.document,
            parameters=self.parameters,
            context=self.context,
            known={**self.known, **known},
        )

    def resolve(self, node: Any) -> Any:
        """Resolve intrinsic functions in a template value."""
        return self._resolver.resolve(node)

    def physical(self, logical_id: str) -> Physical:
        """Ref/GetAtt values of a resource (provisioned if known, else planned)."""
        return self._resolver.physical(logical_id)

    def resources(self, *types: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """(logical id, resource) of the given types, skipping resources whose Condition is false.

        A type ending in `::*` matches a prefix (`Custom::*`).
        """
        for logical_id, resource in self._resources.items():
            kind = str(resource.get("Type", ""))
            if not any(kind == t or (t.endswith("*") and kind.startswith(t[:-1])) for t in types):
                continue
            condition = resource.get("Condition")
            if condition is None or self._resolver.condition(str(condition)):
                yield logical_id, resource

    def properties(self, logical_id: str, *names: str) -> dict[str, Any]:
        """The resolved Properties of one resource; only `names` when given.

        Resolving only what is used keeps properties devstack ignores (IAM policies, OpenAPI bodies)
        from failing on attributes that exist only in AWS.
        """
        raw = self._resources[logical_id].get("Properties") or {}
        if names:
            raw = {key: value for key, value in raw.items() if key in names}
        resolved = self.resolve(raw)
        assert isinstance(resolved, dict)
        return resolved

    # Functions ------------------------------------------------------------------------------------

    def functions(self) -> list[FunctionSpec]:
        """Every `AWS::Serverless::Function`, with Globals applied."""
        globals_ = (self.document.get("Globals") or {}).get("Function") or {}
        return [
            self._function(logical_id, merge_globals(globals_, resource.get("Properties") or {}))
            for logical_id, resource in self.resources(*FUNCTION_TYPES)
        ]

    def _function(self, logical_id: str, raw: Mapping[str, Any]) -> FunctionSpec:
        code_uri = self.resolve(raw.get("CodeUri"))
        handler = self.resolve(raw.get("Handler"))
        if not isinstance(code_uri, str) or not isinstance(handler, str) or "." not in handler:
            raise TemplateError(
                f"{logical_id}: the local stack needs a local CodeUri directory and a Handler "
                f"'module.function' (got CodeUri={code_uri!r}, Handler={handler!r})"
            )
        variables = self.resolve((raw.get("Environment") or {}).get("Variables") or {})
        physical = self.physical(logical_id)
        routes: list[ApiRoute] = []
        schedules: list[Schedule] = []
        sqs_sources: list[SqsEventSource] = []
        ignored: list[str] = []
        for event_name, event in (raw.get("Events") or {}).items():
            kind = event.get("Type")
            props = event.get("Properties") or {}
            if kind == "Api":
                routes.append(self._api_route(logical_id, event_name, props))
            elif kind in ("Schedule", "ScheduleV2"):
                schedules.append(self._schedule(logical_id, event_name, kind, props))
            elif kind == "SQS":
                sqs_sources.append(self._sqs_source(logical_id, event_name, props))
            else:
                ignored.append(f"{event_name} ({kind})")
        return FunctionSpec(
            logical_id=logical_id,
            name=physical.ref,
            arn=physical.attributes["Arn"],
            code_uri=(self.base_dir / code_uri).resolve(),
            handler=handler,
            timeout_seconds=int(self.resolve(raw.get("Timeout", 3))),
            memory_mb=int(self.resolve(raw.get("MemorySize", 128))),
            environment={name: as_text(value) for name, value in variables.items() if value is not None},
            layer_paths=self._layer_paths(self.resolve(raw.get("Layers") or [])),
            api_routes=tuple(routes),
            schedules=tuple(schedules),
            sqs_sources=tuple(sqs_sources),
            ignored_events=tuple(ignored),
        )

    def _layer_paths(self, layer_arns: list[Any]) -> tuple[Path, ...]:
        """Local content of the template's layers (`<ContentUri>/python` when the layer has one)."""
        by_arn = {self.physical(lid).ref: lid for lid, _ in self.resources(*LAYER_TYPES)}
        paths: list[Path] = []
        for arn in layer_arns:
            logical_id = by_arn.get(arn)
            content = self.properties(logical_id, "ContentUri").get("ContentUri") if logical_id else None
            if isinstance(content, str):
                root = (self.base_dir / content).resolve()
                paths.append(root / "python" if (root / "python").is_dir() else root)
        return tuple(paths)

    def _api_route(self, function_id: str, event_name: str, props: Mapping[str, Any]) -> ApiRoute:
        rest_api = props.get("RestApiId")
        api_id = rest_api.get("Ref") if isinstance(rest_api, dict) else None
        if rest_api is not None and api_id not in self._resources:
            raise TemplateError(f"{function_id}.{event_name}: RestApiId must be a Ref to an Api resource")
        stage = self.properties(api_id, "StageName").get("StageName") if api_id else _IMPLICIT_STAGE
        return ApiRoute(
            function_id=function_id,
            event_name=event_name,
            method=str(self.resolve(props.get("Method"))).upper(),
            path=str(self.resolve(props.get("Path"))),
            stage=str(stage),
            api_id=self.physical(api_id).ref if api_id else rest_api_id(self.context, IMPLICIT_API),
        )

    def _schedule(self, function_id: str, event_name: str, kind: str, props: Mapping[str, Any]) -> Schedule:
        resolved = self.resolve(dict(props))
        expression = str(resolved.get("Schedule" if kind == "Schedule" else "ScheduleExpression", ""))
        name = str(resolved.get("Name") or f"{self.context.stack_name}-{function_id}{event_name}")
        if kind == "Schedule":
            source, arn = "aws.events", self.context.arn("events", f"rule/{name}")
        else:
            group = resolved.get("GroupName") or "default"
            source, arn = "aws.scheduler", self.context.arn("scheduler", f"schedule/{group}/{name}")
        enabled = as_bool(resolved.get("Enabled", True)) and resolved.get("State", "ENABLED") == "ENABLED"
        return Schedule(
            function_id=function_id,
            event_name=event_name,
            expression=expression,
            interval_seconds=rate_seconds(expression),
            input=resolved.get("Input"),
            source=source,
            resource_arn=arn,
            enabled=enabled,
        )

    def _sqs_source(self, function_id: str, event_name: str, props: Mapping[str, Any]) -> SqsEventSource:
        resolved = self.resolve(dict(props))
        queue_id = self._queue_by_arn(resolved.get("Queue"), f"{function_id}.{event_name}")
        return SqsEventSource(
            function_id=function_id,
            event_name=event_name,
            queue_id=queue_id,
            batch_size=int(resolved.get("BatchSize", 10)),
            report_batch_item_failures="ReportBatchItemFailures"
            in (resolved.get("FunctionResponseTypes") or []),
            enabled=as_bool(resolved.get("Enabled", True)),
        )

    def _queue_by_arn(self, arn: Any, where: str) -> str:
        for logical_id, _ in self.resources(*QUEUE_TYPES):
            if self.physical(logical_id).attributes["Arn"] == arn:
                return logical_id
        raise TemplateError(f"{where}: queue {arn!r} is not a queue of this template")

    # Data resources -------------------------------------------------------------------------------

    def tables(self) -> list[TableSpec]:
        """Every DynamoDB table."""
        specs = []
        for logical_id, _ in self.resources(*TABLE_TYPES):
            props = self.properties(logical_id)
            ttl = props.get("TimeToLiveSpecification") or {}
            ttl_enabled = as_bool(ttl.get("Enabled"))
            specs.append(
                TableSpec(
                    logical_id=logical_id,
                    name=self.physical(logical_id).ref,
                    attribute_definitions=props.get("AttributeDefinitions") or [],
                    key_schema=props.get("KeySchema") or [],
                    billing_mode=props.get("BillingMode", "PROVISIONED"),
                    provisioned_throughput=props.get("ProvisionedThroughput"),
                    global_secondary_indexes=props.get("GlobalSecondaryIndexes") or [],
                    local_secondary_indexes=props.get("LocalSecondaryIndexes") or [],
                    stream_view_type=(props.get("StreamSpecification") or {}).get("StreamViewType"),
                    ttl_attribute=ttl.get("AttributeName") if ttl_enabled else None,
                )
            )
        return specs

    def queues(self) -> list[QueueSpec]:
        """Every SQS queue, dead-letter queues before the queues that redrive to them."""
        specs = []
        for logical_id, _ in self.resources(*QUEUE_TYPES):
            props = self.properties(logical_id)
            physical = self.physical(logical_id)
            specs.append(
                QueueSpec(
                    logical_id=logical_id,
                    name=physical.attributes["QueueName"],
                    fifo=as_bool(props.get("FifoQueue")),
                    attributes={
                        key: json.dumps(value) if isinstance(value, dict) else as_text(value)
                        for key, value in props.items()
                        if key not in _QUEUE_NON_ATTRIBUTES
                    },
                    redrive=self._redrive(logical_id, props.get("RedrivePolicy")),
                )
            )
        return _dead_letter_queues_first(specs)

    def _redrive(self, logical_id: str, policy: Any) -> RedrivePolicy | None:
        if policy is None:
            return None
        if isinstance(policy, str):
            policy = json.loads(policy)
        arn = policy.get("deadLetterTargetArn")
        return RedrivePolicy(
            dead_letter_queue_id=self._queue_by_arn(arn, f"{logical_id}.RedrivePolicy"),
            dead_letter_arn=str(arn),
            max_receive_count=int(policy.get("maxReceiveCount", 10)),
        )

    def secrets(self) -> list[SecretSpec]:
        """Every Secrets Manager secret."""
        specs = []
        for logical_id, _ in self.resources(*SECRET_TYPES):
            props = self.properties(logical_id)
            rule = props.get("GenerateSecretString")
            specs.append(
                SecretSpec(
                    logical_id=logical_id,
                    name=str(props.get("Name") or default_name(self.context, logical_id)),
                    description=props.get("Description"),
                    secret_string=props.get("SecretString"),
                    generate=None if rule is None else _generated_secret(rule),
                )
            )
        return specs

    def state_machines(self) -> list[StateMachineSpec]:
        """Every state machine, definitions loaded and substituted (queues must be provisioned)."""
        specs = []
        for logical_id, resource in self.resources(*STATE_MACHINE_TYPES):
            sam = resource["Type"] == "AWS::Serverless::StateMachine"
            type_key = "Type" if sam else "StateMachineType"
            props = self.properties(
                logical_id,
                "Definition",
                "DefinitionString",
                "DefinitionUri",
                "DefinitionSubstitutions",
                type_key,
            )
            physical = self.physical(logical_id)
            substitutions = props.get("DefinitionSubstitutions") or {}
            specs.append(
                StateMachineSpec(
                    logical_id=logical_id,
                    name=physical.attributes["Name"],
                    arn=physical.attributes["Arn"],
                    type=_state_machine_type(logical_id, props.get(type_key)),
                    definition=substitute(self._definition_text(logical_id, props), substitutions),
                )
            )
        return specs

    def _definition_text(self, logical_id: str, props: Mapping[str, Any]) -> str:
        if "Definition" in props:
            return json.dumps(props["Definition"])
        if isinstance(props.get("DefinitionString"), str):
            return str(props["DefinitionString"])
        uri = props.get("DefinitionUri")
        if not isinstance(uri, str):
            raise TemplateError(f"{logical_id}: needs Definition, DefinitionString or a local DefinitionUri")
        path = self.base_dir / uri
        if path.suffix == ".json":
            return path.read_text(encoding="utf-8")
        return json.dumps(load_yaml_file(path))

    def custom_resources(self) -> list[CustomResourceSpec]:
        """`Custom::*` resources whose ServiceToken is a function of this template, in template order."""
        arns = {self.physical(lid).attributes["Arn"]: lid for lid, _ in self.resources(*FUNCTION_TYPES)}
        specs = []
        for logical_id, resource in self.resources("Custom::*", "AWS::CloudFormation::CustomResource"):
            kind = str(resource["Type"])
            props = self.properties(logical_id)
            token = props.get("ServiceToken")
            if token not in arns:
                raise TemplateError(
                    f"{logical_id}: ServiceToken {token!r} is not a function of this template; "
                    "only function-backed custom resources run locally"
                )
            specs.append(CustomResourceSpec(logical_id, kind, arns[token], props))
        return specs


def _dead_letter_queues_first(specs: list[QueueSpec]) -> list[QueueSpec]:
    """Order queues so that each comes after the dead-letter queue it redrives to."""
    ordered: list[QueueSpec] = []
    pending = list(specs)
    while pending:
        placed = {spec.logical_id for spec in ordered}
        ready = [s for s in pending if s.redrive is None or s.redrive.dead_letter_queue_id in placed]
        if not ready:
            raise TemplateError(f"redrive policies form a cycle: {', '.join(s.logical_id for s in pending)}")
        ordered += ready
        pending = [spec for spec in pending if spec not in ready]
    return ordered


def merge_globals(global_props: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals rule: maps merge, lists append (globals first), other values are overridden."""
    merged = dict(global_props)
    for key, value in own.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = merge_globals(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            merged[key] = current + value
        else:
            merged[key] = value
    return merged


def substitute(text: str, substitutions: Mapping[str, Any]) -> str:
    """Apply `DefinitionSubstitutions`: `${Key}` becomes the value; unknown keys stay as they are."""
    return _SUBSTITUTION.sub(
        lambda match: as_text(substitutions[match[1]]) if match[1] in substitutions else match[0], text
    )


def _state_machine_type(logical_id: str, value: Any) -> Literal["STANDARD", "EXPRESS"]:
    kind = str(value or "STANDARD").upper()
    if kind == "STANDARD":
        return "STANDARD"
    if kind == "EXPRESS":
        return "EXPRESS"
    raise TemplateError(f"{logical_id}: state machine type must be STANDARD or EXPRESS, not {value!r}")


def rate_seconds(expression: str) -> int | None:
    """Seconds between runs of `rate(N unit)`; None for cron()/at() expressions."""
    match = _RATE.match(expression.strip())
    if match is None:
        return None
    return int(match[1]) * _UNIT_SECONDS[match[2].rstrip("s")]


def _generated_secret(rule: Mapping[str, Any]) -> GeneratedSecret:
    def flag(name: str, default: bool) -> bool:
        return as_bool(rule.get(name, default))

    return GeneratedSecret(
        password_length=int(rule.get("PasswordLength", 32)),
        exclude_characters=str(rule.get("ExcludeCharacters", "")),
        exclude_numbers=flag("ExcludeNumbers", False),
        exclude_punctuation=flag("ExcludePunctuation", False),
        exclude_uppercase=flag("ExcludeUppercase", False),
        exclude_lowercase=flag("ExcludeLowercase", False),
        include_space=flag("IncludeSpace", False),
        require_each_included_type=flag("RequireEachIncludedType", True),
        secret_string_template=rule.get("SecretStringTemplate"),
        generate_string_key=rule.get("GenerateStringKey"),
    )


def load_template(
    path: str | Path,
    parameter_overrides: str | Mapping[str, str] = "",
    context: StackContext | None = None,
) -> Template:
    """Load a SAM template and resolve its parameters (overrides in `sam deploy` syntax or a dict)."""
    template_path = Path(path).resolve()
    document = load_yaml_file(template_path)
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise TemplateError(f"{template_path} is not a CloudFormation template (no Resources)")
    overrides = (
        parse_overrides(parameter_overrides) if isinstance(parameter_overrides, str) else parameter_overrides
    )
    parameters = resolve_parameters(document.get("Parameters") or {}, overrides)
    return Template(
        path=template_path, document=document, parameters=parameters, context=context or StackContext()
    )
