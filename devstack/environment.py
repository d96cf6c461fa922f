"""The environment each function's workers run in.

Every function runs in processes of its own (devstack.lambdas), so each gets what Lambda would give it
and nothing else: a few of the runtime's variables, the variables the template gives *that* function
(Globals included), and SDK settings that point every AWS call at the stack's moto with dummy
credentials. Nothing else of devstack's own environment (a profile, real keys, another function's
variables) reaches a handler.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from devstack.errors import StartupError
from devstack.model import FunctionSpec

LOOPBACK_ALLOW_LIST = "127.0.0.0/8,::1"
# What a process needs to run at all, taken from devstack's own environment (Lambda sets its own).
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")
# Each function's code names its own service, so different values are expected and not merged.
PER_FUNCTION_VARIABLES = frozenset({"POWERTOOLS_SERVICE_NAME"})


def local_aws_environment(endpoint_url: str, region: str) -> dict[str, str]:
    """SDK settings that send every AWS call to the local moto server, and read no AWS config files."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "FLOWGATE_LOCAL": "1",
    }


def runtime_environment(spec: FunctionSpec) -> dict[str, str]:
    """The variables Lambda's Python runtime sets, as far as code reads them without changing behaviour.

    LAMBDA_TASK_ROOT is left out on purpose: powertools reads it as "on Lambda" and then sends X-Ray
    segments to a daemon that does not run here.
    """
    return {
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "_HANDLER": spec.handler,
        "PYTHONUNBUFFERED": "1",  # the function's log lines reach devstack's output as they are written
    }


def function_environment(
    spec: FunctionSpec, aws: Mapping[str, str], inherited: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The whole environment of one function's workers.

    `inherited` (default: os.environ) gives only the PASSED_THROUGH variables. An empty
    `OUTBOUND_ALLOW_LIST` that the function declares becomes the loopback ranges: local peers (a second
    stack, a test server) live on loopback.
    """
    inherited = os.environ if inherited is None else inherited
    environment = {name: inherited[name] for name in PASSED_THROUGH if name in inherited}
    environment.update(runtime_environment(spec))
    environment.update(spec.environment)
    if "OUTBOUND_ALLOW_LIST" in spec.environment and not spec.environment["OUTBOUND_ALLOW_LIST"]:
        environment["OUTBOUND_ALLOW_LIST"] = LOOPBACK_ALLOW_LIST
    environment.update(aws)
    return environment


def merged_environment(functions: Iterable[FunctionSpec]) -> dict[str, str]:
    """Every function's variables in one mapping, for tests that run several handlers in one process.

    The local stack never does (each function has its own workers); a handler test or benchmark that
    calls the handlers of several functions in-process needs one environment that suits them all, so a
    variable two functions set differently is an error. An empty `OUTBOUND_ALLOW_LIST` becomes loopback.
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
                    f"{spec.logical_id}; they cannot share one process"
                )
            merged[name] = value
            owners.setdefault(name, spec.logical_id)
    if not merged.get("OUTBOUND_ALLOW_LIST"):
        merged["OUTBOUND_ALLOW_LIST"] = LOOPBACK_ALLOW_LIST
    return merged
