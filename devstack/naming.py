"""Physical names and ARNs of template resources in the local stack.

CloudFormation names resources `<stack>-<LogicalId>-<random>`; locally the names are deterministic and
readable (`flowgate-local-Table`) so that logs, moto dumps and tests can refer to them. Values that only
the service knows (a queue URL, a secret's ARN suffix) are planned here and replaced by what
provisioning returns.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StackContext:
    """Where the local stack pretends to live: the values of the AWS:: pseudo parameters."""

    stack_name: str = "flowgate-local"
    region: str = "us-east-1"
    account_id: str = "123456789012"

    @property
    def stack_id(self) -> str:
        """A stable stack ARN (the UUID is derived from the name instead of random)."""
        stack_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"devstack:{self.stack_name}")
        return f"arn:aws:cloudformation:{self.region}:{self.account_id}:stack/{self.stack_name}/{stack_uuid}"

    def pseudo_parameters(self) -> dict[str, Any]:
        """Values of `Ref: AWS::...` (AWS::NoValue is handled by the resolver)."""
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": self.stack_id,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
        }

    def arn(self, service: str, resource: str) -> str:
        """An ARN in this stack's region and account."""
        return f"arn:aws:{service}:{self.region}:{self.account_id}:{resource}"


@dataclass(frozen=True)
class Physical:
    """What `Ref` and `Fn::GetAtt` give for one resource."""

    ref: str
    attributes: Mapping[str, str] = field(default_factory=dict)


def planned_physical(
    logical_id: str,
    resource_type: str,
    properties: Mapping[str, Any],
    context: StackContext,
    resolve: Callable[[Any], Any],
) -> Physical:
    """The physical identity a resource will get, before it exists.

    `resolve` resolves an explicit name property (e.g. `TableName: !Sub ...`).
    """
    name_property, build = _BY_TYPE.get(resource_type, ("", _other))
    explicit = properties.get(name_property)
    name = default_name(context, logical_id) if explicit is None else str(resolve(explicit))
    if (
        resource_type == "AWS::SQS::Queue"
        and explicit is None
        and as_bool(resolve(properties.get("FifoQueue")))
    ):
        name += ".fifo"  # CloudFormation's generated FIFO queue names end in .fifo too
    return build(name, context)


def default_name(context: StackContext, logical_id: str) -> str:
    """The physical name of a resource whose template gives none."""
    return f"{context.stack_name}-{logical_id}"


def rest_api_id(context: StackContext, logical_id: str) -> str:
    """A stable 10-character REST API id, like the ones API Gateway generates."""
    return _api(default_name(context, logical_id), context).ref


def as_bool(value: Any) -> bool:
    """A template boolean, which may be a YAML bool or the text "true"/"false"."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _table(name: str, context: StackContext) -> Physical:
    return Physical(name, {"Arn": context.arn("dynamodb", f"table/{name}")})


def _queue(name: str, context: StackContext) -> Physical:
    url = f"https://sqs.{context.region}.amazonaws.com/{context.account_id}/{name}"
    return Physical(url, {"Arn": context.arn("sqs", name), "QueueName": name, "QueueUrl": url})


def _secret(name: str, context: StackContext) -> Physical:
    # The real ARN ends in a random suffix; provisioning replaces this partial ARN.
    arn = context.arn("secretsmanager", f"secret:{name}")
    return Physical(arn, {"Id": arn})


def _function(name: str, context: StackContext) -> Physical:
    return Physical(name, {"Arn": context.arn("lambda", f"function:{name}")})


def _state_machine(name: str, context: StackContext) -> Physical:
    arn = context.arn("states", f"stateMachine:{name}")
    return Physical(arn, {"Arn": arn, "Name": name})


def _layer(name: str, context: StackContext) -> Physical:
    return Physical(context.arn("lambda", f"layer:{name}:1"))


def _api(name: str, _context: StackContext) -> Physical:
    return Physical(hashlib.sha256(name.encode()).hexdigest()[:10])


def _log_group(name: str, context: StackContext) -> Physical:
    return Physical(name, {"Arn": context.arn("logs", f"log-group:{name}:*")})


def _topic(name: str, context: StackContext) -> Physical:
    arn = context.arn("sns", name)
    return Physical(arn, {"TopicArn": arn, "TopicName": name})


def _rule(name: str, context: StackContext) -> Physical:
    return Physical(name, {"Arn": context.arn("events", f"rule/{name}")})


def _role(name: str, context: StackContext) -> Physical:
    return Physical(name, {"Arn": f"arn:aws:iam::{context.account_id}:role/{name}"})


def _other(name: str, _context: StackContext) -> Physical:
    return Physical(name)


# resource type -> (property holding an explicit name, how Ref/GetAtt values follow from the name)
_BY_TYPE: dict[str, tuple[str, Callable[[str, StackContext], Physical]]] = {
    "AWS::DynamoDB::Table": ("TableName", _table),
    "AWS::SQS::Queue": ("QueueName", _queue),
    "AWS::SecretsManager::Secret": ("Name", _secret),
    "AWS::Serverless::Function": ("FunctionName", _function),
    "AWS::Lambda::Function": ("FunctionName", _function),
    "AWS::Serverless::StateMachine": ("Name", _state_machine),
    "AWS::StepFunctions::StateMachine": ("StateMachineName", _state_machine),
    "AWS::Serverless::LayerVersion": ("LayerName", _layer),
    "AWS::Lambda::LayerVersion": ("LayerName", _layer),
    "AWS::Serverless::Api": ("Name", _api),
    "AWS::ApiGateway::RestApi": ("Name", _api),
    "AWS::Logs::LogGroup": ("LogGroupName", _log_group),
    "AWS::SNS::Topic": ("TopicName", _topic),
    "AWS::Events::Rule": ("Name", _rule),
    "AWS::IAM::Role": ("RoleName", _role),
}
