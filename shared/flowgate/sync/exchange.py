"""Use case: one exchange between linked workspaces, from either end.

The side that can reach the other (its config has a `remote_url`) opens the exchange: it POSTs a signed
envelope with the messages of its outbox and the ids of the peer's messages it has applied
(`Sender.exchange`). The peer (`Receiver.receive`) verifies the signature before anything else, applies
the messages, drops what was acknowledged, and answers with a signed envelope of its own outbox; with
nothing to send it holds the request up to `wait_seconds` (long polling), so work for a side that only
listens waits for its peer's next exchange no longer than it takes to appear. The caller verifies the
answer, bound to its request's nonce, before it applies anything.
"""

from __future__ import annotations

import functools
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NoReturn

from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import TypeAdapter, ValidationError

from flowgate.errors import BadRequest, FlowgateError, Unauthorized
from flowgate.observability import logger
from flowgate.sync.apply import Applier
from flowgate.sync.keys import fingerprint
from flowgate.sync.links import KeyRing, Link
from flowgate.sync.outbox import Outbox
from flowgate.sync.ports import Executions, SyncFailed, Transport
from flowgate.sync.protocol import MAX_ENVELOPE_BYTES, MAX_MESSAGES, Envelope, Message
from flowgate.sync.remote_runs import mirror_of
from flowgate.sync.signing import (
    INVALID_SIGNATURE,
    NonceStore,
    sign_request,
    sign_response,
    verify_request,
    verify_response,
)
from flowgate.sync.store import Queued, SyncStore

# One answer for an unknown or disabled config and for any signature that does not verify, so config
# names cannot be probed through this unauthenticated route (the reason is logged instead).
NOT_VERIFIED = "the request's signature does not verify for this sync config"
POLL_SECONDS = 0.25
MAX_RUNS = 5  # lease turns of one sender run (new messages may arrive as it lets go)
MAX_ROUNDS = 100  # exchanges in one lease turn, whatever the peer does
RETRY_MAX_SECONDS = 30  # a link that failed is tried again after 2, 4, 8, 16, then every 30 s


@dataclass(frozen=True)
class Settings:
    long_poll_seconds: float = 20.0  # the most a listener holds a request with nothing to answer
    batch_messages: int = 100


@dataclass
class Round:
    sent: int = 0
    received: int = 0
    acks: list[str] = field(default_factory=list)  # the peer's messages applied here, to acknowledge
    acknowledged: int = 0  # of ours, taken by the peer
    more: bool = False  # the outbox still holds messages this round could not take


def _now() -> datetime:
    return datetime.now(UTC)


_MESSAGE: TypeAdapter[Message] = TypeAdapter(Message)


def _batch(store: SyncStore, link: Link, limit: int) -> tuple[list[Queued], list[Message]]:
    """The oldest messages of the outbox that fit one envelope."""
    queued: list[Queued] = []
    messages: list[Message] = []
    size = 0
    for entry in store.outbox(link.id, limit):
        size += len(entry.body) + 1
        if messages and size > MAX_ENVELOPE_BYTES - 64 * 1024:
            break
        queued.append(entry)
        messages.append(_MESSAGE.validate_json(entry.body))
    return queued, messages


SIGNATURE_FIELDS = frozenset({"signature", "signature-input", "content-digest", "content-type"})


def request_headers(single: Mapping[str, str], multi: Mapping[str, list[str]] | None) -> dict[str, str]:
    """The request's headers, one value each; a signature field sent twice (two signatures, or one
    hidden behind another) is refused, as API Gateway would otherwise keep only the last."""
    for name, values in (multi or {}).items():
        if name.lower() in SIGNATURE_FIELDS and len(values) > 1:
            raise Unauthorized(NOT_VERIFIED, code=INVALID_SIGNATURE)
    return dict(single)


def _due(config: Mapping[str, object]) -> bool:
    """Whether the outbox goes out now: always, or with a sync_interval once its window has passed (the
    exchanges in between still bring the peer's messages back)."""
    if not config.get("sync_interval"):
        return True
    return time.time() >= float(str(config.get("next_send_at") or 0))


class _NoNonces:
    def remember(self, key_id: str, nonce: str, ttl_seconds: int) -> bool:
        return False


