"""Infrastructure behind the sync ports: the keys in Secrets Manager, the sender's SQS trigger, and
HTTPS to the peer through the outbound-URL guard."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from flowgate import aws
from flowgate.messages import SyncDue
from flowgate.secrets import StringSecret
from flowgate.sync.ports import Answer, SyncFailed
from flowgate.url_guard import OutboundPolicy, UrlNotAllowed, guarded_session

if TYPE_CHECKING:
    import requests
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

MAX_ANSWER_BYTES = 4 * 1024 * 1024


class SecretsManagerKeys:
    """A config's keys as one JSON secret `flowgate/<stage>/sync/<config id>/<keys ref>` per set of keys
    (the IAM policies cover `flowgate/<stage>/sync/*`). Values go to the sync domain only; never logged."""

    def __init__(self, stage: str, client: SecretsManagerClient | None = None) -> None:
        self.stage = stage
        self.client = client

    def _secret(self, config_id: str, keys_ref: str) -> StringSecret:
        return StringSecret(f"flowgate/{self.stage}/sync/{config_id}/{keys_ref}", self.client)

    def put(self, config_id: str, keys_ref: str, keys: Mapping[str, str | None]) -> None:
        self._secret(config_id, keys_ref).put(json.dumps(dict(keys)))

    def get(self, config_id: str, keys_ref: str) -> dict[str, str | None]:
        raw = self._secret(config_id, keys_ref).get()
        value = json.loads(raw) if raw else None
        if not isinstance(value, dict):
            raise LookupError("the sync config's keys are missing; put the config again with its keys")
        return value

    def delete(self, config_id: str, keys_ref: str) -> None:
        self._secret(config_id, keys_ref).delete()


class SqsTrigger:
    def __init__(self, url: str, client: SQSClient | None = None) -> None:
        self.url = url
        self._injected = client

    def exchange(self, name: str, delay_seconds: int = 0) -> None:
        if not self.url:  # each function gets only the variables it uses (template.yaml)
            raise RuntimeError("SYNC_QUEUE_URL is not set in this function's environment")
        (self._injected or aws.sqs()).send_message(
            QueueUrl=self.url, MessageBody=SyncDue(sync_config=name).body(), DelaySeconds=delay_seconds
        )


class GuardedTransport:
    """POSTs to peers with the outbound-URL guard (checked on the address connected to), no redirects
    followed, TLS verified against the config's own CA certificate when it has one."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self._session: requests.Session | None = None
        self._ca_files: dict[str, str] = {}
        self._lock = threading.Lock()

    def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        ca_certificate: str | None,
        verify_ssl: bool,
        timeout: float,
    ) -> Answer:
        import requests

        if self._session is None:
            self._session = guarded_session(self.policy)
        verify: bool | str = self._ca_file(ca_certificate) if (ca_certificate and verify_ssl) else verify_ssl
        try:
            with self._session.post(
                url,
                data=body,
                headers=dict(headers),
                verify=verify,
                timeout=(10, timeout),
                allow_redirects=False,
                stream=True,
            ) as answer:
                content = answer.raw.read(MAX_ANSWER_BYTES + 1, decode_content=True)
                if len(content) > MAX_ANSWER_BYTES:
                    raise SyncFailed(f"the peer's answer is larger than {MAX_ANSWER_BYTES} bytes")
                return Answer(answer.status_code, dict(answer.headers), content)
        except UrlNotAllowed as exc:
            raise SyncFailed(f"remote_url is not allowed: {exc.message}") from None
        except requests.exceptions.SSLError as exc:
            raise SyncFailed(f"the peer's TLS certificate was not accepted: {_short(exc)}") from None
        except requests.RequestException as exc:
            raise SyncFailed(f"the peer could not be reached: {_short(exc)}") from None

    def _ca_file(self, pem: str) -> str:
        """requests takes a CA bundle as a file: one per certificate, written once per container."""
        digest = hashlib.sha256(pem.encode()).hexdigest()
        with self._lock:
            path = self._ca_files.get(digest)
            if path is None or not os.path.exists(path):
                handle, path = tempfile.mkstemp(prefix="flowgate-sync-ca-", suffix=".pem")
                with os.fdopen(handle, "w") as out:
                    out.write(pem)
                self._ca_files[digest] = path
        return path


def _short(exc: Exception) -> str:
    return str(exc)[:300]
