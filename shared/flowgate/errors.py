"""Domain errors. The HTTP layer maps each to `{"error": {"code", "message"}}` with its status."""

from __future__ import annotations


class FlowgateError(Exception):
    """Base of every error a client may see; `message` must never hold a secret."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(FlowgateError):
    status, code = 400, "bad_request"


class Unauthorized(FlowgateError):
    status, code = 401, "unauthorized"


class Forbidden(FlowgateError):
    status, code = 403, "forbidden"


class NotFound(FlowgateError):
    status, code = 404, "not_found"


class Conflict(FlowgateError):
    status, code = 409, "conflict"


class Gone(FlowgateError):
    status, code = 410, "gone"


class PreconditionFailed(FlowgateError):
    status, code = 412, "precondition_failed"


class PayloadTooLarge(FlowgateError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(FlowgateError):
    status, code = 415, "unsupported_media_type"


class TooManyRequests(FlowgateError):
    """429; `retry_after` (whole seconds) becomes the `Retry-After` header."""

    status, code = 429, "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, int(retry_after))
