"""What a connector run may do (`RunContext`) and how it fails (`ConnectorError`).

Kept import-light (stdlib and the URL guard's policy only): the runner builds a context per container and
hands it to every run, so a type never reads settings or the environment itself, and tests give it a
policy that allows loopback.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flowgate.errors import FlowgateError
from flowgate.url_guard import OutboundPolicy

if TYPE_CHECKING:
    from flowgate.config import Settings

# Upper bound of any one connector call, whatever its inputs say: Lambda runs at most 15 minutes and
# the runner must still record the outcome.
MAX_TIMEOUT_SECONDS = 300.0
# A response body kept in the outputs is capped so that an execution item stays well below DynamoDB's
# 400 KB item limit; longer bodies are cut and marked `truncated`.
DEFAULT_MAX_BODY_BYTES = 256 * 1024


class ConnectorError(FlowgateError):
    """A connector run failed (network error, refused URL, unknown ref, ...).

    The message is meant for the execution's record: it names what failed, never carries a stack trace,
    and `ConnectorService.execute` scrubs secret values from it before it leaves the domain.
    """

    status, code = 502, "connector_failed"


@dataclass(frozen=True)
class RunContext:
    """The platform's limits for connector runs, the same for every connector of a deployment.

    * `outbound_policy`: what user-chosen URLs may reach beyond the public internet (loopback in local
      mode); REST and GIT over https go through `flowgate.url_guard` with it.
    * `allow_local_git`: whether GIT may read repositories from the local file system (local mode and
      tests only; in AWS a path would read the Lambda's own disk).
    * `max_timeout_seconds`: caps the `timeout` input; the runner lowers it to the time it has left.
    * `max_body_bytes`: how much of a response body is kept in the outputs.
    * `ca_bundle`: a CA file to trust instead of the system store (local mode with a private CA, tests).
    """

    outbound_policy: OutboundPolicy = dataclasses.field(default_factory=OutboundPolicy)
    allow_local_git: bool = False
    max_timeout_seconds: float = MAX_TIMEOUT_SECONDS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ca_bundle: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RunContext:
        """The context of this container: the allow-list of `OUTBOUND_ALLOW_LIST`, local git in local mode."""
        return cls(
            outbound_policy=OutboundPolicy.from_allow_list(settings.outbound_allow_list),
            allow_local_git=settings.local,
        )

    def timeout(self, requested: float) -> float:
        """The timeout a run uses: what the inputs ask for, never more than the platform allows."""
        return max(0.001, min(requested, self.max_timeout_seconds))

    def with_time_left(self, seconds: float) -> RunContext:
        """A copy whose calls end before `seconds` from now (the runner passes the Lambda's time left)."""
        return dataclasses.replace(
            self, max_timeout_seconds=max(0.001, min(self.max_timeout_seconds, seconds))
        )


def short_reason(exc: BaseException) -> str:
    """A short, stable reason from a network error (requests, urllib3, dulwich), without the URL (which
    may carry query parameters) or the nested repr of a connection pool: "Connection refused",
    "certificate verify failed: ...", or else the error's class name."""
    import re

    text = str(exc)
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if found:
        return found.group(1).strip()
    found = re.search(r"(certificate verify failed[^'\")\](]*)", text)
    if found:
        return found.group(1).strip()
    if "timed out" in text.lower():
        return "timed out"
    return type(exc).__name__