@functools.cache
def _decoy_keys() -> dict[str, rsa.RSAPublicKey]:
    """A public key whose private half was thrown away, made once per container."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return {fingerprint(key): key}


def _refuse_as_unknown(url: str, headers: Mapping[str, str], body: bytes) -> NoReturn:
    try:
        verify_request(_decoy_keys(), _NoNonces(), method="POST", url=url, headers=headers, body=body)
    except Unauthorized as exc:
        message = NOT_VERIFIED if exc.code == INVALID_SIGNATURE else exc.message
        raise Unauthorized(message, code=exc.code) from None
    raise Unauthorized(NOT_VERIFIED, code=INVALID_SIGNATURE)  # not reached: nobody holds the decoy


class Receiver:
    def __init__(
        self,
        store: SyncStore,
        keys: KeyRing,
        *,
        nonces: NonceStore,
        applier: Applier,
        settings: Settings,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.store = store
        self.keys = keys
        self.nonces = nonces
        self.applier = applier
        self.settings = settings
        self.clock = clock

    def receive(
        self, name: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[dict[str, str], bytes]:
        """The signed answer to a peer's exchange (headers and body), or a 4xx error."""
        config = self.store.get(name)
        if config is None or not config.get("enabled"):
            # Checked like a real config's request, against a key nobody holds: the same refusal (a stale
            # `created` included) whether the name exists or not, so names cannot be probed.
            logger.info("sync request for an unknown or disabled config", extra={"sync_config": name})
            _refuse_as_unknown(url, headers, body)
        link = self.keys.link(config)
        try:
            verified = verify_request(
                link.remote_keys(self.clock()),
                self.nonces,
                method="POST",
                url=url,
                headers=headers,
                body=body,
            )
        except Unauthorized as exc:
            logger.info(
                "sync request refused", extra={"sync_config": name, "code": exc.code, "reason": exc.message}
            )
            self._health(
                name,
                last_error=f"a request was refused: {exc.message}",
                last_error_at=self.clock().isoformat(),
            )
            raise Unauthorized(
                NOT_VERIFIED if exc.code == INVALID_SIGNATURE else exc.message, code=exc.code
            ) from None
        try:
            envelope = Envelope.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise BadRequest(
                f"the envelope is not version 1 of the sync format: {where}: {first['msg']}"
            ) from None
        applied = self.applier.apply(link, verified.key_id, envelope.messages)
        self._drop_acknowledged(link, envelope.acks)
        queued, messages = self._collect(link, min(envelope.wait_seconds, self.settings.long_poll_seconds))
        answer = Envelope(messages=messages, acks=applied).encode()
        headers_out = sign_response(link.keys.own, 200, answer, verified.nonce)
        self._health(
            name,
            last_success_at=self.clock().isoformat(),
            peer_key_fingerprint=verified.key_id,
            last_error=None,
            last_error_at=None,
        )
        logger.info(
            "sync exchange answered",
            extra={
                "sync_config": name,
                "received": len(applied),
                "sent": len(queued),
                "acked": len(envelope.acks),
            },
        )
        return headers_out, answer

    def _drop_acknowledged(self, link: Link, acks: list[str]) -> None:
        if not acks:
            return
        wanted = set(acks)
        sks = [q.sk for q in self.store.outbox(link.id, MAX_MESSAGES * 2) if q.message_id in wanted]
        self.store.drop(link.id, sks)

    def _collect(self, link: Link, wait: float) -> tuple[list[Queued], list[Message]]:
        deadline = time.monotonic() + wait
        while True:
            queued, messages = _batch(self.store, link, self.settings.batch_messages)
            if messages or time.monotonic() >= deadline:
                return queued, messages
            time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    def _health(self, name: str, **fields: object) -> None:
        _record_health(self.store, name, **fields)


