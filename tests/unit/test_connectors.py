"""Connectors without AWS or network: reading values, the type registry, validation messages, the input
merge with provenance and redaction, and scrubbing secrets from what gets recorded."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from flowgate.connectors import registry
from flowgate.connectors.merge import MASK, merge_inputs, scrub, secret_forms
from flowgate.connectors.models import PutConnectorRequest, PutSecretRequest, SecretInfo
from flowgate.connectors.runtime import RunContext
from flowgate.connectors.values import parse_value
from flowgate.errors import BadRequest
from flowgate.url_guard import OutboundPolicy

CTX = RunContext()  # production-like: public addresses only, no local repositories
LOCAL = RunContext(outbound_policy=OutboundPolicy.from_allow_list("127.0.0.0/8,::1"), allow_local_git=True)


def _bad(fn: Any, *args: Any) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        fn(*args)
    return caught.value


# ---- reading a value -------------------------------------------------------------------------------------


def test_yaml_mapping_of_the_seed_is_read() -> None:
    text = "ref: develop\ncommand: metadata\nrepository_url: 'https://example.com/path/to/repo.git'\n"
    assert parse_value(text) == {
        "ref": "develop",
        "command": "metadata",
        "repository_url": "https://example.com/path/to/repo.git",
    }


def test_json_is_accepted_since_yaml_is_a_superset() -> None:
    text = json.dumps({"url": "https://httpbin.org/post", "method": "post", "data": "payload", "timeout": 5})
    assert parse_value(text) == {
        "url": "https://httpbin.org/post",
        "method": "post",
        "data": "payload",
        "timeout": 5,
    }


def test_dates_stay_strings_so_values_are_plain_json() -> None:
    parsed = parse_value("data: 2024-01-01\nwhen: 2024-01-01T10:00:00Z\n")
    assert parsed == {"data": "2024-01-01", "when": "2024-01-01T10:00:00Z"}
    json.dumps(parsed)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "value must be a mapping of inputs (key: value), not a list"),
        ("just a string", "value must be a mapping of inputs (key: value), not a string"),
        ("42", "value must be a mapping of inputs (key: value), not a number"),
        ("true", "not a boolean"),
        ("", "value is empty"),
        ("   \n", "value is empty"),
        ("~", "value holds no inputs"),
        ("a: [1, 2\nb: 3\n", "value is not a valid YAML or JSON document (line 2, column"),
        ("url: x\n  bad: indent: here\n", "value is not a valid YAML or JSON document (line 2"),
        ('{"url": "x" "method": "get"}', "value is not a valid YAML or JSON document (line 1"),
        ("a: 1\n---\nb: 2\n", "value is not a valid YAML or JSON document"),
        ("data: !!binary aGVsbG8=\n", "value.data: binary data is not supported"),
        ("timeout: .nan\n", "value.timeout: NaN and infinite numbers are not supported"),
        ("headers:\n  1: x\n", "value.headers: keys must be strings"),
        ("params: !!set {a, b}\n", "value.params: a set is not supported"),
    ],
)
def test_values_that_are_not_a_mapping_of_plain_data_are_refused(text: str, expected: str) -> None:
    error = _bad(parse_value, text)
    assert error.code == "invalid_connector_value"
    assert expected in error.message


def test_alias_bombs_and_deep_nesting_are_bounded() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    assert "holds more than" in _bad(parse_value, bomb).message
    assert "nested" in _bad(parse_value, "a: " + "[" * 30 + "]" * 30).message
    assert "nesting depth" in _bad(parse_value, "a: " + "[" * 5000 + "]" * 5000).message


def test_oversized_values_are_refused() -> None:
    assert "longer than 64 KiB" in _bad(parse_value, "a: '" + "x" * 70_000 + "'").message


# ---- the registry and validation --------------------------------------------------------------------------


def test_unknown_type_lists_the_known_ones() -> None:
    error = _bad(registry.get_type, "SOAP")
    assert error.code == "unknown_connector_type"
    assert error.message == "unknown connector type 'SOAP'; known types are GIT, REST"


def test_type_names_are_case_insensitive() -> None:
    assert registry.get_type("rest").name == "REST"
    assert registry.get_type("Git").name == "GIT"


def test_a_partial_value_is_accepted_at_save_time_but_not_at_run_time() -> None:
    git = registry.get_type("GIT")
    registry.validate_partial(git, {"ref": "develop"}, CTX)  # url and command may come later
    error = _bad(registry.validate_full, git, {"ref": "develop"}, CTX)
    assert error.code == "invalid_connector_inputs"
    assert "inputs.repository_url: Field required" in error.message
    assert "inputs.command: Field required" in error.message


@pytest.mark.parametrize(
    ("type_name", "value", "expected"),
    [
        (
            "REST",
            {"method": "fetch"},
            "value.method: Input should be 'get', 'post', 'put', 'patch', 'delete'",
        ),
        ("REST", {"timeout": "soon"}, "value.timeout: Input should be a valid number"),
        ("REST", {"timeout": 301}, "value.timeout: Input should be less than or equal to 300"),
        ("REST", {"verify": "maybe"}, "value.verify: Input should be a valid boolean"),
        ("REST", {"headers": {"X-A": [1]}}, "value.headers: Value error, the header 'X-A' must be a string"),
        ("REST", {"headers": "x"}, "value.headers: Input should be a valid dictionary"),
        ("REST", {"auth": {"user": "x"}}, "value.auth.user: Extra inputs are not permitted"),
        ("REST", {"data": [1, 2]}, "value.data: Value error, data must be a string, or a mapping"),
        (
            "REST",
            {"colour": "red"},
            "value.colour: unknown input; the REST connector takes url, method, data, json",
        ),
        ("GIT", {"command": "clone"}, "value.command: Input should be 'metadata'"),
        ("GIT", {"ref": "-x"}, "value.ref: Value error, must not begin with '-'"),
    ],
)
def test_wrong_values_are_refused_naming_the_field(
    type_name: str, value: dict[str, Any], expected: str
) -> None:
    error = _bad(registry.validate_partial, registry.get_type(type_name), value, CTX)
    assert error.code == "invalid_connector_value"
    assert expected in error.message


def test_method_is_case_insensitive() -> None:
    model = registry.validate_full(
        registry.get_type("REST"), {"url": "https://example.com", "method": "POST"}, CTX
    )
    assert model.method == "post"


def test_data_and_json_together_are_refused_at_run_time() -> None:
    error = _bad(
        registry.validate_full,
        registry.get_type("REST"),
        {"url": "https://a.example", "data": "x", "json": {}},
        CTX,
    )
    assert "give either data or json" in error.message


def test_error_messages_never_echo_the_input() -> None:
    secret = "hunter2-very-secret"
    error = _bad(
        registry.validate_full,
        registry.get_type("REST"),
        {"url": "https://a.example", "timeout": secret},
        CTX,
    )
    assert secret not in error.message


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://127.0.0.1:8080/",
        "http://10.0.0.1/",
    ],
)
def test_rest_urls_to_internal_addresses_are_refused_when_saved(url: str) -> None:
    error = _bad(registry.validate_partial, registry.get_type("REST"), {"url": url}, CTX)
    assert error.code == "url_not_allowed"
    assert error.message.startswith("value.url: the host")


def test_loopback_is_accepted_with_the_local_allow_list() -> None:
    registry.validate_partial(registry.get_type("REST"), {"url": "http://127.0.0.1:8080/"}, LOCAL)


def test_local_repositories_are_refused_unless_allowed() -> None:
    git = registry.get_type("GIT")
    error = _bad(registry.validate_partial, git, {"repository_url": "/srv/repo"}, CTX)
    assert error.code == "url_not_allowed"
    assert "value.repository_url: local repositories are not allowed here" in error.message
    registry.validate_partial(git, {"repository_url": "/srv/repo"}, LOCAL)


# ---- request models ---------------------------------------------------------------------------------------


def test_put_connector_request_forbids_unknown_fields_and_checks_secret_names() -> None:
    PutConnectorRequest.model_validate({"type": "REST", "value": "{}", "secrets": ["api-key"]})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        PutConnectorRequest.model_validate({"type": "REST", "value": "{}", "id": "x"})
    with pytest.raises(ValidationError, match="String should match pattern"):
        PutConnectorRequest.model_validate({"type": "REST", "value": "{}", "secrets": ["../x"]})
    with pytest.raises(ValidationError, match="listed twice"):
        PutConnectorRequest.model_validate({"type": "REST", "value": "{}", "secrets": ["a", "a"]})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({}, "at least one key"),
        ({"a": float("nan")}, "plain JSON data"),
        ({"a": "x" * 70_000}, "larger than 64 KiB"),
        ({"": "x"}, "keys must not be empty"),
    ],
)
def test_put_secret_request_checks_the_value(value: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        PutSecretRequest.model_validate({"value": value})


def test_secret_info_has_no_field_for_the_value() -> None:
    assert "value" not in SecretInfo.model_fields


# ---- merging ------------------------------------------------------------------------------------------


def test_merge_order_value_then_vault_in_listed_order_then_call() -> None:
    merged = merge_inputs(
        {"port": 1, "host": "value-host", "only_value": "v"},
        {"first": {"port": 2, "user": "first-user"}, "second": {"port": 3, "password": "pw-second"}},
        {"port": 4, "only_call": "c"},
    )
    assert merged.inputs == {
        "port": 4,
        "host": "value-host",
        "only_value": "v",
        "user": "first-user",
        "password": "pw-second",
        "only_call": "c",
    }
    assert merged.sources == {
        "port": "call",
        "host": "value",
        "only_value": "value",
        "user": "vault",
        "password": "vault",
        "only_call": "call",
    }
    assert merged.secret_names == {"user": "first", "password": "second"}
    assert merged.redacted == {
        "port": 4,
        "host": "value-host",
        "only_value": "v",
        "user": MASK,
        "password": MASK,
        "only_call": "c",
    }


def test_later_vault_secret_wins_over_earlier_one() -> None:
    merged = merge_inputs({"port": 1}, {"a": {"port": 2}, "b": {"port": 3}}, {})
    assert merged.inputs["port"] == 3
    assert merged.sources["port"] == "vault"
    assert merged.secret_names["port"] == "b"
    assert merged.redacted["port"] == MASK


def test_vault_replaces_a_whole_top_level_key() -> None:
    merged = merge_inputs(
        {"headers": {"Accept": "x", "X-Key": "placeholder"}}, {"s": {"headers": {"X-Key": "k"}}}, {}
    )
    assert merged.inputs["headers"] == {"X-Key": "k"}


def test_secret_values_include_nested_strings_but_not_numbers() -> None:
    merged = merge_inputs({}, {"s": {"auth": {"username": "svc", "password": "p@ss word"}, "port": 5432}}, {})
    assert {"svc", "p@ss word", "p%40ss%20word", "p%40ss+word"} <= merged.secret_values
    assert "5432" not in merged.secret_values


def test_redacted_scrubs_a_secret_repeated_in_a_call_input() -> None:
    merged = merge_inputs({}, {"s": {"token": "tok-123456"}}, {"note": "uses tok-123456"})
    assert merged.redacted == {"token": MASK, "note": f"uses {MASK}"}


def test_scrub_replaces_secrets_everywhere() -> None:
    secrets = secret_forms(["s3cr3t", 'pa"ss'])
    data = {
        "body": {"echo": ["x s3cr3t y", {"deep": "s3cr3ts3cr3t"}], "s3cr3t": "key"},
        "raw": 'json {"p": "pa\\"ss"}',
        "status_code": 200,
        "ok": True,
        "none": None,
    }
    assert scrub(data, secrets) == {
        "body": {"echo": [f"x {MASK} y", {"deep": MASK + MASK}], MASK: "key"},
        "raw": f'json {{"p": "{MASK}"}}',
        "status_code": 200,
        "ok": True,
        "none": None,
    }
    assert scrub("nothing to hide", frozenset()) == "nothing to hide"


def test_scrub_prefers_the_longest_secret() -> None:
    assert scrub("abcdef", ["abc", "abcdef"]) == MASK
