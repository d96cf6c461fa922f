"""What the workflow's use cases share: reading their inputs (pydantic's complaints become 400s) and
how often a conditional write is retried after a concurrent change."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from flowgate.clock import iso_ms
from flowgate.errors import BadRequest, PayloadTooLarge
from flowgate.workflow.models import MAX_MESSAGE_CHARS, Decision, Operation

M = TypeVar("M", bound=BaseModel)

# A change re-reads and retries this often when the task changed between its read and its write
# (a token arrived, another decision won) before answering 409.
CHANGE_ATTEMPTS = 4
MAX_LIST_LIMIT = 100
MAX_REASON_CHARS = 1_000


def validated(model: type[M], data: Any) -> M:
    """A request model from plain data, with pydantic's complaint turned into a 400."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()
        )
        raise BadRequest(detail or "invalid request", code="invalid_request") from None


def one_of(kind: Callable[[str], Any], value: Any, what: str, choices: Iterable[str]) -> Any:
    """`kind(value)`, or a 400 naming the choices."""
    try:
        return kind(value)
    except ValueError:
        raise BadRequest(f"{what} must be one of {', '.join(choices)}", code="invalid_request") from None


def operation_of(op: str) -> Operation:
    result: Operation = one_of(Operation, op, "the operation", [o.value for o in Operation])
    return result


def decision_of(decision: str) -> Decision:
    result: Decision = one_of(Decision, decision, "the decision", [d.value for d in Decision])
    return result


def list_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise BadRequest(f"limit is 1 to {MAX_LIST_LIMIT}", code="invalid_request")
    return limit


# The times a bound may name, in epoch milliseconds: 1970-01-01 to 9999-12-31 (what a sort key holds).
MIN_EPOCH_MS, MAX_EPOCH_MS = 0, 253_402_300_799_999


def moment(value: int | datetime | None, what: str = "the time") -> str | None:
    """A bound of a time range (epoch milliseconds or a datetime) as the sort keys hold it; a 400
    (`invalid_time`) for milliseconds outside 1970 to 9999."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return iso_ms(value)
    if not MIN_EPOCH_MS <= value <= MAX_EPOCH_MS:
        raise BadRequest(
            f"{what} must be epoch milliseconds from {MIN_EPOCH_MS} to {MAX_EPOCH_MS} (year 9999)",
            code="invalid_time",
        )
    return iso_ms(datetime.fromtimestamp(value / 1000, tz=UTC))


def decision_message(message: str | None) -> str | None:
    """A decision's optional text: blank is none; too long is refused before anything is written."""
    if message is None or not message.strip():
        return None
    if len(message) > MAX_MESSAGE_CHARS:
        raise PayloadTooLarge(
            f"the message has {len(message)} characters; at most {MAX_MESSAGE_CHARS} are kept"
        )
    return message


def short(text: str | None) -> str:
    """A reason as kept in a task's extradata: at most MAX_REASON_CHARS."""
    return (text or "")[:MAX_REASON_CHARS]
