"""What users may store: JSON documents DynamoDB can hold, and display names that are text.

Every user-supplied JSON document that is stored (execution inputs, flow messages, connector values,
vault secrets) goes through `check_document` at the edge, inside the request model's validation, so a
value DynamoDB cannot hold is a 400 naming its path, never a 5xx after something was half written:

- numbers: DynamoDB keeps at most 38 significant digits, magnitudes from 1e-130 to 9.99...e+125, and
  no NaN or infinity (Python's json reads `1e400` as inf and accepts `NaN` and `Infinity`);
- map keys must not be empty;
- strings must be text: no lone UTF-16 surrogate (`"\\ud800"` parses, but cannot be encoded);
- nesting at most MAX_DEPTH levels (DynamoDB holds 32 in an item, the document sits inside one).

The walk is iterative, so no document is deep enough to exhaust the stack.

`DisplayName` is the one type of every display name (workspace, contract, token, VM, appliance, ...):
text, with no control, invisible formatting, bidi-override or line-break characters.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints
from pydantic_core import PydanticCustomError

from flowgate.errors import BadRequest

MAX_DEPTH = 20
MAX_DIGITS = 38
MIN_ADJUSTED_EXPONENT, MAX_ADJUSTED_EXPONENT = -130, 125
_INT_LIMIT = 10**MAX_DIGITS

# Error codes (the HTTP edge answers them as the 400's `code`).
TOO_DEEP = "too_deep"
UNSTORABLE_NUMBER = "unstorable_number"
EMPTY_KEY = "empty_key"
INVALID_TEXT = "invalid_text"
INVALID_NAME = "invalid_name"
DOCUMENT_CODES = frozenset({TOO_DEEP, UNSTORABLE_NUMBER, EMPTY_KEY, INVALID_TEXT})

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class DocumentError(ValueError):
    """What a document holds that cannot be stored: `path` (relative to the document, `a.b[2]`, empty
    for the document itself), `problem` (a sentence) and `code`."""

    def __init__(self, path: str, problem: str, code: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem
        self.code = code

    def under(self, field: str) -> str:
        """The message with the path below `field` (`inputs.a.b[2]: ...`)."""
        return f"{join_path(field, self.path)}: {self.problem}"


def join_path(field: str, path: str) -> str:
    if not path:
        return field
    if not field:
        return path
    return field + path if path.startswith("[") else f"{field}.{path}"


def _child(path: str, key: str) -> str:
    """`path.key`, or `path['odd key']` for a key that is not a plain identifier (cut at 40 characters)."""
    if _PLAIN_KEY.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{(key[:40] + ('...' if len(key) > 40 else ''))!r}]"


def _is_text(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _number_problem(value: int | float) -> str | None:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "NaN and infinite numbers cannot be stored"
        if value == 0:
            return None
        adjusted = Decimal(repr(value)).adjusted()
        if not MIN_ADJUSTED_EXPONENT <= adjusted <= MAX_ADJUSTED_EXPONENT:
            return f"the number {value!r} is out of range (magnitudes from 1e-130 to 9.99e+125 are stored)"
        return None
    if -_INT_LIMIT < value < _INT_LIMIT:
        return None
    return f"the integer has more than {MAX_DIGITS} digits; send it as a string"


def _scalar_error(value: Any, path: str) -> DocumentError | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        if _is_text(value):
            return None
        return DocumentError(path, "the string holds a lone UTF-16 surrogate: not text", INVALID_TEXT)
    if isinstance(value, int | float):
        problem = _number_problem(value)
        return None if problem is None else DocumentError(path, problem, UNSTORABLE_NUMBER)
    return DocumentError(path, f"a {type(value).__name__} is not JSON data", INVALID_TEXT)


def _key_error(key: Any, path: str) -> DocumentError | None:
    if not isinstance(key, str):
        return DocumentError(path, f"keys must be strings, not {type(key).__name__}", INVALID_TEXT)
    if not key:
        return DocumentError(path, 'holds an empty key (""); map keys must not be empty', EMPTY_KEY)
    if not _is_text(key):
        return DocumentError(path, "a key holds a lone UTF-16 surrogate, which is not text", INVALID_TEXT)
    return None


def document_error(document: Any, *, max_depth: int = MAX_DEPTH) -> DocumentError | None:
    """The first thing in `document` (in document order) that DynamoDB cannot hold, or None.

    Iterative: a stack of (value, path, depth), so no document can exhaust the interpreter's stack."""
    stack: list[tuple[Any, str, int]] = [(document, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if not isinstance(value, Mapping | list | tuple):
            error = _scalar_error(value, path)
            if error is not None:
                return error
            continue
        if depth >= max_depth:
            return DocumentError(path, f"nested more than {max_depth} levels deep", TOO_DEEP)
        children: list[tuple[Any, str, int]] = []
        if isinstance(value, Mapping):
            for key, item in value.items():
                error = _key_error(key, path)
                if error is not None:
                    return error
                children.append((item, _child(path, key), depth + 1))
        else:
            children = [(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
        stack.extend(reversed(children))
    return None


def check_document(document: Any, field: str, *, max_depth: int = MAX_DEPTH) -> None:
    """BadRequest (the problem's code, the message naming `field` and the path) unless storable."""
    error = document_error(document, max_depth=max_depth)
    if error is not None:
        raise BadRequest(error.under(field), code=error.code)


def storable(document: Any) -> Any:
    """A pydantic AfterValidator: the document unchanged, or a validation error of the problem's code
    whose context holds the path (the HTTP edge joins it to the field's location)."""
    error = document_error(document)
    if error is not None:
        raise PydanticCustomError(
            error.code,
            "{path}: {problem}" if error.path else "{problem}",
            {"path": error.path, "problem": error.problem},
        )
    return document


StorableDocument = Annotated[dict[str, Any], AfterValidator(storable)]


# ---- display names ----------------------------------------------------------------------------------

# What a name must not hold beyond Unicode's control (Cc), format (Cf: bidi overrides and isolates,
# zero-width characters, the BOM, ...) and surrogate (Cs) categories: line and paragraph separators.
_LINE_BREAKS = frozenset("\u2028\u2029\x85")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_PRINTABLE_ASCII = re.compile(r"^[ -~]*$")


def forbidden_character(text: str) -> str | None:
    """The first control, formatting or line-break character of `text`, or None."""
    if _PRINTABLE_ASCII.match(text):
        return None
    for char in text:
        if char in _LINE_BREAKS or unicodedata.category(char) in _REFUSED_CATEGORIES:
            return char
    return None


def _text_name(value: str) -> str:
    char = forbidden_character(value)
    if char is not None:
        raise PydanticCustomError(
            INVALID_NAME,
            "a name must be text without control, formatting or line-break characters (found U+{code})",
            {"code": f"{ord(char):04X}"},
        )
    return value


DisplayName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128), AfterValidator(_text_name)
]
