"""CloudFormation custom resources backed by the template's functions.

After provisioning, CloudFormation sends each `Custom::*` resource a Create request and waits for the
handler to PUT its response to a presigned URL. Locally the URL is the gateway's own
`/__devstack/cfn-response/<request id>` (plain HTTP on loopback, also when the gateway serves HTTPS),
and a FAILED response fails the start with its Reason, as it would fail the stack.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from devstack.errors import StartupError
from devstack.lambdas import FunctionError, Invoke
from devstack.model import CustomResourceSpec
from devstack.naming import Physical, StackContext, default_name

log = logging.getLogger(__name__)

# After the handler returns, how long a response it sent from another thread may take to arrive.
RESPONSE_GRACE_SECONDS = 5.0


class CfnResponses:
    """Responses to outstanding custom resource requests, delivered by the gateway."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived: dict[str, threading.Event] = {}
        self._bodies: dict[str, dict[str, Any]] = {}

    def expect(self, request_id: str) -> None:
        """Accept a response for `request_id` from now on."""
        with self._lock:
            self._arrived[request_id] = threading.Event()

    def deliver(self, request_id: str, body: bytes) -> bool:
        """Record a response body; False if no such request is outstanding."""
        with self._lock:
            arrived = self._arrived.get(request_id)
            if arrived is None:
                return False
            try:
                document = json.loads(body)
            except ValueError:
                document = None
            self._bodies[request_id] = (
                document
                if isinstance(document, dict)
                else {"Status": "FAILED", "Reason": f"the response body is not a JSON object: {body[:200]!r}"}
            )
        arrived.set()
        return True

    def wait(self, request_id: str, timeout: float) -> dict[str, Any] | None:
        """The response for `request_id`, or None if none arrives within `timeout` seconds."""
        with self._lock:
            arrived = self._arrived[request_id]
        if not arrived.wait(timeout):
            return None
        with self._lock:
            del self._arrived[request_id]
            return self._bodies.pop(request_id)


def create_custom_resources(
    specs: Iterable[CustomResourceSpec],
    invoke: Invoke,
    responses: CfnResponses,
    *,
    response_url_base: str,
    context: StackContext,
) -> dict[str, Physical]:
    """Send each custom resource its Create request; return what Ref/GetAtt give for them."""
    created: dict[str, Physical] = {}
    for spec in specs:
        request_id = str(uuid.uuid4())
        event = {
            "RequestType": "Create",
            "ServiceToken": spec.properties["ServiceToken"],
            "ResponseURL": f"{response_url_base}{request_id}",
            "StackId": context.stack_id,
            "RequestId": request_id,
            "LogicalResourceId": spec.logical_id,
            "ResourceType": spec.resource_type,
            "ResourceProperties": _as_cloudformation_sends(spec.properties),
        }
        responses.expect(request_id)
        log.info("custom resource %s: sending Create to %s", spec.logical_id, spec.function_id)
        try:
            invoke(spec.function_id, event)
        except FunctionError as exc:  # the worker's log has the traceback
            raise StartupError(f"custom resource {spec.logical_id}: the handler failed: {exc}") from exc
        except Exception as exc:
            raise StartupError(
                f"custom resource {spec.logical_id}: {spec.function_id} raised {exc!r}"
            ) from exc
        response = responses.wait(request_id, RESPONSE_GRACE_SECONDS)
        if response is None:
            raise StartupError(
                f"custom resource {spec.logical_id}: {spec.function_id} returned without sending a response "
                "to the ResponseURL (CloudFormation would wait for an hour, then fail)"
            )
        if response.get("Status") != "SUCCESS":
            reason = response.get("Reason") or "no Reason given"
            raise StartupError(f"custom resource {spec.logical_id} failed: {reason}")
        data = response.get("Data") or {}
        physical_id = response.get("PhysicalResourceId") or default_name(context, spec.logical_id)
        created[spec.logical_id] = Physical(str(physical_id), {str(k): str(v) for k, v in data.items()})
        log.info("custom resource %s created (%s)", spec.logical_id, physical_id)
    return created


def _as_cloudformation_sends(value: Any) -> Any:
    """CloudFormation passes every scalar property of a custom resource as a string."""
    if isinstance(value, dict):
        return {key: _as_cloudformation_sends(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_cloudformation_sends(item) for item in value]
    if isinstance(value, bool):
        return str(value).lower()
    return value if value is None or isinstance(value, str) else str(value)
