"""Template parameters: `sam deploy --parameter-overrides` parsing and CloudFormation validation.

The local stack must accept the same override string as `sam deploy`, and reject the same values
CloudFormation would, so that a mistake shows up locally rather than on the first deploy.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from devstack.errors import TemplateError

ParameterValue = str | list[str]

_LONG_FORM = re.compile(r"^ParameterKey=(?P<key>[^,=]+),ParameterValue=(?P<value>.*)$", re.DOTALL)
_SHORT_FORM = re.compile(r"^(?P<key>[A-Za-z0-9]+)=(?P<value>.*)$", re.DOTALL)


def parse_overrides(text: str) -> dict[str, str]:
    """Parse `Key=Value Other="a b"` or `ParameterKey=K,ParameterValue=V` (both may be mixed)."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise TemplateError(f"cannot parse parameter overrides {text!r}: {exc}") from exc
    overrides: dict[str, str] = {}
    for token in tokens:
        match = _LONG_FORM.match(token) or _SHORT_FORM.match(token)
        if match is None:
            raise TemplateError(
                f"bad parameter override {token!r}: expected Key=Value or ParameterKey=K,ParameterValue=V"
            )
        overrides[match["key"]] = match["value"]
    return overrides


def resolve_parameters(
    declared: Mapping[str, Mapping[str, Any]], overrides: Mapping[str, str]
) -> dict[str, ParameterValue]:
    """Each declared parameter's value: the override, else the default; validated like CloudFormation."""
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise TemplateError(
            f"unknown parameter(s) in overrides: {', '.join(unknown)}; "
            f"the template declares: {', '.join(sorted(declared)) or 'none'}"
        )
    values: dict[str, ParameterValue] = {}
    for name, spec in declared.items():
        if name in overrides:
            raw = overrides[name]
        elif "Default" in spec:
            raw = _scalar_text(spec["Default"])
        else:
            raise TemplateError(f"parameter {name} has no default and no override was given")
        values[name] = _validate(name, spec, raw)
    return values


def _scalar_text(value: Any) -> str:
    """A YAML default as CloudFormation sees it (numbers and lists as their text)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(_scalar_text(item) for item in value)
    return str(value)


def _validate(name: str, spec: Mapping[str, Any], raw: str) -> ParameterValue:
    kind = str(spec.get("Type", "String"))
    is_list = kind == "CommaDelimitedList" or kind.startswith("List<")
    items = [item.strip() for item in raw.split(",")] if is_list else [raw]
    numeric = kind in ("Number", "List<Number>")
    for item in items:
        _check_item(name, spec, item, numeric)
    if is_list:
        return items
    return raw


def _check_item(name: str, spec: Mapping[str, Any], value: str, numeric: bool) -> None:
    allowed = spec.get("AllowedValues")
    if numeric:
        number = _number(name, value)
        if allowed is not None and number not in {_number(name, _scalar_text(a)) for a in allowed}:
            raise TemplateError(f"parameter {name}={value} is not one of the allowed values {allowed}")
        if "MinValue" in spec and number < float(spec["MinValue"]):
            raise TemplateError(f"parameter {name}={value} is below its MinValue {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            raise TemplateError(f"parameter {name}={value} is above its MaxValue {spec['MaxValue']}")
        return
    if allowed is not None and value not in {_scalar_text(a) for a in allowed}:
        raise TemplateError(f"parameter {name}={value!r} is not one of the allowed values {allowed}")
    if "MinLength" in spec and len(value) < int(spec["MinLength"]):
        raise TemplateError(f"parameter {name} is shorter than its MinLength {spec['MinLength']}")
    if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        raise TemplateError(f"parameter {name} is longer than its MaxLength {spec['MaxLength']}")
    pattern = spec.get("AllowedPattern")
    # CloudFormation matches the whole value against AllowedPattern.
    if pattern is not None and re.fullmatch(str(pattern), value) is None:
        description = spec.get("ConstraintDescription") or f"must match {pattern}"
        raise TemplateError(f"parameter {name}={value!r} is invalid: {description}")


def _number(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise TemplateError(f"parameter {name}={value!r} must be a number") from None
