"""Active flows of a workspace (seed 001, DESIGN §3.4): activation, message queues, and the enforcer
that stops a limited workspace's flows after the runtime limit.

`store()`, `service()` and `enforcer()` are the composition root, built once per container. The
submodules are imported here, eagerly: a lazy `from flowgate.activation.service import ...` inside the
function `service()` would rebind the package attribute `service` to the submodule.
"""

from __future__ import annotations

import functools
import os

from flowgate.activation.enforcer import Enforcer
from flowgate.activation.models import ActivationSettings
from flowgate.activation.service import ActivationService
from flowgate.activation.store import ActivationStore
from flowgate.config import get_settings
from flowgate.db import Table


@functools.cache
def settings() -> ActivationSettings:
    return ActivationSettings.from_environ(os.environ)


@functools.cache
def store() -> ActivationStore:
    return ActivationStore(Table(get_settings().table_name))


@functools.cache
def service() -> ActivationService:
    from flowgate import flows, identity
    from flowgate.activation.adapters import FlowMessageRunner, SqsFifoMessageQueue

    return ActivationService(
        store(),
        flows.store(),
        identity.service(),
        queue=SqsFifoMessageQueue(settings().message_queue_url),
        runner=FlowMessageRunner(),
        settings=settings(),
    )


@functools.cache
def enforcer() -> Enforcer:
    from flowgate.activation.adapters import EventBridgePublisher

    return Enforcer(store(), EventBridgePublisher(settings().event_bus_name), settings())
