import json

import pytest

from flowgate import db
from flowgate.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from flowgate.http import _check_body, _describe


def test_validation_messages_name_fields_and_never_echo_values():
    code, message = _describe(
        [
            {
                "type": "extra_forbidden",
                "loc": ("body", "owner_id"),
                "msg": "Extra inputs",
                "input": "s3cret",
            },
            {
                "type": "string_too_short",
                "loc": ("body", "password"),
                "msg": "String should have at least 12 characters",
                "input": "hunter2",
            },
        ]
    )
    assert code == "validation_error"
    assert message == "owner_id: unknown field; password: String should have at least 12 characters"
    assert "hunter2" not in message
    assert "s3cret" not in message


def test_malformed_json_has_its_own_code():
    code, message = _describe(
        [
            {
                "type": "json_invalid",
                "loc": ("body", 3),
                "msg": "JSON decode error",
                "ctx": {"error": "Expecting value"},
            }
        ]
    )
    assert code == "malformed_json"
    assert "Expecting value" in message


def test_missing_body_is_explained():
    assert (
        _describe([{"type": "missing", "loc": ("body",), "msg": "Field required"}])[1]
        == "body: a JSON body is required"
    )


def test_body_guards():
    ok = {"body": json.dumps({"a": 1}), "headers": {"Content-Type": "application/json; charset=utf-8"}}
    _check_body(ok, 100)
    _check_body({"body": "{}", "headers": {}}, 100)  # no content type: taken as JSON
    _check_body({"body": "{}", "headers": {"content-type": "application/merge-patch+json"}}, 100)
    with pytest.raises(PayloadTooLarge):
        _check_body({"body": "x" * 101, "headers": {}}, 100)
    with pytest.raises(PayloadTooLarge):  # bytes, not characters, count
        _check_body({"body": "é" * 60, "headers": {}}, 100)
    with pytest.raises(UnsupportedMediaType):
        _check_body({"body": "a=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 100)
    with pytest.raises(UnsupportedMediaType):
        _check_body({"body": "AAEC", "isBase64Encoded": True, "headers": {}}, 100)


def test_cursors_round_trip_and_reject_tampering():
    key = {"PK": {"S": "CONTRACT#1"}, "SK": {"S": "META"}}
    cursor = db.encode_cursor(key)
    assert cursor is not None
    assert db.decode_cursor(cursor) == key
    assert db.encode_cursor(None) is None
    for bad in ("%%%", "bm90IGpzb24", db.encode_cursor({"PK": {"N": "1"}})):
        with pytest.raises(BadRequest):
            db.decode_cursor(bad)
