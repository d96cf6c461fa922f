"""The one Logger and the one Metrics every module uses. No Tracer: the X-Ray SDK costs ~240 ms of cold
start, and `Tracing: Active` in the template already records each invocation's segment.

Metrics are CloudWatch embedded metric format (EMF) lines in the function's log, flushed at the end of
each invocation by `flushing_metrics` (the entry points wrap their handlers with it): counts of what an
operator watches, in the `Flowgate` namespace with the function as the `service` dimension.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

F = TypeVar("F", bound=Callable[..., Any])

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "flowgate"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "Flowgate", service=SERVICE)


def count(name: str, value: int = 1) -> None:
    """Add `value` to the counter `name` of this invocation (e.g. "ExecutionsFailed")."""
    if value:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def flushing_metrics(handler: F) -> F:
    """Write this invocation's metrics when the handler returns or raises (nothing when there are none)."""

    @functools.wraps(handler)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        finally:
            if metrics.metric_set:
                metrics.flush_metrics()

    return wrapped  # type: ignore[return-value]
