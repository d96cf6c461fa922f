"""One local stack: moto, the template's resources, the handlers' environment, gateway and event sources.

The order matters and follows CloudFormation's: resources exist before functions run, the gateway
listens before custom resources run (they answer through it), and API routes, schedules and queue
pollers start only once the custom resources succeeded.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from devstack.apigw import RouteTable
from devstack.custom_resources import CfnResponses, create_custom_resources
from devstack.environment import apply_environment, function_environment, local_aws_environment
from devstack.errors import StartupError
from devstack.events import EventSources
from devstack.gateway import CFN_RESPONSE_PREFIX, Gateway
from devstack.lambdas import MAX_INSTANCES_PER_FUNCTION, FunctionRuntime, add_layer_paths
from devstack.model import FunctionSpec
from devstack.motoserver import MotoServer
from devstack.naming import Physical, StackContext
from devstack.provision import DEFAULT_TEMPLATE, AwsClients, provision
from devstack.template import Template, load_template

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackConfig:
    """How to run a local stack (the CLI fills it from arguments and the environment)."""

    template_path: Path = DEFAULT_TEMPLATE
    port: int = 3000  # 0 picks a free port
    parameter_overrides: str = ""
    context: StackContext = field(default_factory=StackContext)
    schedule_seconds: float | None = None  # fire every schedule at least this often
    secret_values: Mapping[str, str] = field(default_factory=dict)  # secret logical id -> SecretString
    max_instances: int = MAX_INSTANCES_PER_FUNCTION


class LocalStack:
    """A running local stack; use as a context manager, or call `start()` and `stop()`.

    It changes process-wide state (os.environ, sys.path) for the handlers it runs in-process, so
    run one per process; `stop()` puts that state back.
    """

    def __init__(self, config: StackConfig, template: Template | None = None) -> None:
        """`template` is the config's template when the caller loaded it already."""
        self.config = config
        # Loaded here so that a bad template or override fails before anything starts.
        self.template = template or load_template(
            config.template_path, config.parameter_overrides, config.context
        )
        self.moto = MotoServer()
        self.physical: dict[str, Physical] = {}
        self._clients: AwsClients | None = None
        self._gateway: Gateway | None = None
        self._events: EventSources | None = None
        self._saved_environ: dict[str, str] | None = None
        self._added_paths: list[Path] = []

    @property
    def url(self) -> str:
        """Base URL of the gateway."""
        if self._gateway is None:
            raise RuntimeError("the stack is not started")
        return self._gateway.url

    @property
    def port(self) -> int:
        """The gateway's port."""
        if self._gateway is None:
            raise RuntimeError("the stack is not started")
        return self._gateway.port

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start everything; on any failure, stop what was started and re-raise."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def secret_string(self, logical_id: str) -> str:
        """The current SecretString of one of the template's secrets."""
        if self._clients is None or logical_id not in self.physical:
            raise KeyError(logical_id)
        secret = self._clients.secretsmanager.get_secret_value(SecretId=self.physical[logical_id].ref)
        return secret["SecretString"]

    def stop(self) -> None:
        """Stop event sources, the gateway and moto; restore os.environ and sys.path (idempotent)."""
        if self._events is not None:
            self._events.stop()
            self._events = None
        if self._gateway is not None:
            self._gateway.stop()
            self._gateway = None
        self.moto.stop()
        if self._saved_environ is not None:
            os.environ.clear()
            os.environ.update(self._saved_environ)
            self._saved_environ = None
        for path in self._added_paths:
            if str(path) in sys.path:
                sys.path.remove(str(path))
        self._added_paths = []

    def _start(self) -> None:
        context = self.config.context
        self.moto.start()
        self._clients = clients = AwsClients.for_endpoint(self.moto.endpoint_url, context.region)
        self.physical = provision(self.template, clients, secret_values=self.config.secret_values)
        template = self.template.with_physical(self.physical)
        functions = template.functions()
        self._prepare_process(functions)

        runtime = FunctionRuntime({spec.logical_id: spec for spec in functions}, self.config.max_instances)
        runtime.warm_up()
        responses = CfnResponses()
        try:
            self._gateway = gateway = Gateway(
                routes=RouteTable(route for spec in functions for route in spec.api_routes),
                invoke=runtime.invoke,
                cfn_responses=responses,
                account_id=context.account_id,
                port=self.config.port,
            )
        except OSError as exc:
            raise StartupError(f"cannot listen on 127.0.0.1:{self.config.port}: {exc}") from exc
        gateway.start()
        self.physical.update(
            create_custom_resources(
                template.custom_resources(),
                runtime.invoke,
                responses,
                response_url_base=gateway.url + CFN_RESPONSE_PREFIX,
                context=context,
            )
        )
        self._start_event_sources(functions, runtime, clients)
        gateway.set_ready()
        log.info("local stack ready on %s (moto on port %d)", gateway.url, self.moto.port)

    def _prepare_process(self, functions: list[FunctionSpec]) -> None:
        """The handlers' environment and import path, as Lambda would give each function."""
        for spec in functions:
            if spec.ignored_events:
                log.warning(
                    "%s: events not emulated locally: %s", spec.logical_id, ", ".join(spec.ignored_events)
                )
        self._saved_environ = dict(os.environ)
        aws = local_aws_environment(self.moto.endpoint_url, self.config.context.region)
        apply_environment({**function_environment(functions), **aws})
        self._added_paths = add_layer_paths(functions)

    def _start_event_sources(
        self, functions: list[FunctionSpec], runtime: FunctionRuntime, clients: AwsClients
    ) -> None:
        self._events = events = EventSources(runtime.invoke, self.config.context)
        events.start_schedules(
            (s for spec in functions for s in spec.schedules), self.config.schedule_seconds
        )
        for spec in functions:
            for source in spec.sqs_sources:
                if source.enabled:
                    queue = self.physical[source.queue_id]
                    events.start_sqs_poller(source, clients.sqs, queue.ref, queue.attributes["Arn"])
