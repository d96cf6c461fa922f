"""What a stored JSON document and a display name may hold (flowgate.documents), and the edge's scan of
JSON bodies before they are parsed (flowgate.http.check_json_text)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from flowgate.documents import (
    DisplayName,
    StorableDocument,
    check_document,
    document_error,
    forbidden_character,
)
from flowgate.errors import BadRequest
from flowgate.http import _describe, check_json_text, invalid_body


@pytest.mark.parametrize(
    ("document", "path", "code"),
    [
        ({"a": {"b": [1, 2, float("inf")]}}, "a.b[2]", "unstorable_number"),
        ({"a": float("nan")}, "a", "unstorable_number"),
        ({"a": 1.1e-308}, "a", "unstorable_number"),
        ({"a": 5e-324}, "a", "unstorable_number"),
        ({"a": 1.7e308}, "a", "unstorable_number"),
        ({"a": 10**38}, "a", "unstorable_number"),
        ({"a": -(10**38)}, "a", "unstorable_number"),
        ({"a": {"": 1}}, "a", "empty_key"),
        ({"a": ["\ud800"]}, "a[0]", "invalid_text"),
        ({"a": {"\udc00": 1}}, "a", "invalid_text"),
        ({"odd key": {"k": [float("-inf")]}}, "['odd key'].k[0]", "unstorable_number"),
        ({"a": {1: "x"}}, "a", "invalid_text"),
        ({"a": b"bytes"}, "a", "invalid_text"),
    ],
)
def test_what_dynamodb_cannot_hold_is_found_with_its_path(document: Any, path: str, code: str) -> None:
    error = document_error(document)
    assert error is not None
    assert (error.path, error.code) == (path, code)
    with pytest.raises(BadRequest) as raised:
        check_document(document, "inputs")
    assert raised.value.code == code
    assert raised.value.message.startswith(f"inputs{'' if path.startswith('[') else '.'}{path}: ")


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"a": None, "b": True, "c": "text é ✓ 😀", "d": [1, 2.5, -0.0, 0]},
        {"big": 10**38 - 1, "small": 1e-130, "large": 9.9e125, "neg": -(10**38) + 1},
        {"nested": [[[[{"x": [1]}]]]]},
    ],
)
def test_what_dynamodb_holds_passes(document: Any) -> None:
    assert document_error(document) is None


def test_depth_is_bounded_without_recursion() -> None:
    # a document far deeper than Python's recursion limit is walked without recursing
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    error = document_error({"x": deep})
    assert error is not None
    assert error.code == "too_deep"
    assert error.path == "x" + "[0]" * 19
    nested: Any = "leaf"
    for _ in range(20):
        nested = {"k": nested}
    assert document_error(nested) is None  # 20 levels of maps: fine
    assert document_error({"k": nested}) is not None  # 21: too deep


def test_the_first_problem_in_document_order_is_named() -> None:
    error = document_error({"a": [1, {"": 2}], "b": float("nan")})
    assert error is not None
    assert (error.path, error.code) == ("a[1]", "empty_key")


class Body(BaseModel):
    inputs: StorableDocument
    name: DisplayName | None = None


def test_the_pydantic_type_names_the_path_below_the_field() -> None:
    with pytest.raises(ValidationError) as raised:
        Body.model_validate({"inputs": {"a": {"b": [1, 2, float("inf")]}}})
    bad = invalid_body(raised.value.errors())
    assert bad.code == "unstorable_number"
    assert bad.message == "inputs.a.b[2]: NaN and infinite numbers cannot be stored"


def test_a_problem_at_the_root_of_a_body_document() -> None:
    code, message = _describe(
        [
            {
                "type": "empty_key",
                "loc": ("body",),
                "msg": "...",
                "ctx": {"path": "", "problem": 'holds an empty key (""); map keys must not be empty'},
            }
        ]
    )
    assert (code, message) == ("empty_key", 'body: holds an empty key (""); map keys must not be empty')


def test_mixed_problems_are_a_validation_error_naming_each() -> None:
    with pytest.raises(ValidationError) as raised:
        Body.model_validate({"inputs": {"": 1}, "name": "a\x00b", "extra": 1})
    code, message = _describe([{**e, "loc": ("body", *e["loc"])} for e in raised.value.errors()])
    assert code == "validation_error"
    assert "inputs: holds an empty key" in message
    assert "name: a name must be text" in message


@pytest.mark.parametrize(
    "name",
    [
        "a\x00b",
        "a\x1bb",
        "a\nb",
        "a\rb",
        "a\tb",
        "a\x7fb",
        "a\x85b",
        "a\u200bb",
        "a\u200cb",
        "a\u200db",
        "a\u202ab",
        "a\u202eb",
        "a\u2066b",
        "a\u2069b",
        "a\ufeffb",
        "a\u2028b",
        "a\u2029b",
        "a\u00adb",
    ],
)
def test_display_names_refuse_control_and_formatting_characters(name: str) -> None:
    assert forbidden_character(name) is not None
    with pytest.raises(ValidationError) as raised:
        Body.model_validate({"inputs": {}, "name": name})
    bad = invalid_body(raised.value.errors())
    assert bad.code == "invalid_name"
    assert bad.message.startswith("name: a name must be text")
    assert f"U+{ord(name[1]):04X}" in bad.message


def test_a_lone_surrogate_is_no_string_for_pydantic_either() -> None:
    assert forbidden_character("a\ud800b") == "\ud800"
    with pytest.raises(ValidationError):
        Body.model_validate({"inputs": {}, "name": "a\ud800b"})


@pytest.mark.parametrize("name", ["plain", "Équipe données", "チーム", "ops (east) #2", "emoji 😀"])
def test_display_names_accept_text(name: str) -> None:
    assert Body.model_validate({"inputs": {}, "name": f"  {name} "}).name == name


# ---- the edge's scan ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("[" * 10_000 + "]" * 10_000, "too_deep"),
        ('{"a": ' * 65 + "1" + "}" * 65, "too_deep"),
        ("[" * 70 + '"unterminated', "too_deep"),
        ("1" * 5000, "unstorable_number"),
        ('{"n": -' + "1" * 1000 + "}", "unstorable_number"),
        ('["\\ud800"]', "invalid_text"),
        ('["\\udc00\\ud800"]', "invalid_text"),
        ('["\\ud800\\ud800\\udc00"]', "invalid_text"),
        ('{"\\uDBFF": 1}', "invalid_text"),
        ('["\ud800"]', "invalid_text"),
    ],
)
def test_the_edge_refuses_what_would_break_the_parser_or_the_store(body: str, code: str) -> None:
    with pytest.raises(BadRequest) as raised:
        check_json_text(body)
    assert raised.value.code == code


@pytest.mark.parametrize(
    "body",
    [
        '{"a": [1, 2, {"b": "c"}]}',
        "[" * 64 + "]" * 64,
        json.dumps({"script": "[" * 10_000}),  # brackets inside a string nest nothing
        json.dumps({"q": 'say \\"[[[[\\" ' * 100}),
        '["\\ud83d\\ude00", "\\\\ud800"]',  # a pair, and an escaped backslash before "ud800"
        json.dumps({"n": "1" * 5000}),  # a long number inside a string is text
        '{"broken": ',  # malformed: the parser's 400, not this scan's
        "",
    ],
)
def test_the_edge_lets_ordinary_json_through(body: str) -> None:
    check_json_text(body)


def test_the_scan_is_linear_and_fast() -> None:
    dense = json.dumps([[1, 2, 3, "abc"]] * 20_000)  # 360 kB, 80,000 brackets and 20,000 strings
    started = time.perf_counter()
    check_json_text(dense)
    assert time.perf_counter() - started < 1.0
    small = json.dumps({"name": "hello", "kind": "limited"})
    started = time.perf_counter()
    for _ in range(1000):
        check_json_text(small)
    assert time.perf_counter() - started < 0.2  # microseconds each
