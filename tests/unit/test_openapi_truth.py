"""The OpenAPI document tells the truth (issue 9, item 4): each route documents the statuses it answers,
every refusal with the `{"error": {"code", "message"}}` schema, never powertools' 422, and the
parameters' enums and ranges as the code checks them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devstack import openapi, openapi_admin

DOCUMENT: dict[str, Any] = json.loads(openapi.DOCUMENT.read_text())
OPERATIONS = [
    ((method.upper(), path), operation)
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
]


def test_no_route_documents_422_or_a_validation_error_schema() -> None:
    text = json.dumps(DOCUMENT)
    assert '"422"' not in text
    assert "HTTPValidationError" not in text
    assert "ValidationError" not in DOCUMENT["components"]["schemas"]


@pytest.mark.parametrize(("route", "operation"), OPERATIONS, ids=[f"{m} {p}" for (m, p), _ in OPERATIONS])
def test_every_refusal_has_the_error_schema(route: tuple[str, str], operation: dict[str, Any]) -> None:
    responses = operation["responses"]
    assert any(s.startswith("2") for s in responses), route
    for status, answer in responses.items():
        if status.startswith("4"):
            schema = answer["content"]["application/json"]["schema"]
            expected = "GatewayError" if status in openapi.GATEWAY_ERRORS else "Error"
            if schema == openapi_admin.RPC_OR_ERROR:  # propagate's refusals: Error, or a JSON-RPC answer
                assert route[0] == "POST", route
                assert route[1].endswith(("/{artifact_id}", "/propagations")), route
                continue
            assert schema == {"$ref": f"#/components/schemas/{expected}"}, (route, status)
    if route != openapi.HEALTH:
        assert {"401", "429"} <= set(responses), route
        assert "Retry-After" in responses["429"]["headers"]
    if "requestBody" in operation:
        assert {"400", "413", "415"} <= set(responses), route
    if "{" in route[1]:
        assert "404" in responses, route


def test_the_error_schema_is_the_one_the_edge_sends() -> None:
    schema = DOCUMENT["components"]["schemas"]["Error"]
    assert schema["required"] == ["error"]
    assert schema["properties"]["error"]["required"] == ["code", "message"]


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("PUT", "/api/latest/workspaces/{ws}/flows/{name}", {"200", "201"}),
        ("DELETE", "/api/latest/workspaces/{ws}/flows/{name}", {"204"}),
        ("POST", "/api/latest/workspaces/{ws}/executions", {"202"}),
        ("POST", "/api/latest/contracts", {"201"}),
        ("POST", "/api/object/task/{uuid}/action/{decision}", {"200", "202"}),
        ("GET", "/api/latest/workspaces/{ws}/flows", {"200"}),
    ],
)
def test_successes_are_the_statuses_the_handlers_answer(method: str, path: str, statuses: set[str]) -> None:
    responses = DOCUMENT["paths"][path][method.lower()]["responses"]
    assert {s for s in responses if s.startswith("2")} == statuses
    if "204" in statuses:
        assert "content" not in responses["204"]


def test_pending_task_parameters_have_their_enum_and_range() -> None:
    for path in (
        "/api/admin/enterprises/{cid}/action/pendingtasks",
        "/api/admin/enterprises/{cid}/users/{uid}/action/pendingtasks",
    ):
        params = {p["name"]: p["schema"] for p in DOCUMENT["paths"][path]["get"]["parameters"]}
        assert {"DEPLOY", "UNDEPLOY", "RECONFIGURE"} <= set(params["type"]["anyOf"][0]["enum"])
        assert params["since"]["anyOf"][0]["maximum"] == 253_402_300_799_999


def test_public_routes_need_no_credentials_and_if_match_is_described() -> None:
    assert DOCUMENT["paths"]["/api/latest/health"]["get"]["security"] == []
    assert DOCUMENT["paths"]["/api/latest/auth/login"]["post"]["security"] == []
    patch = DOCUMENT["paths"]["/api/latest/workspaces/{ws}"]["patch"]
    assert "If-Match" in [p["name"] for p in patch["parameters"]]
    assert "412" in patch["responses"]
    decision = DOCUMENT["paths"]["/api/object/task/{uuid}/action/{decision}"]["post"]
    assert set(decision["requestBody"]["content"]) == {"application/json", "text/plain"}


def test_every_schema_referenced_is_defined() -> None:
    defined = set(DOCUMENT["components"]["schemas"])
    assert openapi._references(DOCUMENT) <= defined
