"""Flowgate (or EFT) as a propagation target: log in, find the site by name, read and PUT an artifact.

Every request goes through the outbound-URL guard (checked on the address actually connected to), and
no redirect is followed, so the administrator's password never reaches another host. Failures are
`RpcError`s with the codes of flowgate.propagation.jsonrpc; the password is never logged or echoed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from flowgate.propagation import jsonrpc
from flowgate.propagation.jsonrpc import RpcError
from flowgate.propagation.models import JSON_API
from flowgate.url_guard import OutboundPolicy, UrlNotAllowed, check_url

TIMEOUT = (5.0, 20.0)  # connect, read
MAX_ANSWER_BYTES = 1024 * 1024
_VARIABLE = re.compile(r"%([A-Za-z_][A-Za-z0-9_.]*)%")
_SECRET = re.compile(r"'([A-Za-z0-9._-]+)'")


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # parsed JSON, or None


class TargetClient:
    """One target deployment, for one propagation call (a login is one session)."""

    def __init__(self, endpoint: str, policy: OutboundPolicy) -> None:
        self.base = endpoint.rstrip("/")
        self.policy = policy
        self.token: str | None = None
        self._session: Any = None

    def check(self) -> None:
        """The endpoint's own checks: http(s), an allowed address, https unless it is allow-listed."""
        try:
            target = check_url(self.base, self.policy)
        except UrlNotAllowed as exc:
            raise RpcError(
                jsonrpc.TARGET_NOT_ALLOWED, "Target endpoint not allowed", {"reason": exc.message}
            ) from None
        parts = urlsplit(self.base)
        if parts.query or parts.fragment or parts.username or parts.password:
            raise RpcError(
                jsonrpc.INVALID_PARAMS,
                "Invalid params: targetEndpoint",
                {"fields": ["targetEndpoint"], "reason": "no credentials, query or fragment in the endpoint"},
            )
        if target.scheme != "https" and not self.policy.allow_listed(target.host):
            raise RpcError(
                jsonrpc.TARGET_NOT_ALLOWED,
                "Target endpoint not allowed",
                {"reason": "the password is only sent over https (http only to allow-listed hosts)"},
            )

    def _request(self, method: str, path: str, body: Any = None, *, content_type: str = JSON_API) -> Answer:
        import requests

        from flowgate.url_guard import guarded_session

        if self._session is None:
            self._session = guarded_session(self.policy)
        headers = {"Accept": f"{JSON_API}, application/json"}
        if self.token:
            headers["Authorization"] = f"EFTAdminAuthToken {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            # Straight to the guarded adapter: a redirect is answered, never followed, nor even prepared
            # (requests' Session.send works out the next request even with allow_redirects=False).
            prepared = self._session.prepare_request(
                requests.Request(method, self.base + path, data=data, headers=headers)
            )
            adapter = self._session.get_adapter(prepared.url or "")
            with adapter.send(prepared, stream=True, timeout=TIMEOUT) as answer:
                content = answer.raw.read(MAX_ANSWER_BYTES + 1, decode_content=True)
                status = answer.status_code
        except UrlNotAllowed as exc:
            raise RpcError(
                jsonrpc.TARGET_NOT_ALLOWED, "Target endpoint not allowed", {"reason": exc.message}
            ) from None
        except requests.RequestException as exc:
            reason = type(exc).__name__
            raise RpcError(
                jsonrpc.TARGET_UNREACHABLE, "Target unreachable", {"reason": f"{reason}: {str(exc)[:200]}"}
            ) from None
        if 300 <= status < 400:
            raise RpcError(
                jsonrpc.TARGET_UNREACHABLE,
                "Target unreachable",
                {
                    "reason": f"the target answered {status} (a redirect), which is not followed",
                    "status": status,
                },
            )
        if len(content) > MAX_ANSWER_BYTES:
            raise RpcError(
                jsonrpc.TARGET_UNREACHABLE,
                "Target unreachable",
                {"reason": "the target's answer is too large"},
            )
        try:
            parsed = json.loads(content) if content else None
        except ValueError:
            parsed = None
        return Answer(status, parsed)

    def login(self, username: str, password: str) -> None:
        answer = self._request(
            "POST",
            "/admin/v1/authentication",
            {"userName": username, "password": password, "authType": "EFT"},
            content_type="application/json",
        )
        token = answer.body.get("authToken") if isinstance(answer.body, dict) else None
        if answer.status != 200 or not isinstance(token, str):
            raise RpcError(
                jsonrpc.TARGET_LOGIN_FAILED,
                "Target login failed",
                {"status": answer.status, "error": _error_of(answer)},
            )
        self.token = token

    def site_id(self, name: str) -> str:
        answer = self._request("GET", "/admin/v2/sites")
        if answer.status in (401, 403):
            raise RpcError(
                jsonrpc.TARGET_LOGIN_FAILED,
                "Target login failed",
                {"status": answer.status, "error": _error_of(answer)},
            )
        sites = answer.body.get("data") if isinstance(answer.body, dict) else None
        if answer.status != 200 or not isinstance(sites, list):
            raise RpcError(
                jsonrpc.TARGET_REFUSED,
                "Target refused the request",
                {"status": answer.status, "error": _error_of(answer)},
            )
        for site in sites:
            if (
                isinstance(site, dict)
                and (site.get("attributes") or {}).get("name") == name
                and isinstance(site.get("id"), str)
            ):
                return str(site["id"])
        raise RpcError(jsonrpc.TARGET_SITE_NOT_FOUND, "Target site not found", {"site": name})

    def artifact_path(self, site: str, kind_path: str, artifact_id: str) -> str:
        return f"/admin/v2/sites/{quote(site, safe='')}/{kind_path}/{artifact_id}"

    def get(self, path: str) -> dict[str, Any] | None:
        answer = self._request("GET", path)
        if answer.status == 404:
            return None
        data = answer.body.get("data") if isinstance(answer.body, dict) else None
        if answer.status != 200 or not isinstance(data, dict):
            raise RpcError(
                jsonrpc.TARGET_REFUSED,
                "Target refused the request",
                {"status": answer.status, "error": _error_of(answer)},
            )
        return data

    def put(self, path: str, document: dict[str, Any]) -> bool:
        """PUT the artifact; True when the target created it."""
        answer = self._request("PUT", path, document)
        if answer.status in (200, 201):
            return answer.status == 201
        error = _error_of(answer)
        code = error.get("code") if isinstance(error, dict) else None
        message = str(error.get("message", "")) if isinstance(error, dict) else ""
        if code == "unknown_variable":
            raise RpcError(
                jsonrpc.UNKNOWN_VARIABLES,
                "Unknown run-time variables on the target",
                {"variables": sorted(set(_VARIABLE.findall(message))), "error": error},
            )
        if code in ("unknown_secret", "unknown_secrets", "secret_not_found"):
            raise RpcError(
                jsonrpc.UNKNOWN_SECRETS,
                "Unknown vault secrets on the target",
                {"secrets": sorted(set(_SECRET.findall(message))), "error": error},
            )
        raise RpcError(
            jsonrpc.TARGET_REFUSED, "Target refused the artifact", {"status": answer.status, "error": error}
        )


def _error_of(answer: Answer) -> Any:
    body = answer.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return {"code": str(error.get("code", ""))[:100], "message": str(error.get("message", ""))[:500]}
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return {"errors": body["errors"][:5]}
    return {"message": f"HTTP {answer.status}"}
