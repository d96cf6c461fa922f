"""Each function gets only the variables its code reads (template.yaml), so a function without one runs
on the code's default: those defaults must be the template's, or two functions would disagree."""

from __future__ import annotations

import pytest

from devstack.template import Template, load_template
from flowgate.activation.models import ActivationSettings
from flowgate.config import Settings
from tests.conftest import ROOT

# What no function's behaviour depends on beyond its own identity.
NOT_SETTINGS = {
    "stage",
    "table_name",
    "local",
    "execution_queue_url",
    "approval_state_machine_arn",
    "webhook_secret_id",
    "sync_queue_url",
}
NOT_ACTIVATION = {"message_queue_url", "event_bus_name"}


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template(ROOT / "template.yaml")


def test_the_code_defaults_are_the_template_defaults(template: Template) -> None:
    defaults = Settings(table_name="t")
    activation_defaults = ActivationSettings()
    functions = list(template.functions())
    assert len(functions) >= 8
    for function in functions:
        env = {k: v for k, v in function.environment.items() if isinstance(v, str)}
        given = Settings.from_environ({**env, "TABLE_NAME": "t"})
        for name in set(Settings.model_fields) - NOT_SETTINGS:
            assert getattr(given, name) == getattr(defaults, name), (function.logical_id, name)
        activation = ActivationSettings.from_environ(env)
        for name in set(ActivationSettings.model_fields) - NOT_ACTIVATION:
            assert getattr(activation, name) == getattr(activation_defaults, name), (
                function.logical_id,
                name,
            )


def test_functions_get_only_what_they_use(template: Template) -> None:
    env = {f.logical_id: set(f.environment) for f in template.functions()}
    assert "TOKEN_TTL_SECONDS" in env["IdentityFunction"]
    # The two functions that log in with a password: the native API's and the EFT-style admin API's.
    logins = {"IdentityFunction", "PropagationFunction"}
    assert "TOKEN_TTL_SECONDS" in env["PropagationFunction"]
    assert all("TOKEN_TTL_SECONDS" not in names for fn, names in env.items() if fn not in logins)
    assert "APPROVAL_STATE_MACHINE_ARN" in env["WorkflowFunction"]
    assert "APPROVAL_STATE_MACHINE_ARN" not in env["FlowsFunction"]
    assert "WEBHOOK_SECRET_ID" in env["ApprovalNotifierFunction"]
    assert "EXECUTION_QUEUE_URL" not in env["EnforcerFunction"]
