"""The workflow context: VMs and appliances, operation requests held for review by an outside workflow
tool, continue/cancel, pending tasks (seed 002, DESIGN §3.3).

`store()` and `service()` are the composition root: built once per container from settings. The ports
(the Step Functions hold, the jobs' flow run) come from `flowgate.workflow.adapters`, imported when the
service is first built so that importing this package stays cheap.
"""

from __future__ import annotations

import functools

from flowgate.config import get_settings
from flowgate.db import Table
from flowgate.workflow.service import WorkflowService  # eager: a lazy import would rebind `service`
from flowgate.workflow.store import WorkflowStore


@functools.cache
def store() -> WorkflowStore:
    return WorkflowStore(Table(get_settings().table_name))


@functools.cache
def service() -> WorkflowService:
    from flowgate import flows, identity
    from flowgate.url_guard import OutboundPolicy
    from flowgate.workflow.adapters import FlowJobs, StepFunctionsHolds

    settings = get_settings()
    return WorkflowService(
        store(),
        identity.service(),
        identity.store(),
        flows.store(),
        holds=StepFunctionsHolds(settings.approval_state_machine_arn),
        jobs=FlowJobs(flows.service()),
        outbound_policy=OutboundPolicy.from_allow_list(settings.outbound_allow_list),
        default_timeout_seconds=settings.approval_timeout_seconds,
    )
