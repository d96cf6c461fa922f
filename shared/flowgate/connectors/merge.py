"""Merging a connection's inputs (seed 003) and keeping vault secrets out of every record.

Order, later wins, key by key at the top level: the connector's value, then the vault secrets listed on
the connector (in the order listed), then the inputs of the call. A later layer replaces a whole
top-level key (a vault `headers` replaces the value's `headers`; it is not merged into it), which is
what "inputs applied later override keys" means in the source product.

`Merged.inputs` is for running only. What may be stored or shown is `Merged.redacted` (every key a
vault secret supplied reads `***`) and `Merged.sources` (which layer supplied each key). Because a
server can echo a secret back (an API that reflects its request, an error page), outputs, logs and
error messages go through `scrub` with `Merged.secret_values` too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, quote_plus

Source = Literal["value", "vault", "call"]
MASK = "***"


@dataclass(frozen=True)
class Merged:
    """The merged inputs of one connection, with where each key came from."""

    # Everything, secrets included: pass to the connector type, never store (and kept out of repr, so
    # logging a Merged or a Prepared by mistake shows no secret).
    inputs: dict[str, Any] = field(repr=False)
    sources: dict[str, Source]  # key -> the layer that supplied it
    redacted: dict[str, Any]  # `inputs` with vault-supplied values masked: safe to store and show
    secret_values: frozenset[str] = field(repr=False)  # the strings to scrub from anything recorded
    secret_names: dict[str, str] = field(default_factory=dict)  # vault-supplied key -> the secret's name


def _leaves(value: Any) -> Iterator[str]:
    """The strings inside a secret's value. Numbers and booleans are not treated as secret material:
    scrubbing every "1" or "true" from outputs would destroy them and protect nothing."""
    if isinstance(value, str):
        if value:
            yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)


def secret_forms(values: Iterable[str]) -> frozenset[str]:
    """Each secret as given plus the spellings it takes on the wire and in JSON (percent-encoded,
    form-encoded, JSON-escaped), since an echo of a request shows those."""
    out: set[str] = set()
    for value in values:
        out.add(value)
        out.add(quote(value, safe=""))
        out.add(quote_plus(value))
        out.add(json.dumps(value)[1:-1])
    return frozenset(v for v in out if v)


def merge_inputs(
    value: Mapping[str, Any], vault: Mapping[str, Mapping[str, Any]], call: Mapping[str, Any]
) -> Merged:
    """Merge the three layers; `vault` maps secret name -> its value, in the connector's order."""
    inputs: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    secret_names: dict[str, str] = {}
    for key, item in value.items():
        inputs[key], sources[key] = item, "value"
    secrets: list[str] = []
    for name, secret in vault.items():
        for key, item in secret.items():
            inputs[key], sources[key] = item, "vault"
            secret_names[key] = name
        # Every string of every listed secret is scrubbed, even one a call input overrides.
        secrets.extend(_leaves(secret))
    for key, item in call.items():
        inputs[key], sources[key] = item, "call"
        secret_names.pop(key, None)
    secret_values = secret_forms(secrets)
    redacted = scrub(
        {key: MASK if sources[key] == "vault" else item for key, item in inputs.items()}, secret_values
    )
    return Merged(inputs, sources, redacted, secret_values, secret_names)


def _pattern(secret_values: Iterable[str]) -> re.Pattern[str] | None:
    ordered = sorted({v for v in secret_values if v}, key=len, reverse=True)  # longest first
    return re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None


def scrub(obj: Any, secret_values: Iterable[str]) -> Any:
    """A copy of `obj` with every occurrence of any secret value, in any string, dict key or nested
    list/dict, replaced by `***`. Other values (numbers, booleans, None) are returned as they are."""
    pattern = _pattern(secret_values)
    if pattern is None:
        return obj
    return _scrub(obj, pattern)


def _scrub(obj: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(obj, str):
        return pattern.sub(MASK, obj)
    if isinstance(obj, Mapping):
        return {_scrub(k, pattern): _scrub(v, pattern) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_scrub(item, pattern) for item in obj]
    if isinstance(obj, bytes):
        text = obj.decode("utf-8", errors="replace")
        return pattern.sub(MASK, text).encode() if pattern.search(text) else obj
    return obj
