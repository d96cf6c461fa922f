"""What each function's handler module loads when Lambda imports it (its cold start, DESIGN §6).

Each module is imported in a fresh interpreter as Lambda would (its CodeUri first on sys.path, shared/
as the layer) and the loaded modules are compared with what it must not pay for at import time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("handler_module", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps(sorted(sys.modules)))
"""

REST = ["identity/app.py", "flows/app.py", "connectors/app.py", "workflow/app.py"]
SQS = ["flows/runner.py", "flows/messages.py", "workflow/notifier.py"]
# Loaded by a route or a record when needed, never at import.
NEVER = {"boto3", "yaml", "requests", "dulwich", "cryptography", "argon2", "flowgate.flows.runner"}
PARSER_MODELS = "aws_lambda_powertools.utilities.parser.models"


def loaded(handler: str) -> set[str]:
    path = ROOT / "functions" / handler
    env = {**os.environ, "TABLE_NAME": "t", "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": ""}
    code = f"import sys; sys.path[:0] = [{str(path.parent)!r}, {str(ROOT / 'shared')!r}]\n" + PROBE
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("handler", REST + SQS + ["enforcer/app.py"])
def test_no_handler_loads_what_only_a_route_needs(handler: str) -> None:
    modules = loaded(handler)
    assert not {m for m in modules if m.split(".")[0] in NEVER or m in NEVER}
    # powertools' batch types load every parser event model once pydantic is loaded first
    assert not {m for m in modules if m.startswith(PARSER_MODELS)}


@pytest.mark.parametrize("handler", REST)
def test_rest_functions_do_not_load_the_batch_utilities(handler: str) -> None:
    assert not {m for m in loaded(handler) if m.startswith("aws_lambda_powertools.utilities.batch")}


@pytest.mark.parametrize("handler", ["flows/app.py", "connectors/app.py", "workflow/app.py"])
def test_other_contexts_do_not_load_identity_api_models_or_the_table(handler: str) -> None:
    modules = loaded(handler)
    assert "flowgate.identity.models" not in modules
    assert "flowgate.db" not in modules
