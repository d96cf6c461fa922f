"""The local stack over HTTPS: a test CA (tests/support/tls.py), the gateway's TLS front, the CLI's options.

One stack of the repository's template for the module, driven with real `requests`; the gateway alone,
with a fake function behind it, for what the handlers' events carry and for stopping cleanly.

`verify=` is passed on each request: a Session's own `verify` loses to REQUESTS_CA_BUNDLE when that is set.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

import devstack.tls
from devstack.apigw import MAX_PAYLOAD_BYTES, RouteTable
from devstack.custom_resources import CfnResponses
from devstack.errors import StartupError
from devstack.gateway import CFN_RESPONSE_PREFIX, Gateway
from devstack.launcher import StackProcess, start_stack
from devstack.model import ApiRoute
from devstack.tls import server_context
from tests.support.tls import CertificateAuthority, issue_server_certificate, make_ca

pytestmark = pytest.mark.xdist_group("devstack-tls")  # one stack for the module, on one worker

ADMIN = ("tls-admin", "tls-admin-password-1")
HEALTH = "/api/latest/health"


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    other_ca: CertificateAuthority  # trusted by nobody here
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory)
    cert, key = issue_server_certificate(ca, directory)
    return Pki(ca, make_ca(directory, "Other CA"), cert, key)


# ---- tests/support/tls.py ---------------------------------------------------------------------------


def test_the_server_certificate_is_signed_by_the_ca_for_ip_and_name(pki: Pki) -> None:
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(pki.cert.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert certificate.issuer == pki.ca.certificate.subject
    assert pki.ca.cert_path.read_text() == pki.ca.cert_pem
    assert pki.cert.parent == pki.ca.cert_path.parent
    assert oct(pki.key.stat().st_mode & 0o777) == "0o600"


# ---- bad certificates and keys: a StartupError at start -----------------------------------------------


def test_a_certificate_and_its_key_make_a_tls_1_2_context(pki: Pki) -> None:
    context = server_context(pki.cert, pki.key)
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server_context(None, None) is None


def test_bad_certificates_and_keys_are_startup_errors(pki: Pki, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    other_cert, other_key = issue_server_certificate(pki.other_ca, tmp_path, hosts=("localhost",))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a pem file\n")
    encrypted = tmp_path / "encrypted-key.pem"
    key = serialization.load_pem_private_key(pki.key.read_bytes(), password=None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    cases: list[tuple[Path | None, Path | None, str]] = [
        (pki.cert, None, "HTTPS needs both a certificate and its key"),
        (None, pki.key, "HTTPS needs both a certificate and its key"),
        (
            tmp_path / "missing.pem",
            pki.key,
            f"cannot read the TLS certificate {tmp_path / 'missing.pem'}: No such",
        ),
        (pki.cert, tmp_path, f"cannot read the TLS key {tmp_path}: Is a directory"),
        (pki.cert, other_key, f"the TLS key {other_key} does not match the certificate {pki.cert}"),
        (other_cert, pki.key, "does not match"),
        (garbage, pki.key, f"the TLS certificate {garbage} is not a PEM certificate"),
        (pki.key, pki.key, "is not a PEM certificate"),
        (pki.cert, garbage, f"the TLS key {garbage} is not a PEM private key"),
        (pki.cert, pki.cert, "is not a PEM private key"),
        (pki.cert, encrypted, f"the TLS key {encrypted} is encrypted; give it without a passphrase"),
    ]
    for cert, key_path, message in cases:
        with pytest.raises(StartupError, match=re.escape(message)):
            server_context(cert, key_path)


@pytest.mark.e2e
def test_the_cli_exits_1_with_the_message_on_a_key_that_does_not_match(pki: Pki, tmp_path: Path) -> None:
    _, other_key = issue_server_certificate(pki.other_ca, tmp_path)
    log_path = tmp_path / "stderr.log"
    with log_path.open("w") as log, pytest.raises(StartupError, match="exited with code 1 before listening"):
        start_stack(tls_cert=pki.cert, tls_key=other_key, stderr=log, timeout=60)
    logged = log_path.read_text()
    assert f"the TLS key {other_key} does not match the certificate {pki.cert}" in logged
    assert "Traceback" not in logged
    assert "moto server ready" not in logged  # refused before anything started


# ---- a stack over HTTPS, with real requests ---------------------------------------------------------


@pytest.fixture(scope="module")
def stack(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    log = tmp_path_factory.mktemp("tls-stack") / "stderr.log"
    with log.open("w") as stderr:
        process = start_stack(
            tls_cert=pki.cert,
            tls_key=pki.key,
            env={"FLOWGATE_ADMIN_USERNAME": ADMIN[0], "FLOWGATE_ADMIN_PASSWORD": ADMIN[1]},
            stderr=stderr,
        )
    yield process
    assert process.stop() == 0, log.read_text()[-3000:]


def _get(stack: StackProcess, ca: CertificateAuthority, path: str = HEALTH, **kw: Any) -> requests.Response:
    return requests.get(stack.url + path, verify=str(ca.cert_path), timeout=30, **kw)


@pytest.mark.e2e
def test_health_over_https_verified_against_the_test_ca(stack: StackProcess, pki: Pki) -> None:
    assert stack.url == f"https://127.0.0.1:{stack.port}"
    answer = _get(stack, pki.ca)
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
    # The certificate's DNS name verifies too
    assert requests.get(
        f"https://localhost:{stack.port}{HEALTH}", verify=str(pki.ca.cert_path), timeout=30
    ).ok


@pytest.mark.e2e
def test_a_client_that_does_not_trust_the_ca_fails_and_the_server_carries_on(
    stack: StackProcess, pki: Pki
) -> None:
    for _ in range(3):
        with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            _get(stack, pki.other_ca)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(stack.url + HEALTH, verify=True, timeout=30)  # the system's CAs
    assert _get(stack, pki.ca).status_code == 200


@pytest.mark.e2e
def test_plain_http_to_the_port_fails(stack: StackProcess, pki: Pki) -> None:
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{stack.port}{HEALTH}", timeout=30)
    assert _get(stack, pki.ca).status_code == 200


@pytest.mark.e2e
def test_concurrent_requests_each_get_their_own_answer(stack: StackProcess, pki: Pki) -> None:
    login = requests.post(
        stack.url + "/api/latest/auth/login",
        json={"username": ADMIN[0], "password": ADMIN[1]},
        verify=str(pki.ca.cert_path),
        timeout=30,
    )
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['token']}"}

    def create_token(index: int) -> tuple[int, str]:
        answer = requests.post(
            stack.url + "/api/latest/auth/tokens",
            json={"name": f"tls-{index}"},
            headers=headers,
            verify=str(pki.ca.cert_path),
            timeout=60,
        )
        return answer.status_code, answer.json()["name"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(create_token, range(16)))
    assert answers == [(201, f"tls-{index}") for index in range(16)]


@pytest.mark.e2e
def test_a_keep_alive_session_does_several_requests_on_one_connection(stack: StackProcess, pki: Pki) -> None:
    connections: set[tuple[str, int]] = set()
    with requests.Session() as session:
        for _ in range(5):
            answer = session.get(stack.url + HEALTH, verify=str(pki.ca.cert_path), timeout=30, stream=True)
            connections.add(answer.raw.connection.sock.getsockname())  # type: ignore[union-attr]
            assert answer.json() == {"status": "ok"}
    assert len(connections) == 1


@pytest.mark.e2e
def test_a_one_megabyte_body_is_answered(stack: StackProcess, pki: Pki) -> None:
    answer = requests.post(
        stack.url + "/api/latest/auth/login",
        data=b'{"username": "' + b"x" * 1024 * 1024 + b'"}',
        headers={"Content-Type": "application/json"},
        verify=str(pki.ca.cert_path),
        timeout=60,
    )
    assert answer.status_code == 413, answer.text  # the handler's limit, answered over TLS
    assert _get(stack, pki.ca).status_code == 200


# ---- the gateway alone over TLS, with a fake function ---------------------------------------------------


class EchoFunctions:
    """Answers each request with its path; records the events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, function_id: str, event: Any) -> Any:
        with self._lock:
            self.events.append(event)
        return {"statusCode": 200, "body": event["path"]}


