"""Operators' counters as CloudWatch EMF lines, written at the end of the invocation that counted."""

from __future__ import annotations

import json

import pytest

from flowgate.observability import count, flushing_metrics
from tests.handler.conftest import Api, load_function

A = "/api/latest"
SCRIPT = "import flow_api\ndef handler(system, this, inputs):\n    return this.success('ok')\n"


def emf_counts(out: str) -> dict[str, float]:
    """The metric values of every EMF line in `out`, summed by name."""
    totals: dict[str, float] = {}
    for line in out.splitlines():
        if '"_aws"' not in line:
            continue
        doc = json.loads(line)
        for metric in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            values = doc[metric["Name"]]
            totals[metric["Name"]] = totals.get(metric["Name"], 0) + sum(
                values if isinstance(values, list) else [values]
            )
    return totals


def test_counts_are_flushed_when_the_handler_ends_even_when_it_raises(capsys: pytest.CaptureFixture[str]):
    @flushing_metrics
    def failing() -> None:
        count("WebhookDeliveryFailures")
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        failing()
    assert emf_counts(capsys.readouterr().out) == {"WebhookDeliveryFailures": 1}

    @flushing_metrics
    def quiet() -> None:
        return None

    quiet()  # nothing counted: no line at all
    assert emf_counts(capsys.readouterr().out) == {}


def test_a_started_execution_is_counted_by_the_flows_function(
    api: Api, tenants, capsys: pytest.CaptureFixture[str]
):
    a, _ = tenants
    flows = Api(load_function("flows"), "flows")
    ws = f"{A}/workspaces/{a.workspace_id}"
    assert flows.call("PUT", f"{ws}/flows/hello", {"script": SCRIPT}, token=a.admin_token).status == 201
    capsys.readouterr()
    assert flows.call("POST", f"{ws}/executions", {"flow": "hello"}, token=a.admin_token).status == 202
    assert emf_counts(capsys.readouterr().out) == {"ExecutionsStarted": 1}
