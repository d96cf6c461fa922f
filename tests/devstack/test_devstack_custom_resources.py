"""Custom resources: the Create request, the response through the gateway, FAILED fails the start."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from devstack import custom_resources
from devstack.apigw import RouteTable
from devstack.custom_resources import CfnResponses, create_custom_resources
from devstack.errors import StartupError
from devstack.gateway import CFN_RESPONSE_PREFIX, Gateway
from devstack.model import CustomResourceSpec
from devstack.naming import StackContext

CONTEXT = StackContext()
SPEC = CustomResourceSpec(
    logical_id="Bootstrap",
    resource_type="Custom::Bootstrap",
    function_id="Fn",
    properties={"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:fn", "Count": 2, "On": True},
)


def _answer(status: str, **extra: Any) -> Any:
    """A handler that answers through the ResponseURL, as cfn-response does."""

    def handler(function_id: str, event: dict[str, Any]) -> None:
        handler.events.append(event)  # type: ignore[attr-defined]
        body = {"Status": status, "RequestId": event["RequestId"], **extra}
        request = urllib.request.Request(event["ResponseURL"], data=json.dumps(body).encode(), method="PUT")
        with urllib.request.urlopen(request, timeout=10):
            pass

    handler.events = []  # type: ignore[attr-defined]
    return handler


@pytest.fixture
def responses() -> CfnResponses:
    return CfnResponses()


@pytest.fixture
def gateway(responses: CfnResponses) -> Iterator[Gateway]:
    gateway = Gateway(
        routes=RouteTable([]), invoke=lambda f, e: None, cfn_responses=responses, account_id="1", port=0
    )
    gateway.start()
    yield gateway
    gateway.stop()


def _create(invoke: Any, gateway: Gateway, responses: CfnResponses) -> Any:
    return create_custom_resources(
        [SPEC], invoke, responses, response_url_base=gateway.url + CFN_RESPONSE_PREFIX, context=CONTEXT
    )


def test_success_round_trip(gateway: Gateway, responses: CfnResponses) -> None:
    # Given a handler that answers SUCCESS with data
    handler = _answer("SUCCESS", PhysicalResourceId="boot-1", Data={"Username": "admin"})
    # When the custom resource is created (before the gateway serves API routes)
    created = _create(handler, gateway, responses)
    # Then the handler got CloudFormation's Create request, with string property values
    (event,) = handler.events
    assert event["RequestType"] == "Create"
    assert event["ResourceType"] == "Custom::Bootstrap"
    assert event["LogicalResourceId"] == "Bootstrap"
    assert event["StackId"] == CONTEXT.stack_id
    assert event["ServiceToken"] == SPEC.properties["ServiceToken"]
    assert event["ResourceProperties"] == {
        "ServiceToken": SPEC.properties["ServiceToken"],
        "Count": "2",
        "On": "true",
    }
    assert event["ResponseURL"] == f"{gateway.url}/__devstack/cfn-response/{event['RequestId']}"
    # And Ref/GetAtt of the resource are what it answered
    assert created["Bootstrap"].ref == "boot-1"
    assert created["Bootstrap"].attributes == {"Username": "admin"}


def test_failed_fails_the_start_with_its_reason(gateway: Gateway, responses: CfnResponses) -> None:
    with pytest.raises(StartupError, match="Bootstrap failed: the secret is missing"):
        _create(_answer("FAILED", Reason="the secret is missing"), gateway, responses)


def test_a_raising_handler_fails_the_start(gateway: Gateway, responses: CfnResponses) -> None:
    def handler(function_id: str, event: Any) -> None:
        raise ValueError("no table")

    with pytest.raises(StartupError, match="no table"):
        _create(handler, gateway, responses)


def test_no_response_fails_the_start(
    gateway: Gateway, responses: CfnResponses, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(custom_resources, "RESPONSE_GRACE_SECONDS", 0.05)
    with pytest.raises(StartupError, match="without sending a response"):
        _create(lambda function_id, event: None, gateway, responses)


def test_a_response_that_is_not_json_counts_as_failed(responses: CfnResponses) -> None:
    responses.expect("r")
    assert responses.deliver("r", b"<html>")
    response = responses.wait("r", 1)
    assert response is not None
    assert response["Status"] == "FAILED"
