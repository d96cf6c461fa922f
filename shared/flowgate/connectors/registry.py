"""The registry of connector types: one module per type under `flowgate.connectors.types`, each
exposing `TYPE`, a `ConnectorType` with its pydantic schema and its `run` function.

A type module is imported when its type is first used, so a route that handles REST connectors never
imports the GIT module (nor, since types import them inside `run`, requests or dulwich).

Validation happens twice, with one schema:

* at save time the connector's value is *partial*: inputs may still come from vault secrets or from the
  call, so only "missing" errors are ignored; a wrong type, an unknown key or a bad value is refused;
* at run time the merged inputs are validated in full.

Error messages name the field (`value.method: Input should be 'get', ...`) and never echo the input,
which may hold a secret at run time.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from flowgate.errors import BadRequest

if TYPE_CHECKING:
    from flowgate.connectors.runtime import RunContext

M = TypeVar("M", bound=BaseModel)

# The type name (as users write it, upper case) -> the module that defines it.
_MODULES: dict[str, str] = {
    "REST": "flowgate.connectors.types.rest",
    "GIT": "flowgate.connectors.types.git",
}

INVALID_VALUE = "invalid_connector_value"
INVALID_INPUTS = "invalid_connector_inputs"
UNKNOWN_TYPE = "unknown_connector_type"
MAX_ERRORS_SHOWN = 5


@dataclass(frozen=True)
class ConnectorType(Generic[M]):
    """One connector type.

    * `schema`: the inputs, a pydantic model with `extra="forbid"`.
    * `run(inputs, ctx)`: performs the call and returns the outputs (plain JSON data); raises
      `ConnectorError` with a message fit for the execution record.
    * `check(inputs, ctx, prefix)`: optional policy checks that need the platform's context rather than the
      schema (the URL guard, local repositories); runs on the saved value and on the merged inputs.
      Receives the mapping (a saved value may be partial) and the prefix to name fields with.
    * `derived_secrets(inputs, secret_values)`: optional; strings the call derives from secret inputs
      (e.g. a Basic authorization header) that must be scrubbed from outputs as well.
    """

    name: str
    schema: type[M]
    run: Callable[[M, RunContext], dict[str, Any]]
    check: Callable[[Mapping[str, Any], RunContext, str], None] | None = None
    derived_secrets: Callable[[M, frozenset[str]], set[str]] | None = None
    description: str = ""


def known_types() -> list[str]:
    return sorted(_MODULES)


def canonical_name(name: str) -> str:
    """The registered spelling of a type name (types are matched case-insensitively: `rest` is REST)."""
    upper = name.strip().upper()
    if upper not in _MODULES:
        raise BadRequest(
            f"unknown connector type {name!r}; known types are {', '.join(known_types())}", code=UNKNOWN_TYPE
        )
    return upper


@functools.cache
def get_type(name: str) -> ConnectorType[Any]:
    """The type registered under `name` (any case); BadRequest `unknown_connector_type` otherwise."""
    module = importlib.import_module(_MODULES[canonical_name(name)])
    spec: ConnectorType[Any] = module.TYPE
    return spec


def _location(prefix: str, loc: tuple[int | str, ...]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def format_errors(
    exc: ValidationError, prefix: str, spec: ConnectorType[Any], *, skip_missing: bool
) -> str | None:
    """One line per error, `prefix.field: message`, or None when nothing is left after skipping.

    Messages come from pydantic's `msg` only (never `input`), so a secret input cannot leak through them.
    """
    lines: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        if skip_missing and error["type"] == "missing":
            continue
        where = _location(prefix, tuple(error["loc"]))
        message = error["msg"]
        if error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
            message = f"unknown input; the {spec.name} connector takes {', '.join(_input_names(spec.schema))}"
        lines.append(f"{where}: {message}")
    if not lines:
        return None
    more = len(lines) - MAX_ERRORS_SHOWN
    shown = lines[:MAX_ERRORS_SHOWN] + ([f"and {more} more"] if more > 0 else [])
    return "; ".join(shown)


def _input_names(schema: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in schema.model_fields.items()]


def validate_partial(spec: ConnectorType[Any], value: Mapping[str, Any], ctx: RunContext) -> None:
    """Check a saved value: every key it has must be valid; keys it lacks may come later."""
    try:
        spec.schema.model_validate(dict(value))
    except ValidationError as exc:
        message = format_errors(exc, "value", spec, skip_missing=True)
        if message is not None:
            raise BadRequest(message, code=INVALID_VALUE) from None
    if spec.check is not None:
        spec.check(value, ctx, "value")


def validate_full(spec: ConnectorType[M], inputs: Mapping[str, Any], ctx: RunContext) -> M:
    """The merged inputs as the type's model; BadRequest `invalid_connector_inputs` naming each field."""
    try:
        model = spec.schema.model_validate(dict(inputs))
    except ValidationError as exc:
        message = format_errors(exc, "inputs", spec, skip_missing=False)
        raise BadRequest(message or "the inputs are not valid", code=INVALID_INPUTS) from None
    if spec.check is not None:
        spec.check(inputs, ctx, "inputs")
    return model
