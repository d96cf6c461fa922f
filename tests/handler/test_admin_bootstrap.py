"""The AdminBootstrap custom resource: CloudFormation asks the identity function to create the admin."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import boto3
import pytest

from tests.handler.conftest import Api, lambda_context, load_function


class _Recorder(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_PUT(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def response_url() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in for CloudFormation's pre-signed response URL, on loopback."""
    _Recorder.received = []
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/cfn-response", _Recorder.received
    server.shutdown()


def _event(request_type: str, url: str, secret_id: str) -> dict[str, Any]:
    return {
        "RequestType": request_type,
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:identity",
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/flowgate/1",
        "RequestId": f"req-{request_type}",
        "LogicalResourceId": "AdminBootstrap",
        "ResourceType": "Custom::AdminBootstrap",
        "ResourceProperties": {"SecretId": secret_id},
    }


def test_create_makes_the_admin_once_and_reports_success(aws: str, response_url):
    url, received = response_url
    secret = boto3.client("secretsmanager").create_secret(
        Name="admin", SecretString=json.dumps({"username": "root", "password": "generated-password-1"})
    )["ARN"]
    module = load_function("identity")
    # When CloudFormation creates, then updates, the resource
    module.handler(_event("Create", url, secret), lambda_context())
    module.handler(_event("Update", url, secret), lambda_context())
    # Then both report SUCCESS and the admin can log in
    assert [r["Status"] for r in received] == ["SUCCESS", "SUCCESS"]
    assert received[0]["PhysicalResourceId"] == "AdminBootstrap"
    api = Api(module, "identity")
    me = api.call("GET", "/api/latest/auth/me", token=api.login("root", "generated-password-1"))
    assert me.body["platform_admin"] is True


def test_a_failure_is_reported_not_swallowed(aws: str, response_url):
    url, received = response_url
    module = load_function("identity")
    module.handler(_event("Create", url, "no-such-secret"), lambda_context())
    assert received[0]["Status"] == "FAILED"
    assert "ResourceNotFoundException" in received[0]["Reason"]


def test_delete_leaves_the_admin_alone(aws: str, response_url):
    url, received = response_url
    module = load_function("identity")
    module.handler(_event("Delete", url, "ignored"), lambda_context())
    assert received[0]["Status"] == "SUCCESS"
