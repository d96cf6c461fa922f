"""The REST connector type: one HTTP request to a user-chosen URL, through the outbound-URL guard.

A status other than 2xx is an answer, not a failure: the outputs carry it and the flow decides.
Only what prevents an answer (refused URL, DNS, connection, TLS, timeout) fails the connection.

`requests` is imported inside `run`, so saving and validating REST connectors does not load it.
"""

from __future__ import annotations

import base64
import codecs
import json
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flowgate.connectors.registry import ConnectorType
from flowgate.connectors.runtime import MAX_TIMEOUT_SECONDS, ConnectorError, RunContext, short_reason
from flowgate.errors import BadRequest

if TYPE_CHECKING:
    import requests

Method = Literal["get", "post", "put", "patch", "delete", "head", "options"]
DEFAULT_TIMEOUT_SECONDS = 30.0
# A connection is given at most this long to open, so a dead host fails well before the read timeout.
CONNECT_TIMEOUT_SECONDS = 10.0
READ_CHUNK = 16 * 1024
_SCALARS = (str, int, float, bool)
_HEADER_BREAK = re.compile(r"[\r\n\x00]")


def _scalar(value: Any) -> bool:
    return isinstance(value, _SCALARS)


class RestAuth(BaseModel):
    """HTTP authentication: Basic (`username`, `password`) or a bearer `token`, never both."""

    model_config = ConfigDict(extra="forbid")

    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    token: str | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _one_scheme(self) -> RestAuth:
        if self.token is not None and (self.username is not None or self.password is not None):
            raise ValueError("give either a token or a username and password, not both")
        if self.token is None and self.username is None:
            raise ValueError("give a token, or a username and a password")
        return self


class RestInputs(BaseModel):
    """Inputs of the REST connector (seed 003): the request to send."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048)
    method: Method = "get"
    # A string or bytes is sent as the body as it is; a mapping is sent form-encoded.
    data: Any = None
    # Sent as a JSON body (with Content-Type: application/json).
    json_: Any = Field(default=None, alias="json")
    params: dict[str, Any] | None = None
    headers: dict[str, Any] | None = Field(default=None, repr=False)  # may carry an API key
    auth: RestAuth | None = None
    timeout: float = Field(default=DEFAULT_TIMEOUT_SECONDS, gt=0, le=MAX_TIMEOUT_SECONDS)
    verify: bool = True

    @field_validator("method", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("data")
    @classmethod
    def _data(cls, value: Any) -> Any:
        if value is None or isinstance(value, str | bytes):
            return value
        if isinstance(value, Mapping) and all(
            isinstance(k, str) and (_scalar(v) or (isinstance(v, list) and all(_scalar(i) for i in v)))
            for k, v in value.items()
        ):
            return dict(value)
        raise ValueError("data must be a string, or a mapping of form fields to strings, numbers or lists")

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for key, item in (value or {}).items():
            if not (_scalar(item) or (isinstance(item, list) and all(_scalar(i) for i in item))):
                raise ValueError(f"the parameter {key!r} must be a string, a number or a list of them")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, Any] | None) -> dict[str, str] | None:
        if value is None:
            return None
        out: dict[str, str] = {}
        for name, item in value.items():
            if not name or _HEADER_BREAK.search(name) or ":" in name or " " in name:
                raise ValueError(f"{name!r} is not a valid header name")
            if not _scalar(item):
                raise ValueError(f"the header {name!r} must be a string or a number")
            text = str(item).lower() if isinstance(item, bool) else str(item)
            if _HEADER_BREAK.search(text):
                raise ValueError(f"the header {name!r} must not contain line breaks")
            out[name] = text
        return out

    @model_validator(mode="after")
    def _one_body(self) -> RestInputs:
        if self.data is not None and self.json_ is not None:
            raise ValueError("give either data or json as the body, not both")
        return self


def check(inputs: Mapping[str, Any], ctx: RunContext, prefix: str) -> None:
    """Refuse a URL the outbound guard refuses (syntax, scheme, credentials, literal addresses) before any
    call; host names are judged again, after resolution, when the request connects."""
    from flowgate.url_guard import UrlNotAllowed, check_url

    url = inputs.get("url")
    if isinstance(url, str) and url:
        try:
            check_url(url, ctx.outbound_policy, resolve=False)
        except UrlNotAllowed as exc:
            raise BadRequest(f"{prefix}.url: {exc.message}", code="url_not_allowed") from None


def derived_secrets(inputs: RestInputs, secret_values: frozenset[str]) -> set[str]:
    """The Basic credentials as they travel (base64), when they came from the vault: servers that echo
    the request (httpbin and friends) would otherwise put them in the outputs."""
    auth = inputs.auth
    if auth is None or auth.username is None:
        return set()
    if auth.username not in secret_values and (auth.password or "") not in secret_values:
        return set()
    encoded = base64.b64encode(f"{auth.username}:{auth.password or ''}".encode()).decode()
    return {encoded}


def _charset(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset":
            name = value.strip().strip("\"'")
            try:
                return codecs.lookup(name).name
            except LookupError:
                break
    return "utf-8"


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON that the platform can store: such a body stays text."""
    raise ValueError(name)


