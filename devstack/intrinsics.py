"""CloudFormation intrinsic functions, resolved against parameters and the local resources.

Only the values devstack needs are resolved (function environments, resource properties it creates,
custom resource properties), lazily: an IAM policy that uses an attribute devstack cannot know is never
evaluated, so it cannot fail the start.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import Any

from devstack.errors import TemplateError
from devstack.naming import Physical, StackContext, planned_physical

_NO_VALUE = object()  # what `Ref: AWS::NoValue` resolves to: the key or item disappears
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class Resolver:
    """Resolves `Ref`, `Fn::*` and `Condition` nodes in template values."""

    def __init__(
        self,
        *,
        context: StackContext,
        parameters: Mapping[str, Any],
        resources: Mapping[str, Mapping[str, Any]],
        conditions: Mapping[str, Any],
        mappings: Mapping[str, Any],
        known: Mapping[str, Physical],
    ) -> None:
        self._context = context
        self._parameters = parameters
        self._resources = resources
        self._conditions = conditions
        self._mappings = mappings
        self._known = known
        self._planned: dict[str, Physical] = {}
        self._condition_values: dict[str, bool] = {}
        self._in_progress: set[str] = set()
        self._functions: dict[str, Callable[[Any], Any]] = {
            "Ref": self._ref,
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::Join": self._join,
            "Fn::Select": self._select,
            "Fn::Split": self._split,
            "Fn::If": self._if,
            "Fn::Equals": self._equals,
            "Fn::Not": self._not,
            "Fn::And": self._and,
            "Fn::Or": self._or,
            "Fn::FindInMap": self._find_in_map,
            "Fn::Base64": self._base64,
            "Fn::GetAZs": self._get_azs,
            "Condition": self.condition,
        }

    def resolve(self, node: Any) -> Any:
        """The value of a template node with every intrinsic function applied."""
        value = self._resolve(node)
        return None if value is _NO_VALUE else value

    def physical(self, logical_id: str) -> Physical:
        """What Ref/GetAtt give for a resource: the provisioned value, else the planned one."""
        if logical_id in self._known:
            return self._known[logical_id]
        if logical_id not in self._resources:
            raise TemplateError(f"reference to unknown resource or parameter {logical_id!r}")
        if logical_id not in self._planned:
            if logical_id in self._in_progress:
                raise TemplateError(f"circular reference through resource {logical_id}")
            self._in_progress.add(logical_id)
            try:
                resource = self._resources[logical_id]
                self._planned[logical_id] = planned_physical(
                    logical_id,
                    str(resource.get("Type", "")),
                    resource.get("Properties") or {},
                    self._context,
                    self.resolve,
                )
            finally:
                self._in_progress.discard(logical_id)
        return self._planned[logical_id]

    def condition(self, name: str) -> bool:
        """The value of a named entry of the template's Conditions section."""
        if name not in self._condition_values:
            if name not in self._conditions:
                raise TemplateError(f"unknown condition {name!r}")
            self._condition_values[name] = bool(self.resolve(self._conditions[name]))
        return self._condition_values[name]

    def _resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [item for item in (self._resolve(v) for v in node) if item is not _NO_VALUE]
        if isinstance(node, dict):
            if len(node) == 1:
                ((key, argument),) = node.items()
                function = self._functions.get(key)
                # `Condition: name` is a function only with a string argument (IAM uses the key too).
                if function is not None and (key != "Condition" or isinstance(argument, str)):
                    return function(argument)
            resolved = ((key, self._resolve(value)) for key, value in node.items())
            return {key: value for key, value in resolved if value is not _NO_VALUE}
        return node

    def _args(self, name: str, argument: Any, count: int) -> list[Any]:
        if not isinstance(argument, list) or len(argument) != count:
            raise TemplateError(f"{name} takes a list of {count} items, got {argument!r}")
        return [self._resolve(item) for item in argument]

    def _ref(self, name: Any) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        pseudo = self._context.pseudo_parameters()
        if name in pseudo:
            return pseudo[name]
        if name in self._parameters:
            return self._parameters[name]
        return self.physical(str(name)).ref

    def _get_att(self, argument: Any) -> str:
        logical_id, attribute = self._args("Fn::GetAtt", argument, 2)
        physical = self.physical(str(logical_id))
        if attribute not in physical.attributes:
            resource_type = self._resources.get(str(logical_id), {}).get("Type", "?")
            raise TemplateError(
                f"Fn::GetAtt {logical_id}.{attribute} is not available locally for {resource_type}"
            )
        return physical.attributes[attribute]

    def _sub(self, argument: Any) -> str:
        if isinstance(argument, str):
            text, variables = argument, {}
        else:
            text, variables = self._args("Fn::Sub", argument, 2)
            if not isinstance(text, str) or not isinstance(variables, dict):
                raise TemplateError(f"Fn::Sub takes a string and a map, got {argument!r}")

        def replace(match: re.Match[str]) -> str:
            name = match[1]
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return as_text(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical_id, _, attribute = name.partition(".")
                return self._get_att([logical_id, attribute])
            return as_text(self._ref(name))

        return _SUB_VARIABLE.sub(replace, text)

    def _join(self, argument: Any) -> str:
        delimiter, items = self._args("Fn::Join", argument, 2)
        if not isinstance(items, list):
            raise TemplateError(f"Fn::Join needs a list of values, got {items!r}")
        return str(delimiter).join(as_text(item) for item in items)

    def _select(self, argument: Any) -> Any:
        index, items = self._args("Fn::Select", argument, 2)
        if not isinstance(items, list) or not 0 <= int(index) < len(items):
            raise TemplateError(f"Fn::Select index {index} is out of range for {items!r}")
        return items[int(index)]

    def _split(self, argument: Any) -> list[str]:
        delimiter, text = self._args("Fn::Split", argument, 2)
        return str(text).split(str(delimiter))

    def _if(self, argument: Any) -> Any:
        if not isinstance(argument, list) or len(argument) != 3:
            raise TemplateError(f"Fn::If takes [condition, then, else], got {argument!r}")
        name, when_true, when_false = argument
        return self._resolve(when_true if self.condition(str(name)) else when_false)

    def _equals(self, argument: Any) -> bool:
        left, right = self._args("Fn::Equals", argument, 2)
        return as_text(left) == as_text(right)

    def _not(self, argument: Any) -> bool:
        (value,) = self._args("Fn::Not", argument, 1)
        return not value

    def _and(self, argument: Any) -> bool:
        return all(self._resolve(item) for item in argument)

    def _or(self, argument: Any) -> bool:
        return any(self._resolve(item) for item in argument)

    def _find_in_map(self, argument: Any) -> Any:
        name, top, second = self._args("Fn::FindInMap", argument, 3)
        try:
            return self._mappings[name][top][second]
        except KeyError:
            raise TemplateError(f"Fn::FindInMap: no {name}/{top}/{second} in Mappings") from None

    def _base64(self, argument: Any) -> str:
        return base64.b64encode(as_text(self._resolve(argument)).encode()).decode()

    def _get_azs(self, _argument: Any) -> list[str]:
        return [f"{self._context.region}{zone}" for zone in "abc"]


def as_text(value: Any) -> str:
    """A resolved value as CloudFormation renders it inside strings."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(as_text(item) for item in value)
    return str(value)
