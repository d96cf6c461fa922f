"""One local stack: moto, the template's resources, the handlers' environment, gateway and event sources.

The order matters and follows CloudFormation's: resources exist before functions run, the gateway
listens before custom resources run (they answer through it), and API routes, schedules and queue
pollers start only once the custom resources succeeded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from devstack.apigw import RouteTable
from devstack.custom_resources import CfnResponses, create_custom_resources
from devstack.environment import function_environment, local_aws_environment
from devstack.errors import StartupError
from devstack.events import EventSources
from devstack.gateway import CFN_RESPONSE_PREFIX, Gateway
from devstack.lambdas import MAX_INSTANCES_PER_FUNCTION, FunctionRuntime
from devstack.model import FunctionSpec
from devstack.motoserver import MotoServer
from devstack.naming import Physical, StackContext
from devstack.provision import DEFAULT_TEMPLATE, AwsClients, provision
from devstack.template import Template, load_template
from devstack.tls import server_context

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
    max_instances: int = MAX_INSTANCES_PER_FUNCTION  # warm workers (processes) per function
    warm_up: bool = True  # start one worker of every function in the background once the stack is ready
    tls_cert: Path | None = None  # with tls_key: serve HTTPS (only) with this PEM certificate (chain)
    tls_key: Path | None = None  # its private key, PEM, unencrypted


class LocalStack:
    """A running local stack; use as a context manager, or call `start()` and `stop()`.

    The handlers run in worker processes with environments of their own (devstack.lambdas), so this
    process's os.environ and sys.path stay as they are, and several stacks could share it.
    """

    def __init__(self, config: StackConfig, template: Template | None = None) -> None:
        """`template` is the config's template when the caller loaded it already."""
        self.config = config
        # Loaded here so that a bad template or override fails before anything starts.
        self.template = template or load_template(
            config.template_path, config.parameter_overrides, config.context
        )
        self._tls = server_context(config.tls_cert, config.tls_key)  # a bad certificate fails here too
        self.moto = MotoServer()
        self.physical: dict[str, Physical] = {}
        self._clients: AwsClients | None = None
        self._gateway: Gateway | None = None
        self._events: EventSources | None = None
        self._runtime: FunctionRuntime | None = None

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
        """Stop event sources, the functions' workers, the gateway and moto (idempotent)."""
        if self._events is not None:
            self._events.stop()
            self._events = None
        if self._runtime is not None:
            self._runtime.stop()  # first: requests still in the gateway then end at once
            self._runtime = None
        if self._gateway is not None:
            self._gateway.stop()
            self._gateway = None
        self.moto.stop()

    def _start(self) -> None:
        context = self.config.context
        self.moto.start()
        self._clients = clients = AwsClients.for_endpoint(self.moto.endpoint_url, context.region)
        self.physical = provision(self.template, clients, secret_values=self.config.secret_values)
        template = self.template.with_physical(self.physical)
        functions = template.functions()
        self._report_ignored_events(functions)
        aws = local_aws_environment(self.moto.endpoint_url, context.region)
        self._runtime = runtime = FunctionRuntime(
            {spec.logical_id: spec for spec in functions},
            {spec.logical_id: function_environment(spec, aws) for spec in functions},
            self.config.max_instances,
        )
        responses = CfnResponses()
        try:
            self._gateway = gateway = Gateway(
                routes=RouteTable(route for spec in functions for route in spec.api_routes),
                invoke=runtime.invoke,
                cfn_responses=responses,
                account_id=context.account_id,
                port=self.config.port,
                tls=self._tls,
            )
        except OSError as exc:
            raise StartupError(f"cannot listen on 127.0.0.1:{self.config.port}: {exc}") from exc
        gateway.start()
        self.physical.update(
            create_custom_resources(
                template.custom_resources(),
                runtime.invoke,
                responses,
                response_url_base=gateway.loopback_url + CFN_RESPONSE_PREFIX,
                context=context,
            )
        )
        self._start_event_sources(functions, runtime, clients)
        gateway.set_ready()
        if self.config.warm_up:
            # Workers start lazily on the first invocation; these are ready before most first requests.
            runtime.warm_up_in_background()
        log.info("local stack ready on %s (moto on port %d)", gateway.url, self.moto.port)

    @staticmethod
    def _report_ignored_events(functions: list[FunctionSpec]) -> None:
        for spec in functions:
            if spec.ignored_events:
                log.warning(
                    "%s: events not emulated locally: %s", spec.logical_id, ", ".join(spec.ignored_events)
                )

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