ROUTES = [
    ApiRoute("ItemsFn", "Get", "GET", "/items/{id}", "dev", "api1234567"),
    ApiRoute("ItemsFn", "Post", "POST", "/items/{id}", "dev", "api1234567"),
]


@pytest.fixture
def functions() -> EchoFunctions:
    return EchoFunctions()


@pytest.fixture
def make_gateway(pki: Pki, functions: EchoFunctions) -> Iterator[Callable[..., Gateway]]:
    made: list[Gateway] = []

    def make(*, tls: bool = True, port: int = 0) -> Gateway:
        gateway = Gateway(
            routes=RouteTable(ROUTES),
            invoke=functions,
            cfn_responses=CfnResponses(),
            account_id="123456789012",
            port=port,
            tls=server_context(pki.cert, pki.key) if tls else None,
        )
        made.append(gateway)
        gateway.start()
        gateway.set_ready()
        return gateway

    yield make
    for gateway in made:
        gateway.stop()


@pytest.fixture
def gateway(make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway()


def _tls_socket(port: int, ca: CertificateAuthority) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    return context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="127.0.0.1"
    )


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLEOFError):
        return True


def _threads_started_since(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads that are new since `before` and still alive after up to 5 s (waitress's end a little late)."""
    deadline = time.monotonic() + 5
    while (left := [t for t in threading.enumerate() if t not in before]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_events_over_https_carry_api_gateways_forwarded_headers(
    gateway: Gateway, functions: EchoFunctions, pki: Pki
) -> None:
    answer = requests.get(
        f"{gateway.url}/items/1",
        headers={"X-Forwarded-Proto": "http", "x-forwarded-port": "1", "X-Forwarded-For": "10.1.2.3"},
        verify=str(pki.ca.cert_path),
        timeout=10,
    )
    assert answer.text == "/items/1"
    (event,) = functions.events
    headers = event["headers"]
    assert headers["Host"] == f"127.0.0.1:{gateway.port}"  # as sent
    assert (headers["X-Forwarded-Proto"], headers["X-Forwarded-Port"]) == ("https", str(gateway.port))
    assert "x-forwarded-port" not in headers  # the client's values do not reach the handler
    assert event["multiValueHeaders"]["X-Forwarded-Proto"] == ["https"]
    assert headers["X-Forwarded-For"] == "10.1.2.3"  # as over HTTP: passed as sent
    assert event["requestContext"]["domainName"] == f"127.0.0.1:{gateway.port}"
    requests.get(f"https://localhost:{gateway.port}/items/2", verify=str(pki.ca.cert_path), timeout=10)
    assert functions.events[1]["headers"]["Host"] == f"localhost:{gateway.port}"


def test_events_over_plain_http_get_no_forwarded_headers(
    make_gateway: Callable[..., Gateway], functions: EchoFunctions
) -> None:
    gateway = make_gateway(tls=False)
    assert gateway.url.startswith("http://")
    assert gateway.loopback_url == gateway.url
    requests.get(f"{gateway.url}/items/1", timeout=10)
    assert "X-Forwarded-Proto" not in functions.events[0]["headers"]


def test_concurrent_keep_alive_clients_get_their_own_answers(gateway: Gateway, pki: Pki) -> None:
    def client(index: int) -> list[str]:
        with requests.Session() as session:
            return [
                session.get(f"{gateway.url}/items/{index}-{n}", verify=str(pki.ca.cert_path), timeout=30).text
                for n in range(10)
            ]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(client, range(16)))
    assert answers == [[f"/items/{index}-{n}" for n in range(10)] for index in range(16)]


def test_a_10_mb_body_passes_over_tls_and_more_is_refused(
    gateway: Gateway, functions: EchoFunctions, pki: Pki
) -> None:
    with requests.Session() as session:
        answer = session.post(
            f"{gateway.url}/items/1", data=b"x" * MAX_PAYLOAD_BYTES, verify=str(pki.ca.cert_path), timeout=60
        )
        assert answer.status_code == 200
        assert len(functions.events[0]["body"]) == MAX_PAYLOAD_BYTES
        too_long = session.post(
            f"{gateway.url}/items/1",
            data=b"x" * (MAX_PAYLOAD_BYTES + 1),
            verify=str(pki.ca.cert_path),
            timeout=60,
        )
    assert (too_long.status_code, too_long.json()) == (413, {"message": "Request Too Long"})


def test_custom_resources_answer_over_plain_http_on_loopback(gateway: Gateway) -> None:
    assert gateway.loopback_url.startswith("http://127.0.0.1:")
    assert gateway.loopback_url != gateway.url.replace("https", "http")
    answer = requests.put(f"{gateway.loopback_url}{CFN_RESPONSE_PREFIX}unknown", data="{}", timeout=10)
    assert answer.status_code == 404  # waitress itself, no request outstanding


def test_a_stalled_or_garbled_handshake_harms_nobody(
    make_gateway: Callable[..., Gateway], pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devstack.tls, "HANDSHAKE_TIMEOUT_SECONDS", 0.5)
    gateway = make_gateway()
    stalled = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    garbled = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    garbled.sendall(b"\x16\x03\x01\x00\x05hello" * 10)
    assert _closed_by_server(garbled)
    garbled.close()
    # Others are served while the stalled client holds its connection
    assert requests.get(f"{gateway.url}/items/1", verify=str(pki.ca.cert_path), timeout=10).ok
    started = time.monotonic()
    assert _closed_by_server(stalled)  # dropped after the handshake timeout
    assert time.monotonic() - started < 5
    stalled.close()
    assert requests.get(f"{gateway.url}/items/1", verify=str(pki.ca.cert_path), timeout=10).ok


def test_stop_closes_tls_connections_and_ends_every_thread(
    pki: Pki, make_gateway: Callable[..., Gateway]
) -> None:
    before = set(threading.enumerate())
    gateway = make_gateway()
    port = gateway.port
    idle = _tls_socket(port, pki.ca)
    idle.sendall(f"GET /items/1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    answer = b""
    while not answer.endswith(b"/items/1"):  # the whole answer, maybe in two TLS records
        answer += idle.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200")  # a keep-alive connection, left open
    handshaking = socket.create_connection(("127.0.0.1", port), timeout=10)  # never says hello
    started = time.monotonic()
    gateway.stop()
    assert time.monotonic() - started < 5
    assert _closed_by_server(handshaking)
    assert _closed_by_server(idle)
    for sock in (idle, handshaking):
        sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert _threads_started_since(before) == []
    gateway.stop()  # idempotent


def test_a_busy_port_is_an_os_error_and_leaves_no_thread(pki: Pki, functions: EchoFunctions) -> None:
    before = set(threading.enumerate())
    with (
        socket.create_server(("127.0.0.1", 0)) as busy,
        pytest.raises(OSError, match="Address already in use"),
    ):
        Gateway(
            routes=RouteTable(ROUTES),
            invoke=functions,
            cfn_responses=CfnResponses(),
            account_id="1",
            port=busy.getsockname()[1],
            tls=server_context(pki.cert, pki.key),
        )
    assert _threads_started_since(before) == []
