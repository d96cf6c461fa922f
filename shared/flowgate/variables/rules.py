"""Run-time variable references, pure: what a name is, where `%NAME%` occurs in a text, and substituting
values into texts and documents.

A reference is `%NAME%` with NAME a variable name (a letter or `_`, then letters, digits, `_` or `.`, at
most 128 characters). Anything else with a percent sign is plain text: a lone `%`, `%%`, `50%`,
`%20` (a URL's escape) or `% x %`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from flowgate.errors import BadRequest

NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_.]{0,127}"
NAME = re.compile(rf"^{NAME_PATTERN}$")
REFERENCE = re.compile(rf"%({NAME_PATTERN})%")

# Defined by the platform, never by a workspace: the workspace's id and name, and the id of the
# execution a connection runs as.
BUILTINS = ("WORKSPACE_ID", "WORKSPACE_NAME", "EXECUTION_ID")

UNKNOWN_VARIABLE = "unknown_variable"


class UnknownVariable(BadRequest):
    """A text names a variable that has no value (400 `unknown_variable`).

    `names` (the variables) and `fields` (where they were named, when known) carry it machine-readably.
    """

    status, code = 400, UNKNOWN_VARIABLE

    def __init__(
        self,
        name: str,
        message: str | None = None,
        *,
        names: Sequence[str] = (),
        fields: Sequence[str] = (),
    ) -> None:
        super().__init__(message or f"the run-time variable %{name}% is not defined", code=UNKNOWN_VARIABLE)
        self.name = name
        self.names = list(names) or [name]
        self.fields = list(fields)


def is_name(name: str) -> bool:
    return bool(NAME.match(name))


def is_builtin(name: str) -> bool:
    """Whether `name` is a built-in's (case-insensitively: `workspace_id` would only confuse)."""
    return name.upper() in BUILTINS


def references(text: str) -> list[str]:
    """The variable names `text` refers to, in order of first appearance, without duplicates."""
    return list(dict.fromkeys(match.group(1) for match in REFERENCE.finditer(text)))


def flow_text(text: str) -> str:
    """`text` with every reference's periods turned into underscores (`%CONNECTION.LOCAL_IP%` ->
    `%CONNECTION_LOCAL_IP%`): variable names in flows cannot hold periods (seed 004)."""
    return REFERENCE.sub(lambda m: "%" + m.group(1).replace(".", "_") + "%", text)


def substitute(text: str, values: Mapping[str, str]) -> str:
    """`text` with each reference replaced by its value (looked up by exact name), in one pass: a value
    that itself reads `%X%` is not substituted again. A name not in `values` raises UnknownVariable."""

    def value_of(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise UnknownVariable(name)
        return values[name]

    return REFERENCE.sub(value_of, text)


def _walk(document: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(document, str):
        yield path, document
    elif isinstance(document, Mapping):
        for key, item in document.items():
            yield from _walk(item, f"{path}.{key}" if path else str(key))
    elif isinstance(document, list | tuple):
        for i, item in enumerate(document):
            yield from _walk(item, f"{path}[{i}]")


def strings_in(document: Any) -> list[tuple[str, str]]:
    """(path, string) of every string value inside a nested dict/list, paths dotted as the connectors'
    messages write them (`headers.Accept`, `items[0].url`); keys are not values and are left out."""
    return list(_walk(document, ""))


def substitute_document(document: Any, values: Mapping[str, str]) -> Any:
    """A copy of `document` with every string value substituted (keys and non-strings as they are)."""
    if isinstance(document, str):
        return substitute(document, values)
    if isinstance(document, Mapping):
        return {key: substitute_document(item, values) for key, item in document.items()}
    if isinstance(document, list | tuple):
        return [substitute_document(item, values) for item in document]
    return document
