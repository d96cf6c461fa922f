"""Listing cursors (flowgate.db) are sealed (AES-GCM): a client can neither read nor forge one, and a
cursor pages only the collection it was made for. The key is one per deployment (template.yaml's
CursorSigningSecret), given to every REST function that lists."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowgate import aws as aws_clients
from flowgate import db
from flowgate.errors import BadRequest
from tests.support.template import TEMPLATE, template_functions

KEY = {"PK": {"S": "WS#tenant-a"}, "SK": {"S": "FLOW#hello"}}
SCOPE = db.cursor_scope("WS#tenant-a", sk_prefix="FLOW#")


def _raw(cursor: str) -> bytes:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))


def test_a_cursor_round_trips_and_reveals_nothing() -> None:
    cursor = db.encode_cursor(KEY, SCOPE)
    assert cursor is not None
    assert db.decode_cursor(cursor, SCOPE) == KEY
    assert b"tenant-a" not in _raw(cursor)
    assert b"FLOW" not in _raw(cursor)
    # a fresh nonce each time: two cursors of one key differ, both valid
    again = db.encode_cursor(KEY, SCOPE)
    assert again != cursor
    assert db.decode_cursor(again, SCOPE) == KEY
    assert db.encode_cursor(None, SCOPE) is None
    assert db.decode_cursor(None, SCOPE) is None


@pytest.mark.parametrize(
    "forged",
    [
        base64.urlsafe_b64encode(json.dumps({"PK": "WS#tenant-b", "SK": "FLOW#x"}).encode()).decode(),
        "%%%",
        "",
        "A",
        "A" * 64,
        "A" * 2000,
    ],
)
def test_a_forged_cursor_is_a_400(forged: str) -> None:
    if not forged:
        assert db.decode_cursor(forged, SCOPE) is None  # no cursor: the first page
        return
    with pytest.raises(BadRequest) as raised:
        db.decode_cursor(forged, SCOPE)
    assert raised.value.code == "invalid_cursor"


def test_a_tampered_cursor_is_a_400() -> None:
    cursor = db.encode_cursor(KEY, SCOPE)
    assert cursor is not None
    sealed = bytearray(_raw(cursor))
    for position in (0, 12, len(sealed) // 2, len(sealed) - 1):  # nonce, ciphertext, tag
        changed = bytearray(sealed)
        changed[position] ^= 0x01
        text = base64.urlsafe_b64encode(bytes(changed)).decode().rstrip("=")
        with pytest.raises(BadRequest):
            db.decode_cursor(text, SCOPE)


@pytest.mark.parametrize(
    "other",
    [
        db.cursor_scope("WS#tenant-b", sk_prefix="FLOW#"),  # another tenant's same collection
        db.cursor_scope("WS#tenant-a", sk_prefix="EXEC#"),  # another collection of the same partition
        db.cursor_scope("WS#tenant-a", index="GSI1", sk_prefix="FLOW#"),  # another index
        db.cursor_scope("WS#tenant-a"),  # a range listing of the partition
    ],
)
def test_a_cursor_is_bound_to_the_collection_it_pages(other: str) -> None:
    cursor = db.encode_cursor(KEY, SCOPE)
    with pytest.raises(BadRequest) as raised:
        db.decode_cursor(cursor, other)
    assert raised.value.code == "invalid_cursor"


def test_a_sealed_key_that_is_not_a_table_key_is_refused() -> None:
    for not_a_key in ({"PK": {"N": "1"}}, {}):
        cursor = db.encode_cursor(not_a_key, SCOPE) if not_a_key else None
        if cursor is not None:
            with pytest.raises(BadRequest):
                db.decode_cursor(cursor, SCOPE)


def test_the_key_comes_from_the_deployment_secret_once(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []

    class Secrets:
        def __init__(self, value: str = "generated-by-the-template") -> None:
            self.value = value

        def get_secret_value(self, SecretId: str) -> dict[str, str]:
            reads.append(SecretId)
            return {"SecretString": self.value}

    monkeypatch.setattr(aws_clients, "secretsmanager", Secrets)
    monkeypatch.setenv(db.CURSOR_KEY_ENV, "arn:aws:secretsmanager:us-east-1:1:secret:cursor-test-once")
    db._cursor_cipher.cache_clear()
    try:
        cursors = [db.encode_cursor(KEY, SCOPE) for _ in range(5)]
        assert all(db.decode_cursor(c, SCOPE) == KEY for c in cursors)
        assert reads == ["arn:aws:secretsmanager:us-east-1:1:secret:cursor-test-once"]
        # another container of the same deployment (same secret) reads the cursors of this one
        db._cursor_cipher.cache_clear()
        assert db.decode_cursor(cursors[0], SCOPE) == KEY
        # a container of another deployment does not
        monkeypatch.setattr(aws_clients, "secretsmanager", lambda: Secrets("another deployment's key"))
        db._cursor_cipher.cache_clear()
        with pytest.raises(BadRequest):
            db.decode_cursor(cursors[0], SCOPE)
    finally:
        db._cursor_cipher.cache_clear()


class _Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags kept as {tag: value}."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, object]:
    if isinstance(node, yaml.ScalarNode):
        value: object = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {suffix: value}


_Loader.add_multi_constructor("!", _cfn_tag)


def _template(path: Path = TEMPLATE) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    return loaded


def test_every_rest_function_that_lists_gets_the_key_and_may_read_it() -> None:
    resources = _template()["Resources"]
    assert isinstance(resources, dict)
    secret = resources["CursorSigningSecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    assert "GenerateSecretString" in secret["Properties"]
    listing = {f.logical_id for f in template_functions() if any(r.method == "GET" for r in f.api_routes)}
    assert listing == {
        "IdentityFunction",
        "FlowsFunction",
        "ConnectorsFunction",
        "WorkflowFunction",
        "SyncFunction",
        "PropagationFunction",
    }
    for logical_id in listing:
        properties = resources[logical_id]["Properties"]
        assert properties["Environment"]["Variables"]["CURSOR_KEY_SECRET_ID"] == {
            "Ref": "CursorSigningSecret"
        }
        readable = [
            s
            for policy in properties["Policies"]
            if isinstance(policy, dict)
            for s in policy.get("Statement", [])
            if s.get("Action") == "secretsmanager:GetSecretValue"
            and {"Ref": "CursorSigningSecret"}
            in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
        ]
        assert readable, logical_id
