"""CloudFormation custom resources: the request shape and the response PUT to its pre-signed URL."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from flowgate.observability import logger


def is_custom_resource_event(event: Mapping[str, Any]) -> bool:
    return "RequestType" in event and "ResponseURL" in event and "LogicalResourceId" in event


def handle(event: Mapping[str, Any], action: Callable[[Mapping[str, Any]], None]) -> None:
    """Run `action` on Create/Update (Delete does nothing) and report SUCCESS or FAILED.

    CloudFormation waits up to an hour for this answer, so every outcome must be reported.
    """
    status, reason = "SUCCESS", "done"
    try:
        if event["RequestType"] in ("Create", "Update"):
            action(event.get("ResourceProperties", {}))
    except Exception as exc:  # any failure must reach CloudFormation, or the stack hangs
        logger.exception("custom resource failed", extra={"resource": event.get("LogicalResourceId")})
        status, reason = "FAILED", f"{type(exc).__name__}: {exc}"
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason[:512],
            "PhysicalResourceId": event.get("PhysicalResourceId") or event["LogicalResourceId"],
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "Data": {},
        }
    ).encode()
    url = str(event["ResponseURL"])
    if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ValueError("unexpected ResponseURL scheme")
    import urllib.request  # only the custom resource's answer needs it; REST requests never do

    request = urllib.request.Request(url, data=body, method="PUT", headers={"Content-Type": ""})  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (scheme checked above)
        answer.read()
