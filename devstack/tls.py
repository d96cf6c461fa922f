"""HTTPS for the local gateway: the server's TLS context, and a front that terminates TLS before waitress.

waitress has no TLS, and its sockets are not easily wrapped: its asyncore channels judge `recv` and
`send` errors by errno, where TLS's want-read and want-write errors (numbers 2 and 3) are not
EWOULDBLOCK, and a non-blocking handshake and close_notify would have to be grafted onto its channel's
internals. So `TlsFront` listens on the gateway's port instead, with one thread running an asyncio
event loop for all its connections: asyncio's TLS (memory BIOs, so no TLS object is ever used by two
threads) does the handshakes, then each connection is forwarded byte for byte, with flow control, to
waitress on a loopback port of its own. waitress still does all of HTTP (keep-alive,
request limits, timeouts), as it does without TLS; the front adds the handshake's timeout, and its
own limit of connections (its backlog holds the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import weakref
from pathlib import Path

from devstack.errors import StartupError

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_SECONDS = 10.0  # a client that does not finish its handshake by then is dropped
# After waitress closed a connection, the client's end drops what the client still sends until it sent
# nothing for LINGER_IDLE_SECONDS, at most for LINGER_MAX_SECONDS (see `_Side`). Generous: on a loaded
# machine (CI: two test workers and their stacks on two cores) this thread may not run for a second, and
# closing while the client still sends resets the connection and loses the answer.
LINGER_IDLE_SECONDS = 5.0
LINGER_MAX_SECONDS = 60.0
_STOP_WAIT_SECONDS = 2.0  # how long `stop()` waits for aborted connections to end (they end at once)
_ACCEPT_RETRY_SECONDS = 0.1  # after a failed accept (out of file descriptors, say)


def server_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The gateway's TLS context (TLS 1.2 and up) from a PEM certificate (chain) and its unencrypted
    private key; None without either. StartupError, naming the file and the fault, when they cannot serve.
    """
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise StartupError("HTTPS needs both a certificate and its key (--tls-cert and --tls-key)")
    for kind, path in (("certificate", cert), ("key", key)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise StartupError(f"cannot read the TLS {kind} {path}: {exc.strerror or exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])  # what waitress speaks
    try:
        context.load_cert_chain(cert, key, password=_refuse_passphrase)
    except _EncryptedKey:
        raise StartupError(
            f"the TLS key {key} is encrypted; give it without a passphrase "
            f"(openssl pkey -in {key} -out plain-key.pem)"
        ) from None
    except (ssl.SSLError, ValueError) as exc:
        raise StartupError(_load_failure(cert, key, exc)) from None
    return context


class _EncryptedKey(Exception):
    pass


def _refuse_passphrase() -> str:
    # Without a callback, OpenSSL would prompt on the terminal for the key's passphrase.
    raise _EncryptedKey


def _load_failure(cert: Path, key: Path, exc: Exception) -> str:
    """Why OpenSSL refused the pair, in words (its own are `[SSL] PEM lib` for either file, and a key of
    another type than the certificate's is `NO_CERTIFICATE_ASSIGNED`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

    try:
        certificate = x509.load_pem_x509_certificates(cert.read_bytes())[0]
    except ValueError:
        return f"the TLS certificate {cert} is not a PEM certificate"
    try:
        private_key = load_pem_private_key(key.read_bytes(), password=None)
    except (ValueError, TypeError):
        return f"the TLS key {key} is not a PEM private key"
    der = Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(*der) != private_key.public_key().public_bytes(*der):
        return f"the TLS key {key} does not match the certificate {cert}"
    return f"cannot use the TLS certificate {cert} with the key {key}: {exc}"


class TlsFront:
    """Accepts TLS on 127.0.0.1:`port` and forwards each connection to 127.0.0.1:`backend_port`.

    The socket listens from construction on (an OSError if it cannot); `start()` serves in a thread of
    its own, `stop()` closes the socket and every connection and ends the thread (idempotent).
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        backend_port: int,
        port: int = 0,
        backlog: int = 1024,
        connection_limit: int = 1000,
    ) -> None:
        self._context = context
        self._backend_port = backend_port
        self._connection_limit = connection_limit
        self._socket = socket.create_server(("127.0.0.1", port), backlog=backlog)
        self._socket.setblocking(False)
        self.port: int = self._socket.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._stop_requested = asyncio.Event()
        self._lock = threading.Lock()  # `stop()` signals the loop only while it is open
        self._thread = threading.Thread(target=self._run, name="devstack-tls", daemon=True)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, abort every connection, end the thread."""
        with self._lock:
            if self._loop.is_closed():
                return
            if self._thread.ident is None:  # never started
                self._loop.close()
                self._socket.close()
                return
            self._loop.call_soon_threadsafe(self._stop_requested.set)
        self._thread.join()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
        except Exception:
            log.exception("the TLS front failed; it no longer accepts connections")
        finally:
            with self._lock:
                self._loop.close()
                self._socket.close()

    async def _serve(self) -> None:
        accepted: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        connections: set[asyncio.Task[None]] = set()
        accepting = asyncio.create_task(self._accept(accepted, connections))
        accepting.add_done_callback(_accept_ended)
        await self._stop_requested.wait()
        accepting.cancel()
        for task in connections:
            task.cancel()
        await asyncio.wait({accepting, *connections}, timeout=_STOP_WAIT_SECONDS)
        # Aborted transports close their sockets in callbacks of the next loop iterations.
        for _ in range(100):
            if all(sock.fileno() == -1 for sock in accepted):
                break
            await asyncio.sleep(0)
        for sock in accepted:
            sock.close()

    async def _accept(
        self, accepted: weakref.WeakSet[socket.socket], connections: set[asyncio.Task[None]]
    ) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self._connection_limit)
        while True:
            await slots.acquire()
            try:
                conn, _ = await loop.sock_accept(self._socket)
            except OSError as exc:
                slots.release()
                log.warning("the TLS front could not accept a connection: %s", exc)
                await asyncio.sleep(_ACCEPT_RETRY_SECONDS)
                continue
            except BaseException:
                slots.release()
                raise
            accepted.add(conn)
            # asyncio sets it only on sockets made with proto=IPPROTO_TCP; without it, a response that
            # waitress sends in two writes would wait for the client's delayed ACK (40 ms) in between.
            with contextlib.suppress(OSError):  # a client gone already fails in the handshake
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = asyncio.create_task(self._forward(conn))
            connections.add(task)
            task.add_done_callback(connections.discard)
            task.add_done_callback(lambda done: _ended(done, slots))

    async def _forward(self, conn: socket.socket) -> None:
        """One connection: the handshake, then bytes both ways until either side closes."""
        loop = asyncio.get_running_loop()
        client, backend = _Side(loop, lingers=True), _Side(loop)
        try:
            try:
                await loop.connect_accepted_socket(
                    lambda: client, conn, ssl=self._context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_SECONDS
                )
            except OSError as exc:  # ssl.SSLError, a reset, the handshake's timeout
                log.info("TLS handshake failed: %s", exc or type(exc).__name__)
                conn.close()
                return
            backend.peer = client
            try:
                await loop.create_connection(lambda: backend, "127.0.0.1", self._backend_port)
            except OSError as exc:
                log.error("the TLS front cannot reach the gateway on port %d: %s", self._backend_port, exc)
                return
            client.pair(backend)
            await asyncio.wait({client.lost, backend.lost})
        finally:
            for side in (client, backend):
                side.abort()
            pending = {side.lost for side in (client, backend) if side.transport and not side.lost.done()}
            if pending:
                await asyncio.wait(pending, timeout=_STOP_WAIT_SECONDS)


def _accept_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("the TLS front stopped accepting connections", exc_info=exc)


def _ended(task: asyncio.Task[None], slots: asyncio.Semaphore) -> None:
    slots.release()
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("the TLS front failed on a connection", exc_info=exc)


class _Side(asyncio.Protocol):
    """One end of a forwarded connection: what it receives goes to its peer; when it ends, the peer ends.

    Flow control: when this end's outgoing buffer is full, the peer stops reading until it drained.

    The client's end lingers when waitress closed first: waitress answers a request it refuses (a body
    over 10 MB, say) from the headers and closes while the client still sends its body. Closing the
    client's connection then would reset it, and the client would see a TLS error instead of the answer;
    so what it still sends is read and dropped until it closes, or sends nothing for
    LINGER_IDLE_SECONDS, or LINGER_MAX_SECONDS passed (as HTTP servers' lingering close does).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, lingers: bool = False) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._lingers = lingers
        self._draining_since: float | None = None  # when the peer ended, while lingering
        self._last_data = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.peer is None:
            transport.pause_reading()  # until `pair()`: nowhere to send it yet

    def pair(self, peer: _Side) -> None:
        self.peer = peer
        if self.transport is not None and not self.lost.done():
            self.transport.resume_reading()
        else:
            peer.end()

    def data_received(self, data: bytes) -> None:
        if self._draining_since is not None:
            self._last_data = self._loop.time()  # dropped: nobody is left to read it
        elif (
            self.peer is not None and self.peer.transport is not None and not self.peer.transport.is_closing()
        ):
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        return False  # the transport closes (after flushing), and `connection_lost` ends the peer

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self.lost.done():
            self.lost.set_result(None)
        if self.peer is not None:
            self.peer.end()

    def end(self) -> None:
        """The peer ended: close after what is buffered was sent (lingering first, on the client's end)."""
        if self.transport is None or self.transport.is_closing() or self._draining_since is not None:
            return
        if not self._lingers:
            self.transport.close()
            return
        self._draining_since = self._last_data = self._loop.time()
        self.transport.resume_reading()  # if the peer's full buffer had paused it
        self._timer = self._loop.call_later(LINGER_IDLE_SECONDS, self._linger)

    def _linger(self) -> None:
        assert self.transport is not None
        assert self._draining_since is not None
        now = self._loop.time()
        idle_until = self._last_data + LINGER_IDLE_SECONDS
        end_by = self._draining_since + LINGER_MAX_SECONDS
        if now >= min(idle_until, end_by):
            self.transport.close()
        else:
            self._timer = self._loop.call_later(min(idle_until, end_by) - now, self._linger)

    def abort(self) -> None:
        """Close at once."""
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None and not self.lost.done():
            self.transport.abort()
