"""The process environment the handlers run in.

Handlers run in devstack's own process, so there is one `os.environ` for every function: their
variables are merged (a conflict would make one function see another's value, so it fails the start),
and the AWS SDK is pointed at the stack's moto with dummy credentials so nothing reaches AWS.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, MutableMapping

from devstack.errors import StartupError
from devstack.model import FunctionSpec

LOOPBACK_ALLOW_LIST = "127.0.0.0/8,::1"
# Each function's code names its own service, so different values are expected and not exported.
PER_FUNCTION_VARIABLES = frozenset({"POWERTOOLS_SERVICE_NAME"})
# Settings that would send SDK calls elsewhere than the local moto, or with real credentials.
_REMOVED_VARIABLES = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
_REMOVED_PREFIXES = ("AWS_ENDPOINT_URL_",)


def function_environment(functions: Iterable[FunctionSpec]) -> dict[str, str]:
    """Every function's variables in one mapping; a variable two functions set differently is an error.

    `OUTBOUND_ALLOW_LIST` becomes the loopback ranges unless the template gives a non-empty value:
    local peers (a second stack, a test server) live on loopback.
    """
    merged: dict[str, str] = {}
    owners: dict[str, str] = {}
    for spec in functions:
        for name, value in spec.environment.items():
            if name in PER_FUNCTION_VARIABLES:
                continue
            if name in merged and merged[name] != value:
                raise StartupError(
                    f"environment variable {name} is {merged[name]!r} in {owners[name]} but {value!r} in "
                    f"{spec.logical_id}; all functions share one process locally, so they must agree"
                )
            merged[name] = value
            owners.setdefault(name, spec.logical_id)
    if not merged.get("OUTBOUND_ALLOW_LIST"):
        merged["OUTBOUND_ALLOW_LIST"] = LOOPBACK_ALLOW_LIST
    return merged


def local_aws_environment(endpoint_url: str, region: str) -> dict[str, str]:
    """SDK settings that send every AWS call to the local moto server."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "FLOWGATE_LOCAL": "1",
    }


def apply_environment(values: Mapping[str, str], environ: MutableMapping[str, str] = os.environ) -> None:
    """Set `values`, first removing settings that could point the SDK at real AWS."""
    for name in list(environ):
        if name in _REMOVED_VARIABLES or name.startswith(_REMOVED_PREFIXES):
            del environ[name]
    environ.update(values)
