"""The composition root: the one place that builds Flowgate's object graph from settings.

A `Container` has one lazy, cached property per service, so a cold start builds (and imports) only
what the function's route touches. Contexts never build or look up each other's services: what one
needs of another is a port of its own, and the container plugs in the other's service (directly, or
through an adapter of flowgate.bridges). Tests build a container with fakes in place of any property
(`Container(settings, holds=FakeHolds())`) and `install` it for the handlers.

Lambda reuses a container's process for many requests, one at a time: `container()` is built once per
process from the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from flowgate.config import Settings

if TYPE_CHECKING:
    from flowgate.activation.enforcer import Enforcer
    from flowgate.activation.models import ActivationSettings
    from flowgate.activation.service import ActivationService
    from flowgate.activation.store import ActivationStore
    from flowgate.bridges import ConnectorCalls
    from flowgate.clock import Clock
    from flowgate.connectors.runtime import RunContext
    from flowgate.connectors.service import ConnectorService
    from flowgate.db import Table
    from flowgate.flows.runner import Runner
    from flowgate.flows.service import FlowService
    from flowgate.flows.store import FlowStore
    from flowgate.identity.auth import Authenticator
    from flowgate.identity.service import IdentityService
    from flowgate.identity.store import IdentityStore
    from flowgate.propagation.artifacts import Artifacts, Audit, SiteAdmin
    from flowgate.propagation.propagate import Propagator
    from flowgate.propagation.store import PropagationStore
    from flowgate.sync.apply import Applier
    from flowgate.sync.configs import SyncConfigs
    from flowgate.sync.exchange import Receiver, Sender
    from flowgate.sync.exchange import Settings as ExchangeSettings
    from flowgate.sync.links import KeyRing
    from flowgate.sync.outbox import Outbox
    from flowgate.sync.remote_runs import RemoteRuns
    from flowgate.sync.store import SyncStore
    from flowgate.variables.service import VariableService
    from flowgate.workflow.announcements import Announcements
    from flowgate.workflow.bindings import OperationBindings
    from flowgate.workflow.decisions import Decisions
    from flowgate.workflow.jobs import TaskJobs
    from flowgate.workflow.notifier import Notifier
    from flowgate.workflow.operation_requests import OperationRequests
    from flowgate.workflow.pending_tasks import PendingTasks
    from flowgate.workflow.ports import Holds, Jobs
    from flowgate.workflow.resources import Resources
    from flowgate.workflow.settings import WorkflowSettings
    from flowgate.workflow.store.resources import ResourceStore
    from flowgate.workflow.store.settings import SettingsStore
    from flowgate.workflow.store.tasks import TaskStore
    from flowgate.workflow.tasks import Tasks


class Container:
    """Flowgate's services for one process, each built on first use."""

    def __init__(
        self, settings: Settings, environ: Mapping[str, str] | None = None, **replacements: Any
    ) -> None:
        self.settings = settings
        self.environ: Mapping[str, str] = environ if environ is not None else {}
        for name, value in replacements.items():
            if not isinstance(getattr(type(self), name, None), cached_property):
                raise TypeError(f"Container has no service named {name!r}")
            self.__dict__[name] = value  # a cached_property reads its instance slot first

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Container:
        environ = dict(os.environ if environ is None else environ)
        return cls(Settings.from_environ(environ), environ)

    # ---- platform ----
    @cached_property
    def table(self) -> Table:
        from flowgate.db import Table

        return Table(self.settings.table_name)

    # ---- identity ----
    @cached_property
    def identity_store(self) -> IdentityStore:
        from flowgate.identity.store import IdentityStore

        return IdentityStore(self.table)

    @cached_property
    def authenticator(self) -> Authenticator:
        """Logins, tokens, HTTP Basic; password attempts throttled per account and per source in the
        table (flowgate.identity.throttle, its default limits), so the limits hold across containers."""
        from flowgate.identity.auth import Authenticator
        from flowgate.identity.throttle import LoginThrottle

        return Authenticator(
            self.identity_store,
            self.settings.token_ttl_seconds,
            throttle=LoginThrottle(self.identity_store),
        )

    @cached_property
    def identity(self) -> IdentityService:
        from flowgate.identity.service import IdentityService

        return IdentityService(self.identity_store, self._kind_changed)

    # ---- flows ----
    @cached_property
    def flow_store(self) -> FlowStore:
        from flowgate.flows.store import FlowStore

        return FlowStore(self.table)

    @cached_property
    def flows(self) -> FlowService:
        from flowgate.flows.adapters import ExecutionQueue
        from flowgate.flows.service import FlowService, KindRetention

        s = self.settings
        retention = KindRetention(
            {"limited": s.execution_retention_days_limited, "full": s.execution_retention_days_full},
            self.identity.workspace_kind,
            self.flow_store,
            {"limited": s.max_stored_executions_limited},
        )
        return FlowService(
            self.flow_store,
            self.identity,
            ExecutionQueue(s.execution_queue_url),
            retention,
            self._is_active,
            links=self.remote_runs,
            variables=self.variables,
        )

    @cached_property
    def runner(self) -> Runner:
        from flowgate.flows.runner import Runner, RunnerConfig

        return Runner(
            self.flows,
            self.connector_calls,
            RunnerConfig.from_settings(self.settings),
            self._task_done,
        )

    # ---- connectors ----
    @cached_property
    def run_context(self) -> RunContext:
        """This container's limits for connector runs: the outbound allow-list, local git in local mode."""
        from flowgate.connectors.runtime import RunContext

        return RunContext.from_settings(self.settings)

    @cached_property
    def connectors(self) -> ConnectorService:
        from flowgate.connectors.service import ConnectorService
        from flowgate.connectors.store import ConnectorStore
        from flowgate.connectors.vault import Vault

        return ConnectorService(
            ConnectorStore(self.table), Vault(self.settings.stage), self.run_context, variables=self.variables
        )

    @cached_property
    def variables(self) -> VariableService:
        from flowgate.variables.service import VariableService
        from flowgate.variables.store import VariableStore

        return VariableService(VariableStore(self.table), self.identity)

    @cached_property
    def connector_calls(self) -> ConnectorCalls:
        from flowgate.bridges import ConnectorCalls

        return ConnectorCalls(self.connectors, self.run_context)

    # ---- workspace linking (sync) ----
    @cached_property
    def sync_store(self) -> SyncStore:
        from flowgate.sync.store import SyncStore

        return SyncStore(self.table)

    @cached_property
    def sync_outbox(self) -> Outbox:
        from flowgate.sync.adapters import SqsTrigger
        from flowgate.sync.outbox import Outbox

        return Outbox(self.sync_store, SqsTrigger(self.settings.sync_queue_url))

    @cached_property
    def remote_runs(self) -> RemoteRuns:
        from flowgate.sync.remote_runs import RemoteRuns

        return RemoteRuns(self.sync_store, self.sync_outbox)

    @cached_property
    def sync_keys(self) -> KeyRing:
        """The links' keys, loaded once per container and key version."""
        from flowgate.sync.adapters import SecretsManagerKeys
        from flowgate.sync.links import KeyRing

        return KeyRing(SecretsManagerKeys(self.settings.stage))

    @cached_property
    def sync_configs(self) -> SyncConfigs:
        from flowgate.clock import now
        from flowgate.sync.adapters import SecretsManagerKeys
        from flowgate.sync.configs import SyncConfigs
        from flowgate.url_guard import OutboundPolicy

        return SyncConfigs(
            self.sync_store,
            self.identity,
            self.identity,
            vault=SecretsManagerKeys(self.settings.stage),
            policy=OutboundPolicy.from_allow_list(self.settings.outbound_allow_list),
            clock=now,
        )

    @cached_property
    def exchange_settings(self) -> ExchangeSettings:
        from flowgate.sync.exchange import Settings as ExchangeSettings

        return ExchangeSettings(long_poll_seconds=self.settings.sync_long_poll_seconds)

    @cached_property
    def sync_applier(self) -> Applier:
        from flowgate.sync.apply import Applier

        return Applier(self.flows, self.sync_outbox)  # FlowService is sync.ports.Executions

    @cached_property
    def sync_receiver(self) -> Receiver:
        from flowgate.sync.exchange import Receiver
        from flowgate.sync.store import TableNonceStore

        return Receiver(
            self.sync_store,
            self.sync_keys,
            nonces=TableNonceStore(self.table),
            applier=self.sync_applier,
            settings=self.exchange_settings,
        )

    @cached_property
    def sync_sender(self) -> Sender:
        from flowgate.sync.adapters import GuardedTransport
        from flowgate.sync.exchange import Sender
        from flowgate.url_guard import OutboundPolicy

        return Sender(
            self.sync_store,
            self.sync_keys,
            applier=self.sync_applier,
            outbox=self.sync_outbox,
            executions=self.flows,
            transport=GuardedTransport(OutboundPolicy.from_allow_list(self.settings.outbound_allow_list)),
            settings=self.exchange_settings,
        )

    # ---- active flows ----
    @cached_property
    def activation_settings(self) -> ActivationSettings:
        from flowgate.activation.models import ActivationSettings

        return ActivationSettings.from_environ(self.environ)

    @cached_property
    def activation_store(self) -> ActivationStore:
        from flowgate.activation.store import ActivationStore

        return ActivationStore(self.table)

    @cached_property
    def activation(self) -> ActivationService:
        from flowgate.activation.adapters import SqsFifoMessageQueue
        from flowgate.activation.service import ActivationService
        from flowgate.bridges import FlowMessageRunner

        return ActivationService(
            self.activation_store,
            self.flows,
            self.identity,
            queue=SqsFifoMessageQueue(self.activation_settings.message_queue_url),
            runner=FlowMessageRunner(self.flows, lambda: self.runner),
            settings=self.activation_settings,
        )

    @cached_property
    def enforcer(self) -> Enforcer:
        from flowgate.activation.adapters import EventBridgePublisher
        from flowgate.activation.enforcer import Enforcer

        settings = self.activation_settings
        return Enforcer(self.activation_store, EventBridgePublisher(settings.event_bus_name), settings)

    # ---- approval workflow: one service per use case (flowgate/workflow/<use case>.py) ----
    @cached_property
    def workflow_clock(self) -> Clock:
        from flowgate.clock import now

        return now

    @cached_property
    def workflow_task_store(self) -> TaskStore:
        from flowgate.workflow.store.tasks import TaskStore

        return TaskStore(self.table)

    @cached_property
    def workflow_resource_store(self) -> ResourceStore:
        from flowgate.workflow.store.resources import ResourceStore

        return ResourceStore(self.table)

    @cached_property
    def workflow_settings_store(self) -> SettingsStore:
        from flowgate.workflow.store.settings import SettingsStore

        return SettingsStore(self.table)

    @cached_property
    def holds(self) -> Holds:
        from flowgate.workflow.adapters import StepFunctionsHolds

        return StepFunctionsHolds(self.settings.approval_state_machine_arn)

    @cached_property
    def jobs(self) -> Jobs:
        from flowgate.bridges import FlowJobs

        return FlowJobs(self.flows)

    @cached_property
    def workflow_settings(self) -> WorkflowSettings:
        from flowgate.secrets import StringSecret
        from flowgate.url_guard import OutboundPolicy
        from flowgate.workflow.settings import WorkflowSettings

        return WorkflowSettings(
            self.workflow_settings_store,
            self.identity,
            OutboundPolicy.from_allow_list(self.settings.outbound_allow_list),
            self.workflow_clock,
            StringSecret(f"flowgate/{self.settings.stage}/workflow/webhook-signing-secret"),
        )

    @cached_property
    def workflow_resources(self) -> Resources:
        from flowgate.workflow.resources import Resources

        return Resources(self.workflow_resource_store, self.identity, self.identity, self.workflow_clock)

    @cached_property
    def operation_bindings(self) -> OperationBindings:
        from flowgate.workflow.bindings import OperationBindings

        return OperationBindings(self.workflow_resource_store, self.identity, self.flows, self.workflow_clock)

    @cached_property
    def workflow_jobs(self) -> TaskJobs:
        from flowgate.workflow.jobs import TaskJobs

        return TaskJobs(self.workflow_task_store, lambda: self.jobs, self.workflow_clock)

    @cached_property
    def operation_requests(self) -> OperationRequests:
        from flowgate.workflow.operation_requests import OperationRequests

        return OperationRequests(
            self.workflow_task_store,
            self.workflow_resource_store,
            self.workflow_settings_store,
            self.identity,
            self.flows,
            holds=self.holds,
            jobs=self.workflow_jobs,
            clock=self.workflow_clock,
            default_timeout_seconds=self.settings.approval_timeout_seconds,
        )

    @cached_property
    def decisions(self) -> Decisions:
        from flowgate.workflow.decisions import Decisions

        return Decisions(self.workflow_task_store, self.holds, self.workflow_jobs, self.workflow_clock)

    @cached_property
    def announcements(self) -> Announcements:
        from flowgate.workflow.announcements import Announcements

        return Announcements(self.workflow_task_store, self.holds, self.workflow_clock)

    @cached_property
    def pending_tasks(self) -> PendingTasks:
        from flowgate.workflow.pending_tasks import PendingTasks

        return PendingTasks(self.workflow_task_store, self.identity)

    @cached_property
    def workflow_tasks(self) -> Tasks:
        from flowgate.workflow.tasks import Tasks

        return Tasks(self.workflow_task_store, self.identity)

    @cached_property
    def notifier(self) -> Notifier:
        from flowgate.secrets import read_json_secret
        from flowgate.url_guard import OutboundPolicy
        from flowgate.workflow.notifier import Notifier

        settings, secret_id = self.workflow_settings, self.settings.webhook_secret_id

        def signing_secret() -> str:
            chosen = settings.signing_secret()
            return chosen or "whsec_" + str(read_json_secret(secret_id)["key"])

        return Notifier(
            self.announcements,
            self.decisions,
            self.workflow_jobs,
            settings.notification_target,
            signing_secret,
            OutboundPolicy.from_allow_list(self.settings.outbound_allow_list),
        )

    # ---- artifact propagation (the EFT-style admin API) ----
    @cached_property
    def propagation_store(self) -> PropagationStore:
        from flowgate.propagation.store import PropagationStore

        return PropagationStore(self.table)

    @cached_property
    def site_admin(self) -> SiteAdmin:
        from flowgate.propagation.artifacts import SiteAdmin

        return SiteAdmin(self.identity)

    @cached_property
    def admin_audit(self) -> Audit:
        from flowgate.propagation.artifacts import Audit

        return Audit(self.propagation_store)

    @cached_property
    def artifacts(self) -> Artifacts:
        from flowgate.connectors.models import PutConnectorRequest
        from flowgate.flows.models import PutFlowRequest
        from flowgate.propagation.artifacts import (
            Artifacts,
            AweFolders,
            AweTasks,
            ConnectionProfiles,
            CustomCommands,
            UserGroups,
        )

        kinds = [
            CustomCommands(self.propagation_store, self.variables),
            AweTasks(self.flows, PutFlowRequest, self.propagation_store),
            ConnectionProfiles(self.connectors, PutConnectorRequest),
            UserGroups(self.propagation_store, self.identity),
            AweFolders(self.propagation_store),
        ]
        return Artifacts(
            self.site_admin, {k.path: k for k in kinds}, self.admin_audit, self.propagation_store
        )

    @cached_property
    def propagator(self) -> Propagator:
        from flowgate.propagation.client import TargetClient
        from flowgate.propagation.propagate import Propagator
        from flowgate.url_guard import OutboundPolicy

        policy = OutboundPolicy.from_allow_list(self.settings.outbound_allow_list)
        return Propagator(
            self.artifacts,
            self.propagation_store,
            self.admin_audit,
            lambda endpoint: TargetClient(endpoint, policy),
        )

    # ---- callbacks between contexts; each builds the other service only when first called ----
    def _kind_changed(self, wsid: str, kind: str) -> None:
        """limited -> full clears the pending stops of the workspace's active flows."""
        self.activation.kind_changed(wsid, kind)

    def _is_active(self, wsid: str, flow: str) -> bool:
        return self.activation.state_of(wsid, flow).status == "active"

    def _task_done(self, task_id: str, success: bool, message: str | None) -> None:
        self.workflow_jobs.finished(task_id, success, message)


_installed: Container | None = None


def container() -> Container:
    """This process's container, built from the environment on first use."""
    global _installed  # noqa: PLW0603 - the one per-process root; Lambda reuses it across invocations
    if _installed is None:
        _installed = Container.from_environ()
    return _installed


def install(replacement: Container | None) -> None:
    """Use `replacement` from now on (tests); None builds a new one from the environment on next use."""
    global _installed  # noqa: PLW0603
    _installed = replacement
