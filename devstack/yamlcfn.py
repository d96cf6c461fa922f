"""A YAML loader for CloudFormation/SAM templates.

CloudFormation's YAML short tags (``!Ref X``, ``!GetAtt A.B``, ``!Sub ...``) are not plain YAML, so
``yaml.safe_load`` rejects them. This loader turns every short tag into the long JSON form
(``{"Ref": "X"}``, ``{"Fn::GetAtt": ["A", "B"]}``) so that the rest of devstack only deals with one
shape. It also keeps dates as strings, as CloudFormation does (``AWSTemplateFormatVersion``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from devstack.errors import TemplateError

_FN_TAGS = (
    "And",
    "Base64",
    "Cidr",
    "Equals",
    "FindInMap",
    "GetAZs",
    "GetAtt",
    "If",
    "ImportValue",
    "Join",
    "Not",
    "Or",
    "Select",
    "Split",
    "Sub",
    "Transform",
)


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation short tags."""


def _node_value(loader: CfnLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    assert isinstance(node, yaml.MappingNode)
    return loader.construct_mapping(node, deep=True)


def _construct_ref(loader: CfnLoader, node: yaml.Node) -> dict[str, Any]:
    return {"Ref": _node_value(loader, node)}


def _construct_condition(loader: CfnLoader, node: yaml.Node) -> dict[str, Any]:
    return {"Condition": _node_value(loader, node)}


def _construct_get_att(loader: CfnLoader, node: yaml.Node) -> dict[str, Any]:
    value = _node_value(loader, node)
    if isinstance(value, str):
        # `!GetAtt Res.Attr.Part` -> ["Res", "Attr.Part"]: only the first dot separates the resource.
        resource, _, attribute = value.partition(".")
        value = [resource, attribute]
    return {"Fn::GetAtt": value}


def _fn_constructor(name: str) -> Any:
    def construct(loader: CfnLoader, node: yaml.Node) -> dict[str, Any]:
        return {f"Fn::{name}": _node_value(loader, node)}

    return construct


CfnLoader.add_constructor("!Ref", _construct_ref)
CfnLoader.add_constructor("!Condition", _construct_condition)
for _name in _FN_TAGS:
    CfnLoader.add_constructor(f"!{_name}", _fn_constructor(_name))
CfnLoader.add_constructor("!GetAtt", _construct_get_att)

# CloudFormation reads unquoted dates as strings; drop PyYAML's timestamp resolver.
CfnLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(text: str, source: str = "<string>") -> Any:
    """Parse CloudFormation YAML (or JSON, which is YAML) into plain Python data."""
    try:
        return yaml.load(text, Loader=CfnLoader)  # noqa: S506 - CfnLoader is a SafeLoader
    except yaml.YAMLError as exc:
        raise TemplateError(f"{source} is not valid YAML: {exc}") from exc


def load_yaml_file(path: Path) -> Any:
    """Parse a CloudFormation YAML/JSON file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"cannot read {path}: {exc}") from exc
    return load_yaml(text, str(path))
