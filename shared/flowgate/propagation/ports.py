"""What the propagation context needs of others: the sites (identity), the flows and connectors it
shows as `aweTask` and `connectionProfile` (their services implement these), run-time variables, and
a way to reach another deployment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from flowgate.identity.ports import Member, Principal, Workspace


class Sites(Protocol):
    def authorize_workspace(self, principal: Principal, wsid: str, *, manage: bool = False) -> Workspace: ...

    def find_member(self, uid: str) -> Member | None: ...

    def list_workspaces(
        self, principal: Principal, cid: str, limit: int, cursor: str | None
    ) -> tuple[list[Workspace], str | None]: ...


class Variables(Protocol):
    def check(self, wsid: str, fields: Mapping[str, str]) -> None: ...


class Flows(Protocol):
    def flow_by_id(self, wsid: str, flow_id: str) -> Any | None: ...

    def put_flow_by_id(
        self, wsid: str, flow_id: str, name: str, request: Any, actor_id: str
    ) -> tuple[Any, bool]: ...

    def delete_flow_by_id(self, wsid: str, flow_id: str) -> None: ...

    def flows_page(self, wsid: str, limit: int, cursor: str | None) -> tuple[list[Any], str | None]: ...


class Connectors(Protocol):
    def connector_by_id(self, wsid: str, connector_id: str) -> Any | None: ...

    def put_connector_by_id(
        self, wsid: str, connector_id: str, name: str, request: Any, actor_id: str
    ) -> tuple[Any, bool]: ...

    def delete_connector_by_id(self, wsid: str, connector_id: str) -> None: ...

    def list_connectors(self, wsid: str, limit: int, cursor: str | None) -> tuple[list[Any], str | None]: ...


class Members(Protocol):
    def find_member(self, uid: str) -> Member | None: ...
