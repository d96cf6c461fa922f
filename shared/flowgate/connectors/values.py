"""Reading a connector's value: a YAML document (JSON is YAML too) that must be a mapping of inputs.

The parsed mapping is stored and later merged with vault secrets and call inputs, shown in API responses
and written to execution records, so it must be plain JSON data. The loader therefore keeps YAML's
implicit timestamps as strings (`date: 2024-01-01` stays a string, as it would be in JSON), and the
result is walked once to refuse what JSON cannot hold (binary, sets, NaN, non-string keys) and to
bound its size: a document of aliases (the "billion laughs") is small as text but huge as data.

`yaml` is imported on first use: listing or reading connectors never needs it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

from flowgate.errors import BadRequest

MAX_VALUE_BYTES = 64 * 1024
MAX_NODES = 10_000
MAX_DEPTH = 20

INVALID_VALUE = "invalid_connector_value"


def _invalid(message: str) -> BadRequest:
    return BadRequest(message, code=INVALID_VALUE)


@functools.cache
def _loader() -> type[Any]:
    import yaml

    base: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class ValueLoader(base):  # type: ignore[misc]
        """SafeLoader without implicit timestamps: what looks like a date stays a string."""

    ValueLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in base.yaml_implicit_resolvers.items()
    }
    return ValueLoader


def _kind(obj: Any) -> str:
    if isinstance(obj, list):
        return "a list"
    if isinstance(obj, bool):
        return "a boolean"
    if isinstance(obj, int | float):
        return "a number"
    if isinstance(obj, str):
        return "a string"
    return f"a {type(obj).__name__}"


def parse_value(text: str, *, field: str = "value") -> dict[str, Any]:
    """The mapping a connector value holds; BadRequest (`invalid_connector_value`) saying why not.

    An empty document is refused rather than read as "no inputs": `{}` says that explicitly.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
        raise _invalid(f"{field} is longer than {MAX_VALUE_BYTES // 1024} KiB")
    if not text.strip():
        raise _invalid(f"{field} is empty; use {{}} for a connector whose inputs all come later")
    import yaml

    try:
        loaded = yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = exc.problem or exc.context or "it cannot be parsed"
        raise _invalid(f"{field} is not a valid YAML or JSON document{where}: {problem}") from None
    except yaml.YAMLError:
        raise _invalid(f"{field} is not a valid YAML or JSON document") from None
    except RecursionError:
        raise _invalid(f"{field} is nested too deeply") from None
    if loaded is None:
        raise _invalid(f"{field} holds no inputs; use {{}} for a connector whose inputs all come later")
    if not isinstance(loaded, dict):
        raise _invalid(f"{field} must be a mapping of inputs (key: value), not {_kind(loaded)}")
    check_plain_data(loaded, field)
    return loaded


def check_plain_data(obj: Mapping[str, Any], field: str) -> None:
    """Refuse what JSON cannot hold, or more than MAX_NODES values / MAX_DEPTH levels, naming the path."""
    budget = [MAX_NODES]

    def walk(value: Any, path: str, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise _invalid(f"{field} holds more than {MAX_NODES} values")
        if depth > MAX_DEPTH:
            raise _invalid(f"{path} is nested more than {MAX_DEPTH} levels deep")
        if value is None or isinstance(value, str | bool | int):
            return
        if isinstance(value, float):
            if not math.isfinite(value):
                raise _invalid(f"{path}: NaN and infinite numbers are not supported")
            return
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise _invalid(f"{path}: keys must be strings, not {_kind(key)} ({key!r}); quote it")
                walk(item, f"{path}.{key}", depth + 1)
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]", depth + 1)
            return
        what = "binary data" if isinstance(value, bytes) else f"a {type(value).__name__}"
        raise _invalid(f"{path}: {what} is not supported; use a string")

    walk(dict(obj), field, 0)
