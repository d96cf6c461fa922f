"""Settings read once per container from the function's environment (set by template.yaml); the
composition root (flowgate.wiring) builds them."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    stage: str = "dev"
    table_name: str = Field(min_length=1)
    token_ttl_seconds: int = Field(default=3600, ge=60, le=86400)
    outbound_allow_list: str = ""
    local: bool = False
    execution_queue_url: str = ""
    flow_time_limit_seconds: int = Field(default=60, ge=1, le=840)
    flow_memory_mb: int = Field(default=256, ge=64, le=4096)
    approval_timeout_seconds: int = Field(default=86400, ge=1)
    approval_state_machine_arn: str = ""
    webhook_secret_id: str = ""
    execution_retention_days_limited: int = Field(default=7, ge=1)
    execution_retention_days_full: int = Field(default=90, ge=1)
    max_stored_executions_limited: int = Field(default=1000, ge=1)
    sync_queue_url: str = ""
    sync_long_poll_seconds: float = Field(default=20.0, ge=0, le=25)
    sync_poll_seconds: float = Field(default=58.0, ge=0, le=800)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        return cls(
            stage=environ.get("STAGE", "dev"),
            table_name=environ.get("TABLE_NAME", ""),
            token_ttl_seconds=int(environ.get("TOKEN_TTL_SECONDS", "3600")),
            outbound_allow_list=environ.get("OUTBOUND_ALLOW_LIST", ""),
            local=environ.get("FLOWGATE_LOCAL") == "1",
            execution_queue_url=environ.get("EXECUTION_QUEUE_URL", ""),
            flow_time_limit_seconds=int(environ.get("FLOW_TIME_LIMIT_SECONDS", "60")),
            flow_memory_mb=int(environ.get("FLOW_MEMORY_MB", "256")),
            approval_timeout_seconds=int(environ.get("APPROVAL_TIMEOUT_SECONDS", "86400")),
            approval_state_machine_arn=environ.get("APPROVAL_STATE_MACHINE_ARN", ""),
            webhook_secret_id=environ.get("WEBHOOK_SECRET_ID", ""),
            execution_retention_days_limited=int(environ.get("EXECUTION_RETENTION_DAYS_LIMITED", "7")),
            execution_retention_days_full=int(environ.get("EXECUTION_RETENTION_DAYS_FULL", "90")),
            max_stored_executions_limited=int(environ.get("MAX_STORED_EXECUTIONS_LIMITED", "1000")),
            sync_queue_url=environ.get("SYNC_QUEUE_URL", ""),
            sync_long_poll_seconds=float(environ.get("SYNC_LONG_POLL_SECONDS", "20")),
            sync_poll_seconds=float(environ.get("SYNC_POLL_SECONDS", "58")),
        )
