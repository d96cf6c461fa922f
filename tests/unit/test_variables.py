"""Run-time variable rules without AWS: names, references in text, periods for flows, substitution of
texts and documents, and the request model's limits."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flowgate.errors import BadRequest
from flowgate.variables import rules
from flowgate.variables.models import PutVariableRequest
from flowgate.variables.rules import BUILTINS, UnknownVariable
from flowgate.variables.service import check_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://%API_HOST%/v1", ["API_HOST"]),
        ("%A%%B% and %A% again", ["A", "B"]),  # in order, without duplicates
        ("%CONNECTION.LOCAL_IP%:%PORT%", ["CONNECTION.LOCAL_IP", "PORT"]),
        ("%_private%", ["_private"]),
        ("no references", []),
        ("a lone % sign", []),
        ("%%", []),
        ("50%", []),
        ("50% off, 20% more", []),
        ("%20encoded%2F", []),  # a URL's escapes are not names
        ("% spaced %", []),
        ("%9NINE%", []),  # a name starts with a letter or '_'
        ("%%API_HOST%%", ["API_HOST"]),
        ("%" + "x" * 128 + "%", ["x" * 128]),
        ("%" + "x" * 129 + "%", []),  # longer than a name
        ("", []),
    ],
)
def test_references(text: str, expected: list[str]) -> None:
    assert rules.references(text) == expected


def test_flow_text_turns_periods_of_references_into_underscores() -> None:
    assert rules.flow_text("%CONNECTION.LOCAL_IP%") == "%CONNECTION_LOCAL_IP%"
    assert rules.flow_text("at %A.B.C% in v1.2 50%") == "at %A_B_C% in v1.2 50%"  # plain text kept
    assert rules.flow_text("%PLAIN% and 1.5%") == "%PLAIN% and 1.5%"


def test_substitute() -> None:
    values = {"API_HOST": "api.example.com", "CONNECTION.LOCAL_IP": "10.0.0.1", "LOOP": "%API_HOST%"}
    assert rules.substitute("https://%API_HOST%/v1", values) == "https://api.example.com/v1"
    assert rules.substitute("%CONNECTION.LOCAL_IP%", values) == "10.0.0.1"
    assert rules.substitute("100% of %API_HOST%%", values) == "100% of api.example.com%"
    assert rules.substitute("%LOOP%", values) == "%API_HOST%"  # one pass: a value is not substituted again
    assert rules.substitute("nothing to do", {}) == "nothing to do"


def test_an_unknown_reference_raises_naming_it() -> None:
    with pytest.raises(UnknownVariable) as caught:
        rules.substitute("https://%API_HOST%/%MISSING%", {"API_HOST": "h"})
    assert isinstance(caught.value, BadRequest)
    assert (caught.value.status, caught.value.code) == (400, "unknown_variable")
    assert caught.value.names == ["MISSING"]
    assert "%MISSING%" in caught.value.message
    with pytest.raises(UnknownVariable):
        rules.substitute("%api_host%", {"API_HOST": "h"})  # looked up by exact name


def test_strings_in_and_substitute_document() -> None:
    document = {
        "url": "https://%HOST%/v1",
        "timeout": 5,
        "verify": True,
        "headers": {"X-Env": "%ENV%", "%KEY%": "keys are not values"},
        "items": [{"path": "/a/%ENV%"}, "plain", None],
    }
    assert rules.strings_in(document) == [
        ("url", "https://%HOST%/v1"),
        ("headers.X-Env", "%ENV%"),
        ("headers.%KEY%", "keys are not values"),
        ("items[0].path", "/a/%ENV%"),
        ("items[1]", "plain"),
    ]
    values = {"HOST": "h.example", "ENV": "qa"}
    substituted = rules.substitute_document(document, values)
    assert substituted == {
        "url": "https://h.example/v1",
        "timeout": 5,
        "verify": True,
        "headers": {"X-Env": "qa", "%KEY%": "keys are not values"},
        "items": [{"path": "/a/qa"}, "plain", None],
    }
    assert document["url"] == "https://%HOST%/v1"  # a copy: the original is unchanged


@pytest.mark.parametrize("name", ["API_HOST", "_x", "CONNECTION.LOCAL_IP", "a1.b2_c3", "x" * 128])
def test_good_names(name: str) -> None:
    check_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "9lives", "with space", "dash-ed", "x" * 129, "ünï", "a%b", ".dot", *BUILTINS, "workspace_id"],
)
def test_bad_and_built_in_names_are_invalid_name(name: str) -> None:
    with pytest.raises(BadRequest) as caught:
        check_name(name)
    assert caught.value.code == "invalid_name"


def test_the_request_model_limits() -> None:
    assert PutVariableRequest(value="x" * 4096).value == "x" * 4096
    with pytest.raises(ValidationError):
        PutVariableRequest(value="x" * 4097)
    with pytest.raises(ValidationError):
        PutVariableRequest(value="v", description="d" * 1025)
    with pytest.raises(ValidationError):
        PutVariableRequest.model_validate({"value": "v", "secret": True})  # unknown fields are refused
    with pytest.raises(ValidationError):
        PutVariableRequest.model_validate({"value": 5})