class Sender:
    def __init__(
        self,
        store: SyncStore,
        keys: KeyRing,
        *,
        applier: Applier,
        outbox: Outbox,
        executions: Executions,
        transport: Transport,
        settings: Settings,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.store = store
        self.keys = keys
        self.applier = applier
        self.outbox = outbox
        self.executions = executions
        self.transport = transport
        self.settings = settings
        self.clock = clock

    def run(self, name: str, poll_seconds: float = 0.0) -> int:
        """Exchange with the peer of config `name` until nothing is left to send or to acknowledge, and
        go on long-polling for `poll_seconds`; the number of rounds. One sender per config at a time
        (a lease on the config): a trigger that finds one running leaves its messages to it, and the
        running one looks at the outbox once more after it lets go. A failed round is recorded on the
        link with its next try (doubling, at most RETRY_MAX_SECONDS later), which the sweep brings; the
        messages wait in the outbox meanwhile."""
        rounds = 0
        for _ in range(MAX_RUNS):
            if not self._take_lease(name, poll_seconds):
                break
            try:
                rounds += self._rounds(name, poll_seconds)
            except SyncFailed:
                return rounds + 1  # recorded on the link (health, retry_at); the sweep retries it
            finally:
                self.store.release(name, "sending_until")
            if not self.store.backlog_of(name):
                break
        return rounds

    def _take_lease(self, name: str, poll_seconds: float) -> bool:
        """The config's sender lease, for as long as this run may take; one that died lets go then."""
        now = time.time()
        until = now + poll_seconds + 2 * self.settings.long_poll_seconds + 30
        return self.store.claim(name, "sending_until", now, until)

    def _rounds(self, name: str, poll_seconds: float) -> int:
        deadline = time.monotonic() + poll_seconds
        acks: list[str] = []
        rounds, linger, lingered = 0, False, False
        while rounds < MAX_ROUNDS:
            config = self.store.get(name)
            if config is None or not config.get("enabled") or not config.get("remote_url"):
                return rounds
            if float(str(config.get("retry_at") or 0)) > time.time():
                return rounds  # backing off after a failure: the sweep comes back when it is due
            self._backfill(config)
            left = max(0.0, min(deadline - time.monotonic(), self.settings.long_poll_seconds))
            wait = self.settings.long_poll_seconds if linger else left
            result = self.exchange(self.keys.link(config), acks, wait=wait)
            rounds += 1
            acks, linger = result.acks, False
            if acks or result.received:
                continue  # acknowledge what came, and take what else waits
            if result.acknowledged and result.more:
                continue  # the peer takes our messages: send the rest
            if result.acknowledged and not lingered:
                linger = lingered = True  # one long poll for the answers to what was just sent
                continue
            if time.monotonic() >= deadline:
                return rounds
        return rounds

    def sweep(self) -> list[str]:
        """The dialing configs whose exchange should be kept going now: each at most once per long poll
        (a sweep that comes more often than a round takes would pile up triggers)."""
        now = time.time()
        gap = self.settings.long_poll_seconds + 1
        return [
            name for name in self.store.dialers() if self.store.claim(name, "swept_until", now, now + gap)
        ]

    def exchange(self, link: Link, acks: list[str], *, wait: float = 0.0) -> Round:
        config = link.config
        queued, messages = (
            _batch(self.store, link, self.settings.batch_messages) if _due(config) else ([], [])
        )
        envelope = Envelope(messages=messages, acks=acks, wait_seconds=0 if messages else wait)
        body = envelope.encode()
        url = str(config["remote_url"])
        nonce = secrets.token_urlsafe(24)
        headers = sign_request(link.keys.own, "POST", url, body, nonce=nonce)
        if not config.get("verify_ssl", True):
            logger.warning("sync exchange without TLS verification", extra={"sync_config": link.name})
        try:
            answer = self.transport.post(
                url,
                body,
                headers,
                ca_certificate=config.get("ca_certificate"),
                verify_ssl=bool(config.get("verify_ssl", True)),
                timeout=envelope.wait_seconds + 30,
            )
            if answer.status != 200:
                raise SyncFailed(f"the peer answered {answer.status}: {_error_of(answer.body)}")
            try:
                key_id = verify_response(
                    link.remote_keys(self.clock()), answer.status, answer.headers, answer.body, nonce
                )
            except Unauthorized as exc:
                raise SyncFailed(f"the peer's answer was not accepted: {exc.message}") from None
            try:
                reply = Envelope.model_validate_json(answer.body)
            except ValidationError:
                raise SyncFailed("the peer's answer is not version 1 of the sync format") from None
            sent_ids = {m.id for m in messages}
            try:
                applied = self.applier.apply(link, key_id, reply.messages)
            except FlowgateError as exc:
                raise SyncFailed(f"the peer's answer was refused: {exc.message}") from None
        except SyncFailed as exc:
            failures = int(config.get("failures") or 0) + 1
            self._health(
                link.name,
                last_error=exc.message,
                last_error_at=self.clock().isoformat(),
                failures=failures,
                retry_at=time.time() + min(RETRY_MAX_SECONDS, 2**failures),
            )
            logger.warning("sync exchange failed", extra={"sync_config": link.name, "reason": exc.message})
            raise
        acknowledged = [q.sk for q in queued if q.message_id in set(reply.acks) & sent_ids]
        self.store.drop(link.id, acknowledged)
        self._health(
            link.name,
            last_success_at=self.clock().isoformat(),
            peer_key_fingerprint=key_id,
            last_error=None,
            last_error_at=None,
            failures=None,
            retry_at=None,
        )
        return Round(
            sent=len(messages),
            received=len(applied),
            acks=applied,
            acknowledged=len(acknowledged),
            more=len(queued) >= self.settings.batch_messages,
        )

    def _backfill(self, config: Mapping[str, object]) -> None:
        """With send_all_executions, the past executions go out too, a page per round."""
        cursor = config.get("backfill")
        if not cursor or config.get("role") != "controlling":
            return
        items, nxt = self.executions.executions_page(
            str(config["workspace_id"]), None if cursor == "start" else str(cursor)
        )
        for item in items:
            if not item.get("origin"):
                self.outbox.add(config, mirror_of(item))
        self._health(str(config["name"]), backfill=nxt)

    def _health(self, name: str, **fields: object) -> None:
        _record_health(self.store, name, **fields)


def _record_health(store: SyncStore, name: str, **fields: object) -> None:
    try:
        store.record_health(name, **fields)
    except Exception:  # health is for people; it never fails an exchange
        logger.exception("could not record a link's health", extra={"sync_config": name})


def _error_of(body: bytes) -> str:
    try:
        error = json.loads(body)["error"]
        return f"{error['code']}: {error['message']}"[:500]
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")
