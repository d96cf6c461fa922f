"""template.yaml as the local stack reads it (`devstack.template`), parsed once per process: the
functions with their routes and schedules, so tests and benchmarks take them from the one source."""

from __future__ import annotations

import functools
from pathlib import Path

from devstack.model import FunctionSpec
from devstack.template import Template, load_template

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@functools.cache
def stack_template(path: Path = TEMPLATE) -> Template:
    """The template with its parameters' defaults, in devstack's account and region (moto's too)."""
    return load_template(path)


@functools.cache
def template_functions(path: Path = TEMPLATE) -> tuple[FunctionSpec, ...]:
    """Every function of the template with Globals applied (reading them takes about a second)."""
    return tuple(stack_template(path).functions())


def template_function(logical_id: str, path: Path = TEMPLATE) -> FunctionSpec:
    """One function of the template, by logical id."""
    for spec in template_functions(path):
        if spec.logical_id == logical_id:
            return spec
    raise KeyError(f"{path} has no function {logical_id!r}")