def _is_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


def _read_body(response: requests.Response, limit: int, deadline: float, host: str) -> tuple[bytes, bool]:
    """At most `limit` bytes of the (decompressed) body; whether more was there. The whole body must
    arrive before `deadline`, so a server that trickles bytes cannot hold the run for long."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=READ_CHUNK):
        if time.monotonic() > deadline:
            raise ConnectorError(f"{host} did not send the whole response in time")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


def _failure(exc: Exception, host: str, timeout: float) -> ConnectorError:
    import requests

    errors = requests.exceptions
    if isinstance(exc, errors.ConnectTimeout):
        return ConnectorError(f"connecting to {host} timed out")
    if isinstance(exc, errors.Timeout):
        return ConnectorError(f"{host} did not answer within {timeout:g} seconds")
    if isinstance(exc, errors.SSLError):
        return ConnectorError(f"the TLS connection to {host} failed: {short_reason(exc)}")
    if isinstance(exc, errors.TooManyRedirects):
        return ConnectorError(f"{host} redirected too many times")
    if isinstance(exc, errors.ConnectionError):
        return ConnectorError(f"could not connect to {host}: {short_reason(exc)}")
    if isinstance(exc, errors.InvalidHeader | errors.InvalidURL | errors.MissingSchema):
        return ConnectorError(f"the request is not valid ({type(exc).__name__})")
    return ConnectorError(f"the request to {host} failed ({type(exc).__name__})")


def run(inputs: RestInputs, ctx: RunContext) -> dict[str, Any]:
    """Send the request; outputs `status_code`, `headers`, `body` (JSON-decoded for JSON responses,
    text otherwise) and `truncated` (the body was longer than the platform keeps)."""
    import requests

    from flowgate.url_guard import UrlNotAllowed, check_url, guarded_session

    try:
        target = check_url(inputs.url, ctx.outbound_policy)
    except UrlNotAllowed as exc:
        raise ConnectorError(exc.message) from None
    timeout = ctx.timeout(inputs.timeout)
    deadline = time.monotonic() + timeout
    auth: tuple[str, str] | None = None
    headers = dict(inputs.headers or {})
    if inputs.auth is not None:
        if inputs.auth.token is not None:
            headers["Authorization"] = f"Bearer {inputs.auth.token}"
        else:
            auth = (inputs.auth.username or "", inputs.auth.password or "")
    verify: bool | str = (ctx.ca_bundle or True) if inputs.verify else False
    try:
        with guarded_session(ctx.outbound_policy) as session:
            response = session.request(
                inputs.method.upper(),
                inputs.url,
                params=inputs.params,
                data=inputs.data,
                json=inputs.json_,
                headers=headers,
                auth=auth,
                timeout=(min(CONNECT_TIMEOUT_SECONDS, timeout), timeout),
                verify=verify,
                stream=True,
            )
            try:
                raw, truncated = _read_body(response, ctx.max_body_bytes, deadline, target.host)
            finally:
                response.close()
    except UrlNotAllowed as exc:
        raise ConnectorError(exc.message) from None
    except requests.RequestException as exc:
        raise _failure(exc, target.host, timeout) from None
    content_type = response.headers.get("Content-Type", "")
    text = raw.decode(_charset(content_type), errors="replace")
    body: Any = text
    if _is_json(content_type) and not truncated and text.strip():
        try:
            body = json.loads(text, parse_constant=_no_constant)
        except ValueError:
            body = text
    return {
        "status_code": response.status_code,
        "headers": dict(response.headers),
        "body": body,
        "truncated": truncated,
    }


TYPE: ConnectorType[RestInputs] = ConnectorType(
    name="REST",
    schema=RestInputs,
    run=run,
    check=check,
    derived_secrets=derived_secrets,
    description="One HTTP request to a URL that the outbound guard allows.",
)
