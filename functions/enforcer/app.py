"""Enforcer function: the EventBridge schedule's target.

Each run stops the active flows of limited workspaces whose runtime limit has passed (found through
an index keyed by due time, never by walking all flows) and warns the ones whose stop is near. A
duplicate or concurrent scheduled event stops nothing twice: each stop is one conditional write.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from flowgate.clock import now
from flowgate.observability import count, flushing_metrics, logger
from flowgate.wiring import container


@flushing_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = container().enforcer.run(now())
    count("FlowsStopped", len(report.stopped))
    count("MessagesDiscarded", sum(s.discarded for s in report.stopped))
    count("StopWarnings", len(report.warned))
    logger.info(
        "enforcer run",
        extra={"stopped": len(report.stopped), "warned": len(report.warned), "event_id": event.get("id")},
    )
    return {"stopped": len(report.stopped), "warned": len(report.warned)}
